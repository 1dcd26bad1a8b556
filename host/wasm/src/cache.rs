//! Precompiled components on disk, keyed by the component's content hash and
//! the engine's compatibility hash (a cache written by an engine with other
//! settings, e.g. fuel on, is never loaded by this one). The directory is
//! bounded in bytes: after each write the least recently used entries go
//! (a hit marks its entry used), so distinct components from many tenants
//! cannot fill a TaskManager's disk.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::RuntimeError;

pub(crate) struct Cache {
    dir: PathBuf,
    engine_hash: String,
    max_bytes: u64,
}

impl Cache {
    pub(crate) fn open(
        dir: PathBuf,
        engine: &Engine,
        max_bytes: u64,
    ) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&dir).map_err(|error| RuntimeError::Cache {
            path: dir.clone(),
            error,
        })?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Cache {
            dir,
            engine_hash: format!("{:016x}", h.finish()),
            max_bytes,
        })
    }

    pub(crate) fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// A cached compilation of the component with this digest, if any.
    pub(crate) fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `put` below from wasmtime's own
        // `serialize` output for exactly this content digest and engine
        // configuration, into a directory owned by this process's user.
        // wasmtime still checks its header and engine compatibility.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(c) => {
                // Used now: the last to be evicted.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component");
                None
            }
        }
    }

    /// Stores a compilation; failures only cost a recompilation later.
    pub(crate) fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let tmp = tempfile_in(&self.dir, digest);
                std::fs::write(&tmp, bytes)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| {
                        let _ = std::fs::remove_file(&tmp);
                        e.to_string()
                    })
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
        }
        self.evict(&path);
    }

    /// Removes the least recently used entries (any engine's) until the
    /// directory is within its bound; `keep`, just written, stays.
    pub(crate) fn evict(&self, keep: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    tracing::debug!(path = %path.display(), "evicted a cached component");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict a cached component")
                }
            }
        }
    }
}

fn tempfile_in(dir: &std::path::Path, digest: &str) -> PathBuf {
    dir.join(format!(
        ".{digest}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ))
}
