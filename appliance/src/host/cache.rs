//! Compiled modules, cached in memory and on disk by the wasm's SHA-256 and the engine's
//! configuration: a restart or a second load skips Cranelift (tens of ms per module, against well
//! under a millisecond to map a serialized one).
//!
//! On disk a module is `<cache_dir>/<sha256 of the wasm>-<engine compatibility hash>.cwasm`. The
//! second half changes with the wasmtime version and every engine setting that affects code
//! (an epoch-interrupting engine cannot run code compiled without the checks), so a stale artifact
//! is simply never looked up again.
//!
//! A second, read-only directory may hold modules compiled ahead of time
//! (`vigil plugins precompile`), named the same way; the appliance image carries them on its
//! verified root, so it starts without compiling and never runs code from writable storage.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// Where loads were served from, since the host started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules compiled by Cranelift.
    pub compiled: u64,
    /// Loads of a module already compiled by this host.
    pub memory_hits: u64,
    /// Loads served from a `.cwasm` file in the cache directory.
    pub disk_hits: u64,
}

pub struct ModuleCache {
    dir: Option<PathBuf>,
    precompiled: Option<PathBuf>,
    memory: HashMap<[u8; 32], Module>,
    stats: CacheStats,
}

impl ModuleCache {
    /// `dir`: where compiled modules are written and found again; `precompiled`: read-only
    /// modules compiled ahead of time, looked up first.
    pub fn new(dir: Option<PathBuf>, precompiled: Option<PathBuf>) -> ModuleCache {
        ModuleCache {
            dir,
            precompiled,
            memory: HashMap::new(),
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The module for `wasm`: from memory, from the cache directory, or compiled (and then
    /// written to the cache directory; a failed write is logged, not fatal).
    pub fn get_or_compile(&mut self, engine: &Engine, wasm: &[u8]) -> anyhow::Result<Module> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(module) = self.memory.get(&digest) {
            self.stats.memory_hits += 1;
            return Ok(module.clone());
        }
        let precompiled = self
            .precompiled
            .as_deref()
            .map(|dir| artifact_path(dir, engine, &digest));
        let path = self
            .dir
            .as_deref()
            .map(|dir| artifact_path(dir, engine, &digest));
        for artifact in [precompiled.as_deref(), path.as_deref()] {
            let Some(artifact) = artifact.filter(|p| p.is_file()) else {
                continue;
            };
            // SAFETY: `deserialize_file` runs the file's machine code, so it must be a wasmtime
            // artifact we wrote. It is: the cache directory belongs to the appliance (under its
            // data dir, not writable by plugins or the network), and the file is written only by
            // `serialize` below, atomically (temporary file + rename, so a mapped file is never
            // rewritten in place); the precompiled directory is read-only, written by
            // `vigil plugins precompile` when the image was built (on its verified root there).
            // Either is for exactly this wasm (its SHA-256 is in the name) and this engine
            // configuration (its compatibility hash is in the name); wasmtime also checks the
            // artifact's header against the engine before using it.
            match unsafe { Module::deserialize_file(engine, artifact) } {
                Ok(module) => {
                    self.stats.disk_hits += 1;
                    self.memory.insert(digest, module.clone());
                    return Ok(module);
                }
                Err(err) => tracing::warn!(
                    "ignoring compiled module {}, recompiling: {err:#}",
                    artifact.display()
                ),
            }
        }
        let module = Module::new(engine, wasm)?;
        self.stats.compiled += 1;
        if let Some(path) = path {
            let written = module.serialize().and_then(|bytes| {
                crate::store::files::write_atomic(&path, &bytes).map_err(Into::into)
            });
            if let Err(err) = written {
                tracing::warn!("could not cache {}: {err:#}", path.display());
            }
        }
        self.memory.insert(digest, module.clone());
        Ok(module)
    }
}

/// `<dir>/<sha256>-<engine compatibility hash>.cwasm`.
pub fn artifact_path(dir: &Path, engine: &Engine, digest: &[u8; 32]) -> PathBuf {
    // `DefaultHasher::new()` uses fixed keys, so the name is stable from run to run of one build;
    // a new toolchain may change it, which only costs one recompilation.
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}-{:016x}.cwasm", engine_hash.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &str = r#"(module (func (export "f") (result i32) i32.const 7))"#;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn second_cache_reads_the_artifact_the_first_wrote() {
        let dir = temp_dir("hit");
        let engine = Engine::default();
        let wasm = wat::parse_str(WASM).expect("wat");
        let mut first = ModuleCache::new(Some(dir.clone()), None);
        first.get_or_compile(&engine, &wasm).expect("compiles");
        first.get_or_compile(&engine, &wasm).expect("memory hit");
        assert_eq!(
            first.stats(),
            CacheStats {
                compiled: 1,
                memory_hits: 1,
                disk_hits: 0
            }
        );
        let digest: [u8; 32] = Sha256::digest(&wasm).into();
        assert!(artifact_path(&dir, &engine, &digest).is_file());

        let mut second = ModuleCache::new(Some(dir.clone()), None);
        let module = second.get_or_compile(&engine, &wasm).expect("disk hit");
        assert_eq!(second.stats().disk_hits, 1);
        assert_eq!(second.stats().compiled, 0);
        assert!(module.get_export("f").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_artifact_is_recompiled() {
        let dir = temp_dir("corrupt");
        let engine = Engine::default();
        let wasm = wat::parse_str(WASM).expect("wat");
        let digest: [u8; 32] = Sha256::digest(&wasm).into();
        let path = artifact_path(&dir, &engine, &digest);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(&path, b"\x7fELF but not really").expect("write");
        let mut cache = ModuleCache::new(Some(dir.clone()), None);
        cache.get_or_compile(&engine, &wasm).expect("recompiles");
        assert_eq!(cache.stats().compiled, 1);
        assert_eq!(cache.stats().disk_hits, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn modules_compiled_ahead_for_this_target_load_without_compiling() {
        let dir = temp_dir("precompiled");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let host = target_lexicon::HOST.to_string();
        // As `vigil plugins precompile` does on the build machine...
        let builder = crate::host::engine(Some(&host)).expect("engine");
        let wasm = wat::parse_str(WASM).expect("wat");
        let digest: [u8; 32] = Sha256::digest(&wasm).into();
        let artifact = builder.precompile_module(&wasm).expect("precompiles");
        std::fs::write(artifact_path(&dir, &builder, &digest), artifact).expect("write");
        // ...and a portable appliance engine finds it, with nothing written anywhere.
        let appliance = crate::host::engine(Some(&host)).expect("engine");
        let mut cache = ModuleCache::new(None, Some(dir.clone()));
        let module = cache.get_or_compile(&appliance, &wasm).expect("loads");
        assert_eq!(cache.stats().disk_hits, 1);
        assert_eq!(cache.stats().compiled, 0);
        assert!(module.get_export("f").is_some());
        // An engine tuned to this machine's CPU is another configuration: it compiles.
        let native = crate::host::engine(None).expect("engine");
        let mut cache = ModuleCache::new(None, Some(dir.clone()));
        cache.get_or_compile(&native, &wasm).expect("compiles");
        assert_eq!(cache.stats().compiled, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
