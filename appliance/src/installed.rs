//! Plugin bundles an operator installed, kept in `DATA_DIR/bundles/`:
//!
//! ```text
//! bundles/versions.json              highest version ever installed per plugin (rollback guard)
//! bundles/<name>/current.vbundle     what runs
//! bundles/<name>/previous.vbundle    what ran before (`vigil plugins rollback`, automatic fallback)
//! bundles/<name>/config.vbundle      a model update: new config for the current wasm
//! ```
//!
//! Every file is verified against the trust store when it is installed and again at every start;
//! an install is all or nothing (each file written atomically, the version record last).

use std::path::{Path, PathBuf};

use crate::bundle::{
    format::read_limited, text::unix_now, verify, verify_signed, BundleError, BundleManifest,
    InstalledVersions, StoreError, TrustStore, VerifiedBundle, VerifyLimits, Version,
};
use crate::host::PluginHost;
use crate::store::files::write_atomic;

const CURRENT: &str = "current.vbundle";
const PREVIOUS: &str = "previous.vbundle";
const CONFIG: &str = "config.vbundle";

/// Why an install or rollback did not happen. Nothing on the appliance changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Refused(#[from] BundleError),
    #[error("refused: {0}")]
    NotApplied(String),
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an install put in place.
#[derive(Debug, Clone)]
pub struct Installation {
    pub bundle: VerifiedBundle,
    /// The config the plugin now runs with, for a model update (its wasm is the one running).
    pub config: Option<String>,
}

impl Installation {
    /// One line for the operator: what, which version, signed by whom.
    pub fn describe(&self) -> String {
        let manifest = &self.bundle.manifest;
        let what = if self.config.is_some() {
            "model update"
        } else {
            "plugin"
        };
        format!(
            "installed {what} {} {} (signed by {}, delegation v{})",
            manifest.name,
            manifest.version,
            self.bundle.signer.name,
            self.bundle.signer.delegation_version
        )
    }
}

pub struct BundleStore {
    dir: PathBuf,
    trust: TrustStore,
    versions: InstalledVersions,
    limits: VerifyLimits,
}

impl BundleStore {
    pub fn open(
        data_dir: &Path,
        trust: TrustStore,
        limits: VerifyLimits,
    ) -> Result<BundleStore, InstallError> {
        let dir = data_dir.join("bundles");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join("versions.json");
        let versions = match InstalledVersions::open(&path) {
            Ok(versions) => versions,
            Err(StoreError::Corrupt { reason, .. }) => {
                crate::store::health::set_aside(
                    &path,
                    &reason,
                    Some(
                        "the rollback floor is rebuilt from the signed bundles installed and \
                         the factory ones"
                            .into(),
                    ),
                );
                InstalledVersions::open(&path)?
            }
            Err(err) => return Err(err.into()),
        };
        let mut store = BundleStore {
            dir,
            trust,
            versions,
            limits,
        };
        let own: Vec<PathBuf> = store
            .plugin_dirs()
            .into_iter()
            .flat_map(|dir| [CURRENT, PREVIOUS, CONFIG].map(|file| dir.join(file)))
            .filter(|path| path.is_file())
            .collect();
        store.raise_floor(&own)?;
        Ok(store)
    }

    /// Raises the rollback floor to the signed versions of `bundles` (the installed ones, the
    /// factory ones on the verified root): `versions.json` is writable by whoever holds the data
    /// partition, the signed bundles are not forgeable, so the floor is the highest of them all.
    /// A file that does not verify raises nothing.
    pub fn raise_floor(&mut self, bundles: &[PathBuf]) -> Result<(), InstallError> {
        let floors: Vec<(String, Version)> = bundles
            .iter()
            .filter_map(|path| self.verify_file(path).ok())
            .map(|bundle| (bundle.manifest.name, bundle.manifest.version))
            .collect();
        for name in self.versions.raise_floors(floors)? {
            tracing::warn!(
                "rollback floor of {name} raised to its signed bundle's version: versions.json \
                 was behind it"
            );
        }
        Ok(())
    }

