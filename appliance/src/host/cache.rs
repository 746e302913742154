//! Compiled modules, cached in memory and on disk by the wasm's SHA-256 and the engine's
//! configuration: a restart or a second load skips Cranelift (tens of ms per module).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

pub struct ModuleCache {
    dir: Option<PathBuf>,
    memory: HashMap<[u8; 32], Module>,
    /// Loads served from disk, for tests and the summary.
    pub disk_hits: u64,
}

impl ModuleCache {
    pub fn new(dir: Option<PathBuf>) -> ModuleCache {
        ModuleCache {
            dir,
            memory: HashMap::new(),
            disk_hits: 0,
        }
    }

    pub fn get_or_compile(&mut self, engine: &Engine, wasm: &[u8]) -> anyhow::Result<Module> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(module) = self.memory.get(&digest) {
            return Ok(module.clone());
        }
        let path = self.dir.as_ref().map(|dir| {
            let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
            engine
                .precompile_compatibility_hash()
                .hash(&mut engine_hash);
            let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            dir.join(format!("{name}-{:016x}.cwasm", engine_hash.finish()))
        });
        if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the file is in the appliance's own data dir, written by `serialize` below
            // for exactly this wasm (its SHA-256 is in the name) and this engine configuration
            // (its compatibility hash is in the name); wasmtime also checks the header.
            match unsafe { Module::deserialize_file(engine, path) } {
                Ok(module) => {
                    self.disk_hits += 1;
                    self.memory.insert(digest, module.clone());
                    return Ok(module);
                }
                Err(err) => tracing::warn!("ignoring cached {}: {err:#}", path.display()),
            }
        }
        let module = Module::new(engine, wasm)?;
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
