//! Checkpoint storage: where snapshots, checkpoint metadata and savepoints
//! are kept, behind one small async API over OpenDAL, with the backend
//! chosen by URI:
//!
//! - `file:///absolute/path` (or just `/absolute/path`) — a directory (the
//!   default, under the data directory); objects are written to a temporary
//!   file and renamed, so a reader never sees half an object;
//! - `s3://bucket/prefix` — any S3-protocol store; endpoint, region and
//!   credentials come from [`S3Options`] (configuration or environment),
//!   and a store without credentials is refused at once;
//! - `memory://` — in-process, for tests.
//!
//! Every operation is retried with jittered backoff on temporary errors
//! and bounded by a timeout; an error says what was done to which object
//! on which store, and whether trying again may help
//! ([`StorageError::is_temporary`]). Paths are relative, `/`-separated and
//! may not climb out of the store's root.
//!
//! This crate knows nothing about checkpoints' contents or the cluster.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind as OdErrorKind, Operator};
use serde::{Deserialize, Serialize};

/// Attempts per operation (the first one included) before an error is returned.
const ATTEMPTS: usize = 4;
/// The longest any single operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest an upload or download may stall.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Temporary files of the file backend, inside its root.
const FILE_TMP_DIR: &str = ".sluice-tmp";

/// Where and how to reach an S3-protocol store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; AWS when unset.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unset).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
}

impl S3Options {
    /// Options from the environment: `SLUICE_S3_ENDPOINT`,
    /// `SLUICE_S3_REGION` (or `AWS_REGION`), `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        S3Options {
            endpoint: var("SLUICE_S3_ENDPOINT"),
            region: var("SLUICE_S3_REGION").or_else(|| var("AWS_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        }
    }
}

/// A storage location parsed from its URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local (or mounted) directory.
    File(PathBuf),
    /// A bucket and a key prefix (without slashes at either end).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix under which everything is kept; may be empty.
        prefix: String,
    },
    /// In-process memory.
    Memory,
}

impl std::str::FromStr for Location {
    type Err = StorageError;

    fn from_str(uri: &str) -> Result<Self, StorageError> {
        let bad = |why: &str| StorageError::config(uri, why);
        let path = uri
            .strip_prefix("file://")
            .or_else(|| (!uri.contains("://")).then_some(uri));
        if let Some(path) = path {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file location needs an absolute path, as in /var/lib/sluice/checkpoints \
                     or file:///var/lib/sluice/checkpoints",
                ));
            }
            return Ok(Location::File(normalize(Path::new(path))));
        }
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(
                    "an S3 location names a bucket, as in s3://bucket/prefix",
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if uri == "memory://" || uri == "memory:" {
            return Ok(Location::Memory);
        }
        Err(bad(
            "unknown storage location: use file:///PATH (or /PATH), s3://BUCKET/PREFIX or memory://",
        ))
    }
}

impl std::fmt::Display for Location {
    /// The location's URI in its canonical form (what [`Storage::uri`] gives).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(dir) => write!(f, "file://{}", dir.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Memory => f.write_str("memory://"),
        }
    }
}

/// `path` with `.` and `..` resolved by name (`..` at the root stays there).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What kind of failure a [`StorageError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The location or a path is not acceptable; fix the configuration.
    Config,
    /// The store did not answer or answered with a temporary failure (after
    /// retries); trying again later may work.
    Temporary,
    /// The store refused the operation (permissions, disk full, ...).
    Permanent,
}

/// A storage operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct StorageError {
    /// What was being done.
    pub op: &'static str,
    /// The object's path (or the location's URI for configuration errors).
    pub path: String,
    /// The store's URI.
    pub location: String,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The cause.
    pub message: String,
}

impl StorageError {
    fn config(uri: &str, why: &str) -> Self {
        StorageError {
            op: "use",
            path: uri.to_owned(),
            location: uri.to_owned(),
            kind: ErrorKind::Config,
            message: why.to_owned(),
        }
    }

