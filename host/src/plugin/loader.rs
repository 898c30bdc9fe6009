//! Loading adapter components: read, check the contract, compile once and cache the compiled
//! artifact on disk keyed by the component's hash and the engine's settings.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

use super::bindings::{ADAPTER_EXPORT, CONTRACT_VERSION, PACKAGE_PREFIX};
use super::error::LoadError;

/// A checked, compiled adapter component.
#[derive(Clone)]
pub struct Loaded {
    pub component: Component,
    pub path: PathBuf,
    /// The contract version the component targets.
    pub version: String,
    /// Whether the compiled artifact came from the disk cache.
    pub from_cache: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("from_cache", &self.from_cache)
            .finish_non_exhaustive()
    }
}

pub struct Loader {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl Loader {
    pub fn new(engine: Engine, cache_dir: Option<PathBuf>) -> Self {
        Self { engine, cache_dir }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, checks and compiles `path`, using the cache when it holds this exact component
    /// compiled by an engine with these settings.
    pub fn load(&self, path: &Path) -> Result<Loaded, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        let cached = self.cache_path(&bytes);
        if let Some(file) = cached.as_deref() {
            if let Some(component) = self.read_cache(file) {
                let version = check(&self.engine, &component, path)?;
                return Ok(Loaded {
                    component,
                    path: path.into(),
                    version,
                    from_cache: true,
                });
            }
        }
        let component =
            Component::new(&self.engine, &bytes).map_err(|e| LoadError::NotAComponent {
                path: path.into(),
                reason: e.to_string(),
            })?;
        let version = check(&self.engine, &component, path)?;
        if let Some(file) = cached {
            if let Err(e) = store(&component, &file) {
                tracing::warn!(cache = %file.display(), error = %e, "could not write the compile cache");
            }
        }
        Ok(Loaded {
            component,
            path: path.into(),
            version,
            from_cache: false,
        })
    }

    /// Reads a cached artifact; a missing or unusable one is `None` (and removed).
    fn read_cache(&self, file: &Path) -> Option<Component> {
        // Read into memory rather than mapping the file: a file truncated under a live
        // mapping would fault the process.
        let bytes = std::fs::read(file).ok()?;
        // SAFETY: the bytes are an artifact this process (or an earlier one) wrote with
        // `Component::serialize` into our own cache folder, named by the component's SHA-256
        // and the engine's compatibility hash; wasmtime also checks the header and refuses an
        // artifact from another engine configuration or version.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &bytes) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(cache = %file.display(), error = %e, "discarding unusable cache entry");
                let _ = std::fs::remove_file(file);
                None
            }
        }
    }

    fn cache_path(&self, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = h.finish();
        let digest = hex::encode(Sha256::digest(bytes));
        Some(dir.join(format!("{digest}-{engine_hash:016x}.cwasm")))
    }
}

/// Writes atomically (temp file, then rename) so a crash never leaves a torn artifact.
fn store(component: &Component, file: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, file)
}

/// Checks the component's exports and imports against the contract; returns its version.
fn check(engine: &Engine, component: &Component, path: &Path) -> Result<String, LoadError> {
    let ty = component.component_type();
    let mut found_other = None;
    let mut ok = false;
    for (name, item) in ty.exports(engine) {
        if name == ADAPTER_EXPORT && matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            ok = true;
        } else if let Some(rest) = name.strip_prefix(PACKAGE_PREFIX) {
            if let Some((_, version)) = rest.split_once('@') {
                found_other = Some(version.to_owned());
            }
        }
    }
    if !ok {
        return Err(match found_other {
            Some(found) => LoadError::UnsupportedVersion {
                path: path.into(),
                found,
                supported: CONTRACT_VERSION,
            },
            None => LoadError::NotAnAdapter {
                path: path.into(),
                expected: ADAPTER_EXPORT,
            },
        });
    }
    for (name, _) in ty.imports(engine) {
        let granted = name.starts_with("wasi:") || name.starts_with(PACKAGE_PREFIX);
        if !granted {
            return Err(LoadError::ForbiddenImport {
                path: path.into(),
                import: name.to_owned(),
            });
        }
        if let Some(rest) = name.strip_prefix(PACKAGE_PREFIX) {
            if !rest.ends_with(&format!("@{CONTRACT_VERSION}")) {
                let found = rest.split_once('@').map_or("unversioned", |(_, v)| v);
                return Err(LoadError::UnsupportedVersion {
                    path: path.into(),
                    found: found.into(),
                    supported: CONTRACT_VERSION,
                });
            }
        }
    }
    Ok(CONTRACT_VERSION.into())
}