    fn plugin_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    }

    pub fn limits(&self) -> VerifyLimits {
        self.limits
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    pub fn versions(&self) -> &InstalledVersions {
        &self.versions
    }

    /// Signatures, trust, digest and ABI of a bundle file, not what is installed (a factory
    /// bundle is checked this way at every start).
    pub fn verify_file(&self, path: &Path) -> Result<VerifiedBundle, InstallError> {
        let bytes = read_limited(path, self.limits.max_bundle_bytes).map_err(io(path))?;
        Ok(verify_signed(
            &bytes,
            &self.trust,
            &self.limits,
            unix_now(),
        )?)
    }

    /// Notes a factory bundle the appliance runs, so an older one can never be installed over
    /// it and model updates can target it.
    pub fn record_running(&mut self, manifest: &BundleManifest) -> Result<(), InstallError> {
        let known = self.versions.installed(&manifest.name);
        if known.is_none_or(|k| k.version < manifest.version) {
            self.versions.record_install(manifest)?;
        }
        Ok(())
    }

    fn plugin_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The installed bundles, verified, by name; a file that no longer verifies is reported and
    /// left out (the factory bundle, if any, runs instead).
    pub fn installed(&self) -> Vec<(PathBuf, VerifiedBundle)> {
        let mut found = Vec::new();
        let mut paths: Vec<PathBuf> = self
            .plugin_dirs()
            .into_iter()
            .map(|dir| dir.join(CURRENT))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            match self.verify_file(&path) {
                Ok(bundle) => found.push((path, bundle)),
                Err(err) => tracing::error!("installed bundle {} not run: {err}", path.display()),
            }
        }
        found
    }

    /// The config of the model update installed for `name`'s wasm, if one is.
    pub fn config_update(&self, name: &str, wasm_sha256: &[u8; 32]) -> Option<(Version, String)> {
        let path = self.plugin_dir(name).join(CONFIG);
        if !path.is_file() {
            return None;
        }
        match self.verify_file(&path) {
            Ok(update) if update.manifest.payload.wasm_sha256() == wasm_sha256 => {
                Some((update.manifest.version, update.manifest.default_config))
            }
            Ok(_) => None,
            Err(err) => {
                tracing::error!("model update {} not applied: {err}", path.display());
                None
            }
        }
    }

    /// Verifies `bytes` against the trust store and what is installed, hands the bundle to
    /// `apply` (which checks the module agrees with its manifest, and on a running appliance
    /// swaps it in), then puts it in place. On any refusal nothing is written.
    pub fn install(
        &mut self,
        bytes: &[u8],
        apply: impl FnOnce(&VerifiedBundle) -> Result<(), String>,
    ) -> Result<Installation, InstallError> {
        let bundle = verify(bytes, &self.trust, &self.versions, &self.limits, unix_now())?;
        apply(&bundle).map_err(InstallError::NotApplied)?;
        let name = bundle.manifest.name.clone();
        let dir = self.plugin_dir(&name);
        let installation = if bundle.manifest.payload.is_config_update() {
            let config = Some(bundle.manifest.default_config.clone());
            write_atomic(&dir.join(CONFIG), bytes).map_err(io(&dir))?;
            Installation { bundle, config }
        } else {
            let current = dir.join(CURRENT);
            if current.is_file() {
                let old = std::fs::read(&current).map_err(io(&current))?;
                write_atomic(&dir.join(PREVIOUS), &old).map_err(io(&dir))?;
            }
            write_atomic(&current, bytes).map_err(io(&current))?;
            // A model update was for the old wasm.
            let _ = std::fs::remove_file(dir.join(CONFIG));
            Installation {
                bundle,
                config: None,
            }
        };
        self.versions
            .record_install(&installation.bundle.manifest)?;
        tracing::info!(
            "installed {} {} (signed by {})",
            installation.bundle.manifest.name,
            installation.bundle.manifest.version,
            installation.bundle.signer.name
        );
        Ok(installation)
    }

    /// After the host put a failing version back to the one before: the previous bundle
    /// becomes current again, or, when the one before was the factory's, the installed one goes.
    pub fn revert(&mut self, name: &str, failed_version: &str) -> Result<(), InstallError> {
        let config = self.plugin_dir(name).join(CONFIG);
        if config.is_file() {
            let failed_update = self
                .verify_file(&config)
                .map_or(true, |u| u.manifest.version.to_string() == failed_version);
            if failed_update {
                // A model update failed: only its config goes.
                return std::fs::remove_file(&config).map_err(io(&config));
            }
        }
        match self.rollback(name) {
            Err(InstallError::NoPrevious(_)) => {
                let current = self.plugin_dir(name).join(CURRENT);
                std::fs::remove_file(&current).map_err(io(&current))?;
                let _ = std::fs::remove_file(self.plugin_dir(name).join(CONFIG));
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Puts the previous bundle of `name` back (an operator's decision, or the host's after
    /// the new version kept failing). The high-water mark stays: the rolled-back-from version
    /// cannot be reinstalled, only a newer one.
    pub fn rollback(&mut self, name: &str) -> Result<VerifiedBundle, InstallError> {
        let dir = self.plugin_dir(name);
        let previous = dir.join(PREVIOUS);
        if !previous.is_file() {
            return Err(InstallError::NoPrevious(name.to_string()));
        }
        let bytes = read_limited(&previous, self.limits.max_bundle_bytes).map_err(io(&previous))?;
        let bundle = verify_signed(&bytes, &self.trust, &self.limits, unix_now())?;
        write_atomic(&dir.join(CURRENT), &bytes).map_err(io(&dir))?;
        std::fs::remove_file(&previous).map_err(io(&previous))?;
        let _ = std::fs::remove_file(dir.join(CONFIG));
        self.versions.record_install(&bundle.manifest)?;
        tracing::warn!("plugin {name} rolled back to {}", bundle.manifest.version);
        Ok(bundle)
    }
}

/// Whether a module's own manifest agrees with the signed one: the signature is over the bundle
/// manifest, so the module must not claim another name, kind, subscriptions or filter.
pub fn module_agrees(
    signed: &BundleManifest,
    module: &vigil_plugin_sdk::Manifest,
) -> Result<(), String> {
    if module.name != signed.name {
        return Err(format!(
            "the module is plugin `{}`, the bundle says `{}`",
            module.name, signed.name
        ));
    }
    if module.kind != signed.kind {
        return Err(format!(
            "the module is a {:?}, the bundle says {:?}",
            module.kind, signed.kind
        ));
    }
    if module.subscriptions != signed.subscriptions || module.filter != signed.filter {
        return Err("the module subscribes to other events than the bundle says".into());
    }
    Ok(())
}

/// Applies a verified bundle to running plugins: a new version is swapped in (learned state
/// carried over), a model update reconfigures the running one, a new plugin is loaded.
pub fn apply(host: &mut PluginHost, bundle: &VerifiedBundle) -> Result<(), String> {
    let manifest = &bundle.manifest;
    let origin = format!("{} {} (installed bundle)", manifest.name, manifest.version);
    let agrees = |module: &vigil_plugin_sdk::Manifest| module_agrees(manifest, module);
    let id = match host.find(&manifest.name) {
        Some(id) if manifest.payload.is_config_update() => host
            .reconfigure(id, &manifest.default_config)
            .map(|()| id)
            .map_err(|err| err.to_string())?,
        Some(id) => host
            .swap(id, &bundle.wasm, &origin, None, agrees)
            .map(|()| id)
            .map_err(|err| err.to_string())?,
        None if manifest.payload.is_config_update() => {
            return Err(format!("plugin `{}` is not running", manifest.name))
        }
        None => host
            .load_checked(&bundle.wasm, &origin, None, agrees)
            .map_err(|err| err.to_string())?,
    };
    host.set_bundle(id, &manifest.version.to_string(), &bundle.signer.name);
    Ok(())
}
