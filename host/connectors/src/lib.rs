//! Host connectors: sources and sinks that reach the outside world on a
//! tenant's behalf, so guests never need to.
//!
//! | name          | kind   | config                                              |
//! |---------------|--------|-----------------------------------------------------|
//! | `file-source` | source | `path`: a file; subtasks split it by byte range     |
//! | `file-sink`   | sink   | `path`: a directory; `part-S-N` files per subtask S |
//! | `datagen`     | source | `count` records in all; `keys`, `value-bytes`, `rate` (per subtask per second) optional |
//! | `nexmark`     | source | `events` Nexmark events in all (persons, auctions, bids); `tps` events per second of event time (default 10 000 000) |
//! | `print`       | sink   | prints `SUBTASK> VALUE` lines to stdout             |
//! | `blackhole`   | sink   | discards                                            |
//!
//! Files go through OpenDAL (its `fs` service here; object stores share the
//! same code path). Checking a node against the tenant's policy happens at
//! submission ([`check`]); opening happens in the task ([`Connectors`]).

#![warn(missing_docs)]

mod datagen;
mod file;
mod nexmark;
mod simple;

pub use file::SinkRestore;

use std::path::{Path, PathBuf};

use sluice_policy::{Denied, Policy};
use sluice_types::{Batch, BatchBuilder, NodeSpec, OperatorKind};

/// The most events a `nexmark` source generates (2^53: event times and ids
/// stay exact in every computation the generator makes).
const MAX_NEXMARK_EVENTS: u64 = 1 << 53;

/// The largest value `datagen` pads to (`value-bytes`).
const MAX_GENERATED_VALUE: u64 = 1 << 20;

/// Every connector name, for error messages.
pub const CONNECTORS: &[&str] = &[
    "file-source",
    "file-sink",
    "datagen",
    "nexmark",
    "print",
    "blackhole",
];

/// A connector failure. `retryable` says whether trying again may succeed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The node's configuration is wrong.
    #[error("node `{node}`: {message}")]
    Config {
        /// The node.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// The tenant's policy forbids it.
    #[error("node `{node}`: {denied}")]
    Denied {
        /// The node.
        node: String,
        /// The policy decision.
        denied: Denied,
    },
    /// Storage refused an operation.
    #[error(
        "node `{node}`: cannot {action} `{path}`: {}",
        sluice_state::explain(error)
    )]
    Io {
        /// The node.
        node: String,
        /// What it was doing.
        action: &'static str,
        /// The file.
        path: String,
        /// The storage error (boxed: it is large and errors are rare). Its
        /// cause is in the message; OpenDAL's own context is not.
        error: Box<opendal::Error>,
    },
    /// Reading an open file failed.
    #[error("node `{node}`: cannot read `{path}`: {error}")]
    Read {
        /// The node.
        node: String,
        /// The file.
        path: String,
        /// What the operating system said.
        error: std::io::Error,
    },
}

impl ConnectorError {
    /// Whether a retry may succeed (a transient storage error).
    pub fn retryable(&self) -> bool {
        match self {
            ConnectorError::Io { error, .. } => error.is_temporary(),
            ConnectorError::Read { error, .. } => !matches!(
                error.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
            ),
            ConnectorError::Config { .. } | ConnectorError::Denied { .. } => false,
        }
    }
}

/// What a source poll reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// More may follow.
    More,
    /// Exhausted.
    Finished,
}

/// A host source: one per subtask.
pub trait Source: Send {
    /// Appends up to `max` records to `out`.
    fn poll(&mut self, max: usize, out: &mut BatchBuilder) -> Result<Poll, ConnectorError>;
    /// The position to resume from (every record polled so far is before
    /// it), for a checkpoint. Opening the source with it continues there.
    fn snapshot(&self) -> Vec<u8>;
}

/// A host sink: one per subtask. Sinks that publish to the outside world
/// do it in two phases, so that what a checkpoint covers becomes visible
/// only once the checkpoint completes.
pub trait Sink: Send {
    /// Writes a batch.
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectorError>;
    /// The input ended: make everything written visible.
    fn finish(&mut self) -> Result<(), ConnectorError>;
    /// Checkpoint `checkpoint`'s barrier passed: make everything written so
    /// far durable and ready to publish; the returned state goes into the
    /// checkpoint.
    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        let _ = checkpoint;
        Ok(Vec::new())
    }
    /// Checkpoint `checkpoint` completed: publish what was pre-committed up
    /// to it.
    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let _ = checkpoint;
        Ok(())
    }
    /// The task stopped before its input ended: drop what is being written,
    /// and with `discard_precommitted` what was pre-committed too (no
    /// checkpoint that survives will publish it).
    fn abort(&mut self, discard_precommitted: bool) -> Result<(), ConnectorError> {
        let _ = discard_precommitted;
        Ok(())
    }
}

