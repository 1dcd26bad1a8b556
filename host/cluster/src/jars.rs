//! The jar store: uploaded components on disk, one directory per tenant
//! (`DATA_DIR/jars/TENANT/SHA256.wasm` with its `.json` record), so two
//! tenants uploading the same bytes hold two jars and deleting one leaves
//! the other. Files only: which jars exist in memory, who may see them and
//! what they count against quotas is the JobManager's.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sluice_policy::TenantId;

use crate::table::{Jar, now_ms};

/// The directory of every tenant's uploads.
#[derive(Clone, Debug)]
pub(crate) struct JarStore {
    root: PathBuf,
}

/// A file operation of the jar store that failed (the JobManager's fault,
/// not the client's).
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {}: {error}", path.display())]
pub(crate) struct JarStoreError {
    what: &'static str,
    path: PathBuf,
    error: std::io::Error,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JarStoreError + 'a {
    move |error| JarStoreError {
        what,
        path: path.to_owned(),
        error,
    }
}

impl JarStore {
    pub fn new(data_dir: &Path) -> Self {
        JarStore {
            root: data_dir.join("jars"),
        }
    }

    /// Where a tenant's uploads are.
    pub fn dir(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(tenant.as_str())
    }

    /// A stored jar's component file.
    pub fn path(&self, jar: &Jar) -> PathBuf {
        self.dir(&jar.owner).join(&jar.id)
    }

    /// A new file for an upload under way, in its tenant's directory.
    pub fn upload_path(&self, tenant: &TenantId, upload: &str) -> Result<PathBuf, JarStoreError> {
        let dir = self.dir(tenant);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        Ok(dir.join(format!(".upload-{upload}")))
    }

    /// Stores the upload in `file` (whose content is `bytes`) as `owner`'s
    /// jar named after the client's file name `name`.
    pub fn store(
        &self,
        owner: &TenantId,
        name: &str,
        file: &Path,
        bytes: &[u8],
    ) -> Result<Jar, JarStoreError> {
        let hash = hex::encode(Sha256::digest(bytes));
        let id = format!("{hash}.wasm");
        let dir = self.dir(owner);
        let target = dir.join(&id);
        std::fs::rename(file, &target).map_err(io("store the upload as", &target))?;
        let jar = Jar {
            owner: owner.clone(),
            id: id.clone(),
            name: sanitize_name(name),
            uploaded: now_ms(),
            hash,
            size: bytes.len() as u64,
        };
        let record = dir.join(format!("{id}.json"));
        let meta = serde_json::to_vec(&jar).map_err(std::io::Error::other);
        meta.and_then(|m| std::fs::write(&record, m))
            .map_err(io("write", &record))?;
        Ok(jar)
    }

    /// Deletes a jar's files.
    pub fn delete(&self, jar: &Jar) -> Result<(), JarStoreError> {
        let dir = self.dir(&jar.owner);
        for f in [jar.id.clone(), format!("{}.json", jar.id)] {
            let path = dir.join(f);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("delete", &path)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every stored jar. Records from before tenants (directly under
    /// `jars/`) move to the `default` tenant's directory; leftovers of
    /// uploads cut short are removed; corrupt records are logged and
    /// skipped.
    pub fn load_all(&self) -> Vec<Jar> {
        let default = TenantId::new(crate::tenancy::DEFAULT_TENANT).expect("invariant: valid");
        self.migrate_legacy(&default);
        let Ok(tenants) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut jars = Vec::new();
        for dir in tenants.flatten().filter(|e| e.path().is_dir()) {
            let Some(owner) = dir.file_name().to_str().and_then(|n| TenantId::new(n).ok()) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".upload-") {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                if !name.ends_with(".json") {
                    continue;
                }
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Jar>(&b).map_err(|e| e.to_string()))
                {
                    Ok(mut jar) => {
                        jar.owner = owner.clone();
                        if self.path(&jar).exists() {
                            jars.push(jar);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(file = %path.display(), "skipping a corrupt upload record: {err}")
                    }
                }
            }
        }
        jars
    }

    fn migrate_legacy(&self, default: &TenantId) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        if files.is_empty() {
            return;
        }
        let target = self.dir(default);
        if let Err(e) = std::fs::create_dir_all(&target) {
            tracing::warn!(dir = %target.display(), "cannot move uploads from before tenants: {e}");
            return;
        }
        for file in files {
            if let Some(name) = file.file_name()
                && let Err(e) = std::fs::rename(&file, target.join(name))
            {
                tracing::warn!(file = %file.display(), "cannot move an upload from before tenants: {e}");
            }
        }
    }
}

fn sanitize_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(100)
        .collect();
    if clean.is_empty() {
        "application.wasm".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tenants_storing_the_same_bytes_hold_two_jars() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JarStore::new(dir.path());
        let (a, b) = (
            TenantId::new("a").expect("ok"),
            TenantId::new("b").expect("ok"),
        );
        let mut jars = Vec::new();
        for t in [&a, &b] {
            let file = store.upload_path(t, "1").expect("path");
            std::fs::write(&file, b"bytes").expect("write");
            jars.push(
                store
                    .store(t, "../../x.wasm", &file, b"bytes")
                    .expect("stored"),
            );
        }
        assert_eq!(jars[0].id, jars[1].id);
        assert_eq!(jars[0].name, "x.wasm");
        store.delete(&jars[0]).expect("deleted");
        let left = store.load_all();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].owner, b);
    }

    #[test]
    fn uploads_from_before_tenants_belong_to_default_and_leftovers_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("jars");
        std::fs::create_dir_all(&root).expect("mkdir");
        let id = format!("{}.wasm", "a".repeat(64));
        std::fs::write(root.join(&id), b"x").expect("write");
        let old = format!(
            r#"{{"id":"{id}","name":"old.wasm","uploaded":1,"hash":"{}"}}"#,
            "a".repeat(64)
        );
        std::fs::write(root.join(format!("{id}.json")), old).expect("write");
        let store = JarStore::new(dir.path());
        let leftover = store
            .upload_path(&TenantId::new("t").expect("ok"), "cut")
            .expect("path");
        std::fs::write(&leftover, b"half").expect("write");
        let jars = store.load_all();
        assert_eq!(jars.len(), 1);
        assert_eq!(jars[0].owner.as_str(), "default");
        assert!(store.path(&jars[0]).exists());
        assert!(!leftover.exists());
    }
}
