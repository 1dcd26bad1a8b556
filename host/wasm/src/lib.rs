//! The sandbox: loading, validating and running tenants' `.wasm` components
//! under wasmtime with their policy's limits.
//!
//! - [`Runtime`] is a policy over the process's one wasmtime engine
//!   (pooling allocator sized from the slot count, fuel and epoch
//!   interruption always on, limits set per store) and its
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
mod compile;
mod contract;
mod error;
mod host;
mod instance;
mod validate;
mod waits;

pub use compile::{ChildCompiler, Compiler, compile_worker};
pub use error::TaskName;
pub use error::{Cause, LoadError, PlanError, RuntimeError, TaskError};
pub use instance::{
    App, CallControl, ChainSpec, GuestChain, GuestOutput, OperatorInfo, SourceOutput, StateChunk,
    TaskLabel,
};
pub use validate::ALLOWED_IMPORTS;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_policy::Policy;
use wasmtime::component::Linker;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::host::HostState;

/// How often the epoch advances: the granularity of per-call deadlines,
/// of cancelling a running call, and of handing a core to another tenant
/// in the middle of a long call.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Bytes of a freed instance's linear memory, and of its tables, reset in
/// place and kept resident for the next instance of its pool slot.
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

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
    /// The largest `memory_mib` any policy run by this process may set
    /// (the instance pool is sized for it); `None`: the first policy's.
    pub max_memory_mib: Option<u64>,
    /// The wasm stack of every instance in this process, KiB (wasmtime
    /// sets it per engine); a policy asking for more is refused. `None`:
    /// the first policy's.
    pub stack_kib: Option<u64>,
    /// Where components are compiled (in a bounded child process on a
    /// cluster; that needs `cache_dir`).
    pub compiler: Compiler,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            slots: 4,
            instances_per_slot: 8,
            cache_dir: None,
            cache_max_bytes: 1 << 30,
            max_memory_mib: None,
            stack_kib: None,
            compiler: Compiler::InProcess,
        }
    }
}

/// A policy over the process's one wasmtime engine. Cheap to clone; every
/// runtime made from another with [`Runtime::with_policy`] shares its
/// engine, instance pool, epoch ticker and cache.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// The engine and what goes with it: one per process.
pub(crate) struct Engine {
    pub engine: wasmtime::Engine,
    pub linker: Linker<HostState>,
    pub cache: Option<cache::Cache>,
    pub max_memory_bytes: u64,
    pub stack_kib: u64,
    pub compiler: Compiler,
    epoch: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// One policy over the engine.
pub(crate) struct Inner {
    pub engine: Arc<Engine>,
    pub policy: Policy,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.epoch.take() {
            drop(stop);
            let _ = handle.join();
        }
    }
}