    fn describe(&self) -> String {
        if self.op == "use" {
            format!(
                "cannot use `{}` for checkpoints: {}",
                self.location, self.message
            )
        } else if self.path == self.location {
            format!("cannot {} `{}`: {}", self.op, self.location, self.message)
        } else {
            format!(
                "cannot {} `{}` in {}: {}",
                self.op, self.path, self.location, self.message
            )
        }
    }

    /// Whether the object was missing.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::Temporary
    }
}

/// A checkpoint store. Cheap to clone; every clone shares the connection pool.
#[derive(Clone, Debug)]
pub struct Storage {
    op: Operator,
    uri: String,
}

impl Storage {
    /// Opens the store at `uri` (see the crate docs). Nothing is contacted
    /// yet: a wrong endpoint or missing bucket shows at the first operation
    /// (or at [`Storage::probe`]).
    pub fn open(uri: &str, s3: &S3Options) -> Result<Storage, StorageError> {
        let location: Location = uri.parse()?;
        let uri = &location.to_string();
        let to_config = |e: opendal::Error| StorageError::config(uri, &explain(&e));
        let op = match &location {
            Location::File(dir) => {
                let root = dir.to_string_lossy();
                let tmp = dir.join(FILE_TMP_DIR);
                Operator::new(
                    opendal::services::Fs::default()
                        .root(&root)
                        .atomic_write_dir(&tmp.to_string_lossy()),
                )
                .map_err(to_config)?
            }
            Location::Memory => {
                Operator::new(opendal::services::Memory::default()).map_err(to_config)?
            }
            Location::S3 { bucket, prefix } => {
                let missing: Vec<&str> = [
                    ("AWS_ACCESS_KEY_ID", &s3.access_key_id),
                    ("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key),
                ]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(name, _)| name)
                .collect();
                if !missing.is_empty() {
                    return Err(StorageError::config(
                        uri,
                        &format!(
                            "no credentials: set {} (and SLUICE_S3_ENDPOINT for a store other \
                             than AWS S3) for every process that uses it",
                            missing.join(" and ")
                        ),
                    ));
                }
                install_http_transport();
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(s3.region.as_deref().unwrap_or("us-east-1"))
                    .disable_config_load()
                    .disable_ec2_metadata();
                if let Some(e) = &s3.endpoint {
                    b = b.endpoint(e);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.access_key_id(k);
                }
                if let Some(k) = &s3.secret_access_key {
                    b = b.secret_access_key(k);
                }
                Operator::new(b).map_err(to_config)?
            }
        };
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(OP_TIMEOUT)
                    .with_io_timeout(IO_TIMEOUT),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(ATTEMPTS - 1)
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_jitter(),
            );
        Ok(Storage {
            op,
            uri: uri.to_owned(),
        })
    }

    /// The store's URI, in canonical form (`/x` opens as `file:///x`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Checks that the store answers, within `timeout`: a wrong endpoint,
    /// missing bucket or refused credentials shows here rather than at the
    /// first checkpoint.
    pub async fn probe(&self, timeout: Duration) -> Result<(), StorageError> {
        let path = "probe-does-not-exist";
        match tokio::time::timeout(timeout, self.op.stat(path)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == OdErrorKind::NotFound => Ok(()),
            Ok(Err(e)) => Err(self.error("reach", &self.uri, e)),
            Err(_) => Err(StorageError {
                op: "reach",
                path: self.uri.clone(),
                location: self.uri.clone(),
                kind: ErrorKind::Temporary,
                message: format!("no answer within {} s", timeout.as_secs()),
            }),
        }
    }

    fn error(&self, op: &'static str, path: &str, e: opendal::Error) -> StorageError {
        let kind = match e.kind() {
            OdErrorKind::NotFound => ErrorKind::NotFound,
            _ if e.is_temporary() => ErrorKind::Temporary,
            OdErrorKind::RateLimited | OdErrorKind::Unexpected => ErrorKind::Temporary,
            OdErrorKind::ConfigInvalid | OdErrorKind::Unsupported => ErrorKind::Config,
            _ => ErrorKind::Permanent,
        };
        StorageError {
            op,
            path: path.to_owned(),
            location: self.uri.clone(),
            kind,
            message: explain(&e),
        }
    }

    fn check(&self, op: &'static str, path: &str) -> Result<(), StorageError> {
        let bad = path.is_empty()
            || path.starts_with('/')
            || path.contains('\\')
            || path.contains('\0')
            || path
                .trim_end_matches('/')
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if bad {
            return Err(StorageError {
                op,
                path: path.to_owned(),
                location: self.uri.clone(),
                kind: ErrorKind::Config,
                message: "not a valid object path (relative, `/`-separated, no `.` or `..` \
                          segments)"
                    .into(),
            });
        }
        Ok(())
    }

    /// Writes an object whole, replacing any object at `path`. A write that
    /// fails leaves nothing behind: the file backend's temporary file and an
    /// object store's unfinished upload are discarded.
    pub async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), StorageError> {
        self.check("write", path)?;
        let mut w = self
            .op
            .writer(path)
            .await
            .map_err(|e| self.error("write", path, e))?;
        let written = match w.write(data).await {
            Ok(()) => w.close().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // A directory removed under the write (a discarded checkpoint's)
            // fails the final rename, for one; the temporary file must go.
            if let Err(abort) = w.abort().await {
                tracing::warn!(path, "cannot discard a failed write's leftovers: {abort}");
            }
            return Err(self.error("write", path, e));
        }
        Ok(())
    }

    /// Reads an object whole.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        self.check("read", path)?;
        self.op
            .read(path)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.error("read", path, e))
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool, StorageError> {
        self.check("look up", path)?;
        match self.op.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == OdErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("look up", path, e)),
        }
    }

    /// Paths of every object under `dir` (`""` for all), at any depth, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let dir = dir_path(dir);
        if !dir.is_empty() {
            self.check("list", &dir)?;
        }
        let entries = match self.op.list_with(&dir).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == OdErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error("list", &dir, e)),
        };
        let mut paths: Vec<String> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_owned())
            .filter(|p| !p.starts_with(FILE_TMP_DIR))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Deletes an object; deleting a missing object succeeds.
    pub async fn delete(&self, path: &str) -> Result<(), StorageError> {
        self.check("delete", path)?;
        self.op
            .delete(path)
            .await
            .map_err(|e| self.error("delete", path, e))
    }

    /// Deletes every object under `dir`; an empty or missing `dir` succeeds.
    pub async fn delete_dir(&self, dir: &str) -> Result<(), StorageError> {
        let dir = dir_path(dir);
        self.check("delete", &dir)?;
        match self.op.delete_with(&dir).recursive(true).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == OdErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", &dir, e)),
        }
    }
}