/// The kind of a connector, or `None` if it does not exist.
pub fn kind(connector: &str) -> Option<OperatorKind> {
    match connector {
        "file-source" | "datagen" | "nexmark" => Some(OperatorKind::Source),
        "file-sink" | "print" | "blackhole" => Some(OperatorKind::Sink),
        _ => None,
    }
}

fn config_error(node: &NodeSpec, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config {
        node: node.name.clone(),
        message: message.into(),
    }
}

fn parse<T: std::str::FromStr>(
    node: &NodeSpec,
    key: &str,
    default: Option<T>,
) -> Result<T, ConnectorError> {
    match (node.config(key), default) {
        (Some(v), _) => v
            .parse()
            .map_err(|_| config_error(node, format!("config `{key}={v}` is not a valid number"))),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(config_error(
            node,
            format!("{} needs config `{key}`", connector_name(node)),
        )),
    }
}

/// A `nexmark` node's stream: `events` (at most [`MAX_NEXMARK_EVENTS`])
/// and `tps` (at least 1).
fn nexmark_config(node: &NodeSpec) -> Result<sluice_nexmark::GeneratorConfig, ConnectorError> {
    let defaults = sluice_nexmark::GeneratorConfig::default();
    let tps = parse::<u64>(node, "tps", Some(defaults.tps))?;
    if tps == 0 {
        return Err(config_error(node, "`tps` must be at least 1".to_owned()));
    }
    let events = parse::<u64>(node, "events", None)?;
    if events > MAX_NEXMARK_EVENTS {
        return Err(config_error(
            node,
            format!("`events` is {events}; at most {MAX_NEXMARK_EVENTS} is allowed"),
        ));
    }
    Ok(sluice_nexmark::GeneratorConfig {
        events,
        tps,
        ..defaults
    })
}

/// Decodes every non-empty state of a list (several when the parallelism
/// changed).
fn decode_all<T: serde::de::DeserializeOwned>(
    states: &[Vec<u8>],
) -> Result<Vec<T>, postcard::Error> {
    states
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| postcard::from_bytes(s))
        .collect()
}

fn connector_name(node: &NodeSpec) -> &str {
    match &node.implementation {
        sluice_types::Implementation::Connector(c) => c,
        sluice_types::Implementation::Guest(g) => g,
    }
}

/// `path` with `.` and `..` resolved by their names (`/a/b/../c` is
/// `/a/c`; `..` at the root stays there), as users read a path. Symbolic
/// links are not followed.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The absolute, normalised file path a file connector uses: relative
/// paths resolve against `base` (the user's working directory for `sluice
/// run`; none on a shared cluster, where they are refused).
fn file_path(node: &NodeSpec, base: Option<&Path>) -> Result<PathBuf, ConnectorError> {
    let p = node.config("path").ok_or_else(|| {
        config_error(
            node,
            format!("{} needs config `path`", connector_name(node)),
        )
    })?;
    if p.is_empty() {
        return Err(config_error(node, "config `path` is empty"));
    }
    let p = Path::new(p);
    match base {
        _ if p.is_absolute() => Ok(normalize(p)),
        Some(base) => Ok(normalize(&base.join(p))),
        None => Err(config_error(
            node,
            format!("path `{}` must be absolute", p.display()),
        )),
    }
}

/// Opens connectors; owns the storage operator and the async runtime that
/// OpenDAL's blocking API runs on.
pub struct Connectors {
    fs: opendal::blocking::Operator,
    base: Option<PathBuf>,
}

impl Connectors {
    /// Connectors whose storage IO runs on `handle`; relative file paths
    /// resolve against `base`.
    pub fn new(
        handle: &tokio::runtime::Handle,
        base: Option<PathBuf>,
    ) -> Result<Self, opendal::Error> {
        let _guard = handle.enter();
        let op = opendal::Operator::new(opendal::services::Fs::default().root("/"))?;
        Ok(Connectors {
            fs: opendal::blocking::Operator::new(op)?,
            base,
        })
    }

    /// The same connectors with relative file paths resolving against
    /// `base` (on a shared cluster: the tenant's first file root).
    pub fn with_base(&self, base: Option<PathBuf>) -> Self {
        Connectors {
            fs: self.fs.clone(),
            base,
        }
    }

