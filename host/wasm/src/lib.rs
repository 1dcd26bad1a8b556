//! The sandbox: loading, validating and running tenants' `.wasm` components
//! under wasmtime with their policy's limits.
//!
//! - [`Runtime`] owns the wasmtime engine (pooling allocator sized from the
//!   slot count, fuel and/or epoch interruption as the policy says) and the
//!   precompiled-artifact cache.
//! - [`Runtime::load`] validates a component: only imports from the allowed
//!   set (the Sluice contract and the parts of WASI that Rust's and Go's
//!   standard libraries need) and the contract's exports; anything else is
//!   rejected with the import's name.
//! - [`App`] runs the plan function and creates [`GuestChain`]s, one store
//!   per subtask. A trap poisons only that chain and comes back as a
//!   [`TaskError`] naming the task and the cause; the process carries on.
//!
//! It depends on the shared types and policies, never on the cluster crates.

#![warn(missing_docs)]

mod bindings;
mod cache;
mod capture;
mod error;
mod host;
mod instance;
mod validate;

pub use error::TaskName;
pub use error::{Cause, LoadError, PlanError, RuntimeError, TaskError};
pub use instance::{
    App, ChainSpec, GuestChain, GuestOutput, OperatorInfo, SourceOutput, StateChunk, TaskLabel,
};
pub use validate::ALLOWED_IMPORTS;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_policy::Policy;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::host::HostState;

/// How often the epoch advances when a policy sets `max_call_ms`.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sizing of a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Task slots of this process; the instance pool is sized from it.
    pub slots: u32,
    /// Component instances one slot may hold at once (with slot sharing, one
    /// per chained vertex of each job in the slot).
    pub instances_per_slot: u32,
    /// Where precompiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the cache directory may hold; least recently used entries
    /// are evicted past it.
    pub cache_max_bytes: u64,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            slots: 4,
            instances_per_slot: 8,
            cache_dir: None,
            cache_max_bytes: 1 << 30,
        }
    }
}

/// The wasmtime engine, linker and cache shared by every component loaded
/// with one policy.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub policy: Policy,
    pub cache: Option<cache::Cache>,
    epoch: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.epoch.take() {
            drop(stop);
            let _ = handle.join();
        }
    }
}

impl Runtime {
    /// Builds an engine for `policy`.
    pub fn new(policy: Policy, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let limits = &policy.limits;
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(limits.fuel_per_call.is_some());
        config.epoch_interruption(limits.max_call_ms.is_some());
        config.max_wasm_stack(usize::try_from(limits.stack_kib * 1024).unwrap_or(usize::MAX));
        let instances = options
            .slots
            .max(1)
            .saturating_mul(options.instances_per_slot.max(1))
            .saturating_add(8);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(16))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .max_memory_size(usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = match options.cache_dir {
            Some(dir) => Some(cache::Cache::open(dir, &engine, options.cache_max_bytes)?),
            None => None,
        };
        let epoch = limits.max_call_ms.is_some().then(|| {
            let (stop, ticks) = mpsc::channel::<()>();
            let engine = engine.clone();
            let handle = std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    // A timer, not synchronisation: the epoch is the clock the
                    // per-call deadline is measured in.
                    while let Err(mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(EPOCH_TICK)
                    {
                        engine.increment_epoch();
                    }
                })
                .expect("invariant: spawning the epoch thread succeeds");
            (stop, handle)
        });
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                policy,
                cache,
                epoch,
            }),
        })
    }

    /// The policy this runtime enforces.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Every import of a component with whether the sandbox allows it,
    /// without checking anything else (for `sluice validate`).
    pub fn imports(&self, wasm: &[u8]) -> Result<Vec<(String, bool)>, LoadError> {
        let (component, _) = App::compile(&self.inner, wasm)?;
        Ok(App::import_names(&self.inner, &component)
            .into_iter()
            .map(|name| {
                let allowed = validate::is_allowed(&name);
                (name, allowed)
            })
            .collect())
    }

    /// Validates and compiles (or loads from the cache) a component.
    pub fn load(&self, wasm: &[u8]) -> Result<App, LoadError> {
        App::load(self.inner.clone(), wasm)
    }
}