/// What an OpenDAL error means to a user, without OpenDAL's own context
/// (operation, service, internal paths): its kind in words, or its message
/// and the innermost cause (the operating system's or the store's).
pub fn explain(e: &opendal::Error) -> String {
    let what = match e.kind() {
        OdErrorKind::NotFound => "no such file or directory".to_owned(),
        OdErrorKind::PermissionDenied => "permission denied".to_owned(),
        OdErrorKind::IsADirectory => "it is a directory".to_owned(),
        OdErrorKind::NotADirectory => "a part of the path is not a directory".to_owned(),
        OdErrorKind::AlreadyExists => "it already exists".to_owned(),
        OdErrorKind::RateLimited => "the store is limiting the request rate".to_owned(),
        _ => {
            let mut innermost = None;
            let mut next = std::error::Error::source(e);
            while let Some(cause) = next {
                innermost = Some(cause);
                next = cause.source();
            }
            match innermost {
                Some(cause) if e.message().is_empty() => cause.to_string(),
                Some(cause) => format!("{}: {cause}", e.message()),
                None => e.message().to_owned(),
            }
        }
    };
    if e.is_temporary() {
        format!("{what} (temporary)")
    } else {
        what
    }
}

/// `dir` with exactly one trailing slash (`""` stays empty: the root).
fn dir_path(dir: &str) -> String {
    let d = dir.trim_end_matches('/');
    if d.is_empty() {
        String::new()
    } else {
        format!("{d}/")
    }
}

/// OpenDAL's HTTP services need a transport, and the TLS stack under it a
/// crypto provider: ring, as everywhere else in Sluice.
fn install_http_transport() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
    });
}