impl Runtime {
    /// Builds the engine, sized by `options` (and `policy` where they
    /// leave a size open), and a runtime for `policy` over it.
    ///
    /// Fuel and epoch interruption are always on: fuel meters every call
    /// (policies without `fuel_per_call` get an unlimited tank), the epoch
    /// lets a call be cancelled, bounded in wall-clock time, or paused to
    /// hand its core to another tenant.
    pub fn new(policy: Policy, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let max_memory_bytes = options
            .max_memory_mib
            .map_or(policy.limits.memory_bytes(), |m| m.saturating_mul(1 << 20));
        let stack_kib = options.stack_kib.unwrap_or(policy.limits.stack_kib);
        let mut config = engine_config(stack_kib);
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
            .max_memory_size(usize::try_from(max_memory_bytes).unwrap_or(usize::MAX))
            // A freed slot's memory and tables are reset in place (only
            // the pages the last instance touched, found with PAGEMAP_SCAN
            // where the kernel has it) instead of being unmapped: the next
            // instance takes no page faults and the process no TLB
            // shootdowns. It cuts an operator's start from about 28 µs to
            // about 11 (benchmarks/README.md, "Scale"); unused warm slots
            // hold at most this much each.
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = match options.cache_dir {
            Some(dir) => Some(cache::Cache::open(dir, &engine, options.cache_max_bytes)?),
            None => None,
        };
        let (stop, ticks) = mpsc::channel::<()>();
        let ticker = engine.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                // A timer, not synchronisation: the epoch is the clock that
                // running calls look at (see EPOCH_TICK).
                while let Err(mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(EPOCH_TICK) {
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        let engine = Arc::new(Engine {
            engine,
            linker,
            cache,
            max_memory_bytes,
            stack_kib,
            compiler: options.compiler,
            epoch: Some((stop, handle)),
        });
        Runtime::over(engine, policy)
    }

    /// A runtime for another policy over the same engine; refused when the
    /// policy asks for more memory per instance or more stack than the
    /// engine was built for.
    pub fn with_policy(&self, policy: Policy) -> Result<Self, RuntimeError> {
        Runtime::over(self.inner.engine.clone(), policy)
    }

    fn over(engine: Arc<Engine>, policy: Policy) -> Result<Self, RuntimeError> {
        let limits = &policy.limits;
        if limits.memory_bytes() > engine.max_memory_bytes {
            return Err(RuntimeError::Policy(format!(
                "policy `{}` sets memory_mib = {}, more than the {} MiB this process runs instances with (its `--max-memory-mib`)",
                policy.name,
                limits.memory_mib,
                engine.max_memory_bytes >> 20
            )));
        }
        if limits.stack_kib > engine.stack_kib {
            return Err(RuntimeError::Policy(format!(
                "policy `{}` sets stack_kib = {}, more than the {} KiB stack this process runs instances with",
                policy.name, limits.stack_kib, engine.stack_kib
            )));
        }
        Ok(Runtime {
            inner: Arc::new(Inner { engine, policy }),
        })
    }

    /// The largest `memory_mib` a policy over this engine may set.
    pub fn max_memory_mib(&self) -> u64 {
        self.inner.engine.max_memory_bytes >> 20
    }

    /// The policy this runtime enforces.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Every import of a component with whether the sandbox allows it,
    /// without checking anything else (for `sluice validate`).
    pub fn imports(&self, wasm: &[u8]) -> Result<Vec<(String, bool)>, LoadError> {
        let (component, _) = App::compile(&self.inner, wasm, &mut CompileCost::default())?;
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
        self.load_metered(wasm).0
    }

    /// [`Runtime::load`], and what compiling cost, whether it succeeded or
    /// not (a component refused at a compile limit cost up to the limit):
    /// what a process bills the component's owner for.
    pub fn load_metered(&self, wasm: &[u8]) -> (Result<App, LoadError>, CompileCost) {
        let mut cost = CompileCost::default();
        let loaded = App::load(self.inner.clone(), wasm, &mut cost);
        (loaded, cost)
    }
}

/// What loading a component cost in compilation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompileCost {
    /// Whether it was compiled (false: found in the cache, or refused
    /// before compiling).
    pub compiled: bool,
    /// CPU time of the compilation (the compiler process's, or the calling
    /// thread's when compiled in-process).
    pub cpu: Duration,
}

/// The settings every Sluice engine shares; compiled artifacts depend on
/// them (the child compiler uses them too, without the instance pool).
pub(crate) fn engine_config(stack_kib: u64) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(usize::try_from(stack_kib.saturating_mul(1024)).unwrap_or(usize::MAX));
    // Guest functions named for `perf` (benchmarks/README.md: profiling).
    match std::env::var("SLUICE_WASM_PROFILER").as_deref() {
        Err(_) | Ok("" | "none") => {}
        Ok("perfmap") => {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        Ok(other) => tracing::warn!(
            "SLUICE_WASM_PROFILER={other} is not one of perfmap, none: profiling stays off"
        ),
    }
    config
}

/// A process's engine, made on first use, and a runtime over it per policy
/// (rebuilt when a policy of the same name changes).
pub struct Runtimes {
    options: RuntimeOptions,
    state: std::sync::Mutex<(Option<Runtime>, std::collections::HashMap<String, Runtime>)>,
}

impl Runtimes {
    /// No engine yet; `options` size it when the first policy comes.
    pub fn new(options: RuntimeOptions) -> Self {
        Runtimes {
            options,
            state: std::sync::Mutex::new((None, std::collections::HashMap::new())),
        }
    }

    /// The runtime for `policy`, and whether it is new because the limits
    /// of a policy of that name changed (what was loaded under the old
    /// ones is stale).
    pub fn get(&self, policy: &Policy) -> Result<(Runtime, bool), RuntimeError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (base, by_policy) = &mut *state;
        // Only the limits matter here (quotas, e.g. a tenant's file roots,
        // are checked elsewhere and differ between tenants of one policy).
        if let Some(r) = by_policy.get(&policy.name)
            && r.policy().limits == policy.limits
        {
            return Ok((r.clone(), false));
        }
        let runtime = match base {
            Some(b) => b.with_policy(policy.clone())?,
            None => {
                let r = Runtime::new(policy.clone(), self.options.clone())?;
                *base = Some(r.clone());
                r
            }
        };
        let changed = by_policy
            .insert(policy.name.clone(), runtime.clone())
            .is_some();
        Ok((runtime, changed))
    }
}