    /// Where relative file paths resolve.
    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    /// Checks a connector node against its configuration rules, the
    /// tenant's policy and the state of its storage, at submission time.
    /// For a file connector, returns its path as it will be used (absolute
    /// and normalised), for the plan to carry. A file sink's directory may
    /// hold earlier part files only if `resumed` says it is an output of the
    /// savepoint the job starts from.
    pub fn check(
        &self,
        node: &NodeSpec,
        connector: &str,
        policy: &Policy,
        resumed: &dyn Fn(&Path) -> bool,
    ) -> Result<Option<PathBuf>, ConnectorError> {
        let denied = |denied| ConnectorError::Denied {
            node: node.name.clone(),
            denied,
        };
        policy.check_connector(connector).map_err(denied)?;
        match connector {
            "file-source" => {
                let path = file_path(node, self.base())?;
                policy.check_path(&path).map_err(denied)?;
                let files = match file::input_files(&self.fs, &node.name, &path) {
                    Err(ConnectorError::Io { error, .. })
                        if error.kind() == opendal::ErrorKind::NotFound =>
                    {
                        return Err(config_error(
                            node,
                            format!("input `{}` does not exist", path.display()),
                        ));
                    }
                    other => other?,
                };
                if files.is_empty() {
                    return Err(config_error(
                        node,
                        format!(
                            "input directory `{}` holds no files to read (names starting with \
                             `.` or `_` are skipped)",
                            path.display()
                        ),
                    ));
                }
                Ok(Some(path))
            }
            "file-sink" => {
                let dir = file_path(node, self.base())?;
                policy.check_path(&dir).map_err(denied)?;
                file::check_output_dir(&self.fs, node, &dir, resumed(&dir))?;
                Ok(Some(dir))
            }
            "datagen" => {
                parse::<u64>(node, "count", None)?;
                parse::<u64>(node, "keys", Some(0))?;
                parse::<u64>(node, "rate", Some(0))?;
                let size = parse::<u64>(node, "value-bytes", Some(0))?;
                if size > MAX_GENERATED_VALUE {
                    return Err(config_error(
                        node,
                        format!(
                            "`value-bytes` is {size}; at most {MAX_GENERATED_VALUE} is allowed"
                        ),
                    ));
                }
                Ok(None)
            }
            "nexmark" => {
                nexmark_config(node)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Opens subtask `subtask` of a source node: from the beginning of its
    /// share (`restore` is `None`), or from the positions a checkpoint holds
    /// for it (several, or none at all, when the parallelism changed).
    pub fn source(
        &self,
        node: &NodeSpec,
        subtask: u32,
        parallelism: u32,
        restore: Option<&[Vec<u8>]>,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        let corrupt = |e: postcard::Error| {
            config_error(
                node,
                format!("the checkpointed source position is corrupt: {e}"),
            )
        };
        match connector_name(node) {
            "file-source" => {
                let path = file_path(node, self.base())?;
                let Some(restore) = restore else {
                    return Ok(Box::new(file::FileSource::open(
                        self.fs.clone(),
                        node,
                        path,
                        subtask,
                        parallelism,
                    )?));
                };
                let splits = restore
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| file::decode_splits(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(corrupt)?
                    .into_iter()
                    .flatten()
                    .collect();
                Ok(Box::new(file::FileSource::resume(
                    self.fs.clone(),
                    node,
                    path,
                    splits,
                )?))
            }
            "datagen" => {
                let count = parse(node, "count", None)?;
                let keys = parse(node, "keys", Some(0))?;
                let value_bytes =
                    parse::<u64>(node, "value-bytes", Some(0))?.min(MAX_GENERATED_VALUE) as usize;
                let rate = parse(node, "rate", Some(0))?;
                let generator = if let Some(restore) = restore {
                    let splits = decode_all::<Vec<datagen::Split>>(restore)
                        .map_err(corrupt)?
                        .into_iter()
                        .flatten()
                        .collect();
                    datagen::DataGen::resume(count, keys, value_bytes, splits)
                } else {
                    datagen::DataGen::new(count, keys, value_bytes, subtask, parallelism)
                };
                Ok(Box::new(generator.with_rate(rate)))
            }
            "nexmark" => {
                let config = nexmark_config(node)?;
                Ok(Box::new(match restore {
                    Some(restore) => nexmark::NexmarkSource::resume(
                        config,
                        decode_all::<Vec<datagen::Split>>(restore)
                            .map_err(corrupt)?
                            .into_iter()
                            .flatten()
                            .collect(),
                    ),
                    None => nexmark::NexmarkSource::new(config, subtask, parallelism),
                }))
            }
            other => Err(config_error(
                node,
                format!("`{other}` is not a source connector"),
            )),
        }
    }

    /// Opens subtask `subtask` of a sink node: afresh (removing whatever an
    /// earlier attempt of this subtask left), or from a checkpoint
    /// (publishing what it covers and removing what was written after it).
    pub fn sink(
        &self,
        node: &NodeSpec,
        subtask: u32,
        restore: Option<&SinkRestore>,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        match connector_name(node) {
            "file-sink" => {
                let restore = restore
                    .map(|r| {
                        r.states
                            .iter()
                            .filter(|s| !s.is_empty())
                            .map(|s| file::decode_sink_state(s))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|states| (r.tag.as_str(), states))
                    })
                    .transpose()
                    .map_err(|e| {
                        config_error(node, format!("the checkpointed sink state is corrupt: {e}"))
                    })?;
                Ok(Box::new(file::FileSink::open(
                    self.fs.clone(),
                    node,
                    file_path(node, self.base())?,
                    subtask,
                    restore,
                )?))
            }
            "print" => Ok(Box::new(simple::Print::stdout(subtask))),
            "blackhole" => Ok(Box::new(simple::Blackhole)),
            other => Err(config_error(
                node,
                format!("`{other}` is not a sink connector"),
            )),
        }
    }
}
