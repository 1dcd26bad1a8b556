//! The session cluster: the JobManager and TaskManager processes, the wire
//! protocol between them, and the REST API.
//!
//! The JobManager drives the sans-IO job core of `sluice-coord`; the
//! TaskManager runs tasks on the task core shared with the embedded
//! mini-cluster (`sluice_runtime::task`). Both speak QUIC with mutual TLS
//! through `sluice-transport`. Nothing here depends on the CLI.

#![warn(missing_docs)]

mod access;
pub mod api;
mod checkpoints;
mod compiles;
pub mod dataplane;
mod jars;
pub mod jobmanager;
mod members;
mod metrics;
mod placement;
pub mod protocol;
mod rest;
mod results;
pub mod server;
mod table;
pub mod taskmanager;
mod tenancy;
mod views;

pub use jobmanager::JobManagerConfig;
pub use server::Endpoints;
pub use tenancy::{AuthMode, DEFAULT_TENANT, TenancyConfig};

/// The largest `memory_mib` a policy run by a cluster process may set:
/// every process has one wasmtime engine, its instance pool sized for it.
pub const MAX_INSTANCE_MEMORY_MIB: u64 = 4096;

/// The wasm stack of every instance in a cluster process, KiB (wasmtime
/// sets it per engine): a policy's `stack_kib` may not be larger.
pub const INSTANCE_STACK_KIB: u64 = 1024;

/// Options of a cluster process's engine.
pub(crate) fn runtime_options(
    slots: u32,
    cache_dir: std::path::PathBuf,
    compiler: sluice_wasm::Compiler,
) -> sluice_wasm::RuntimeOptions {
    sluice_wasm::RuntimeOptions {
        slots,
        instances_per_slot: u32::try_from(taskmanager::INSTANCES_PER_SLOT).unwrap_or(8),
        cache_dir: Some(cache_dir),
        max_memory_mib: Some(MAX_INSTANCE_MEMORY_MIB),
        stack_kib: Some(INSTANCE_STACK_KIB),
        compiler,
        ..sluice_wasm::RuntimeOptions::default()
    }
}

/// `s` cut to at most `max` characters, the cut marked with `…`: for text
/// from users or guests (job names, arguments) in logs and tables.
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if s[i..].chars().nth(1).is_some() => {
            std::borrow::Cow::Owned(format!("{}…", &s[..i]))
        }
        _ => std::borrow::Cow::Borrowed(s),
    }
}

/// An error and its causes, joined with `: `, leaving out a cause whose
/// text the message before it already holds (libraries often put their
/// source into their own message): what logs and the CLI print.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
pub use taskmanager::{TaskManagerConfig, TaskManagerEndpoints};
