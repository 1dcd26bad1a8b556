//! A loaded application and the per-subtask chains it runs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sluice_types::{Batch, JobGraph, OperatorKind};
use wasmtime::component::{Component, ResourceAny};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::Inner;
use crate::contract::{AppError, Call, Guest as Bindings, Pre, RawOutput};
use crate::error::{Cause, LoadError, PlanError, TaskError, TaskName};
use crate::host::{GuestLog, HostState};
use crate::validate::check_imports;

/// An exported operator, as `operators()` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorInfo {
    /// Export name.
    pub name: String,
    /// Kind.
    pub kind: OperatorKind,
    /// One-line description.
    pub description: String,
}

/// Tells a running call its task was cancelled.
pub(crate) type CancelCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a chain's instance answers to besides its policy.
#[derive(Clone, Default)]
pub struct CallControl {
    /// Accounts the instance and its memory are counted against (its
    /// tenant's and its job's on this process), each with its caps.
    pub accounts: Vec<sluice_share::Account>,
    /// Returns true once the task is cancelled: a call running then is
    /// stopped within an epoch tick, whatever the policy.
    pub cancelled: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

/// One operator of a chain to create.
pub type OperatorSpec = (String, String, Vec<(String, String)>);

/// A state chunk of a chain (see the WIT `state-chunk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChunk {
    /// Operator index in the chain.
    pub operator: u32,
    /// Key group, for keyed state.
    pub key_group: Option<u32>,
    /// Serialised state.
    pub data: Vec<u8>,
}

/// Everything needed to create one subtask's chain.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    /// `(operator export, node name, config)` in chain order.
    pub operators: Vec<OperatorSpec>,
    /// Subtask index.
    pub subtask: u32,
    /// Parallelism.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// State to restore.
    pub restore: Vec<StateChunk>,
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct GuestOutput {
    /// Records emitted by the chain's last operator (validated).
    pub records: Batch,
    /// The earliest pending processing-time timer.
    pub next_processing_timer: Option<i64>,
}

/// What a source chain's poll produced.
#[derive(Debug, Default)]
pub struct SourceOutput {
    /// Records and timers.
    pub output: GuestOutput,
    /// A watermark the source asserts.
    pub watermark: Option<i64>,
    /// The source is exhausted.
    pub finished: bool,
}

/// Names a task in errors and logs.
pub type TaskLabel = TaskName;

/// A validated, compiled application, ready to instantiate. Cheap to clone
/// and shareable between threads.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
    pre: Pre,
    digest: String,
    imports: Vec<String>,
}

impl App {
    /// Compiles (or loads from the cache) without checking the contract;
    /// what a compilation cost is added to `cost`.
    pub(crate) fn compile(
        inner: &Inner,
        wasm: &[u8],
        cost: &mut crate::CompileCost,
    ) -> Result<(Component, String), LoadError> {
        let digest = hex::encode(Sha256::digest(wasm));
        if let Some(c) = inner
            .engine
            .cache
            .as_ref()
            .and_then(|c| c.get(&inner.engine.engine, &digest))
        {
            return Ok((c, digest));
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(LoadError::Invalid(
                "the file does not start with the WebAssembly magic bytes `\\0asm`".into(),
            ));
        }
        if let (crate::Compiler::Child(child), Some(cache)) =
            (&inner.engine.compiler, &inner.engine.cache)
        {
            cost.compiled = true;
            child.compile(wasm, &digest, &cache.path(&digest), &mut cost.cpu)?;
            let c = cache.get(&inner.engine.engine, &digest).ok_or_else(|| {
                LoadError::Compiler("the compiler process's output does not load".into())
            })?;
            cache.evict(&cache.path(&digest));
            return Ok((c, digest));
        }
        cost.compiled = true;
        let before = crate::compile::thread_cpu();
        let compiled = Component::new(&inner.engine.engine, wasm);
        // Compiling in-process may use more threads; this one's is counted.
        cost.cpu += crate::compile::thread_cpu().saturating_sub(before);
        let c = compiled.map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        if let Some(cache) = &inner.engine.cache {
            cache.put(&digest, &c);
        }
        Ok((c, digest))
    }

    /// The import names of a compiled component.
    pub(crate) fn import_names(inner: &Inner, component: &Component) -> Vec<String> {
        component
            .component_type()
            .imports(&inner.engine.engine)
            .map(|(n, _)| n.to_owned())
            .collect()
    }

    pub(crate) fn load(
        inner: Arc<Inner>,
        wasm: &[u8],
        cost: &mut crate::CompileCost,
    ) -> Result<Self, LoadError> {
        crate::validate::precheck(wasm, inner.policy.limits.memory_bytes())?;
        let (component, digest) = Self::compile(&inner, wasm, cost)?;
        let imports = Self::import_names(&inner, &component);
        check_imports(imports.iter().map(String::as_str))?;
        let instance_pre = inner
            .engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::NotAnApplication(format!("{e:#}")))?;
        let pre = Pre::new(&inner.engine.engine, &component, instance_pre)
            .map_err(|e| LoadError::NotAnApplication(format!("{e:#}")))?;
        Ok(App {
            inner,
            pre,
            digest,
            imports,
        })
    }

    /// SHA-256 of the component's bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The policy the app was loaded under (its limits apply to its chains).
    pub fn policy(&self) -> &sluice_policy::Policy {
        &self.inner.policy
    }

    /// The interfaces the component imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    fn instantiate(
        &self,
        name: &TaskName,
        control: &CallControl,
    ) -> Result<(Store<HostState>, Bindings), TaskError> {
        let error = |cause| TaskError {
            task: name.clone(),
            cause,
        };
        // Counted before the pool gives out an instance: a tenant at its
        // cap cannot take instances (or memory) other tenants are due.
        let claim = sluice_share::Claim::instance(&control.accounts)
            .map_err(|e| error(Cause::Cap(e.to_string())))?;
        let mut state = HostState::new(&self.inner.policy.limits, claim);
        state.cancelled = control.cancelled.clone();
        let mut store = Store::new(&self.inner.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(on_epoch);
        let mut sandbox = Sandbox {
            store,
            name: name.clone(),
            inner: self.inner.clone(),
            poisoned: false,
            fuel_consumed: 0,
        };
        let bindings = sandbox.call(|store| self.pre.instantiate(store).map(Ok))?;
        Ok((sandbox.store, bindings))
    }

    fn sandbox(&self, what: &str) -> Result<(Sandbox, Bindings), TaskError> {
        let name = TaskName {
            what: what.to_owned(),
            subtask: None,
            policy: self.inner.policy.name.clone(),
        };
        let (store, bindings) = self.instantiate(&name, &CallControl::default())?;
        Ok((
            Sandbox {
                store,
                name,
                inner: self.inner.clone(),
                poisoned: false,
                fuel_consumed: 0,
            },
            bindings,
        ))
    }

    /// The operators the application exports (runs a sandboxed instance).
    pub fn operators(&self) -> Result<Vec<OperatorInfo>, TaskError> {
        let (mut sb, b) = self.sandbox("the application's `operators` function")?;
        sb.call(|s| b.operators(s))
    }

    /// Runs the plan function, sandboxed with the policy's limits.
    pub fn plan(&self, args: &[(String, String)]) -> Result<JobGraph, PlanError> {
        let (mut sb, b) = self.sandbox("the application's plan function")?;
        match sb.call(|s| b.plan(s, args)) {
            Ok(g) => Ok(g),
            Err(TaskError {
                cause: Cause::InvalidConfig(m),
                ..
            }) => Err(PlanError::InvalidArguments(m)),
            Err(TaskError {
                cause: Cause::Failed(m),
                ..
            }) => Err(PlanError::Failed(m)),
            Err(e) => Err(PlanError::Task(e)),
        }
    }

    /// Instantiates a chain for one subtask, counted against `control`'s
    /// accounts and stopped mid-call once it reports the task cancelled.
    pub fn chain(
        &self,
        name: TaskName,
        spec: ChainSpec,
        control: &CallControl,
    ) -> Result<GuestChain, TaskError> {
        let (store, bindings) = self.instantiate(&name, control)?;
        let mut sandbox = Sandbox {
            store,
            name,
            inner: self.inner.clone(),
            poisoned: false,
            fuel_consumed: 0,
        };
        let handle = sandbox.call(|s| bindings.create(s, spec))?;
        Ok(GuestChain {
            sandbox,
            bindings,
            handle,
        })
    }
}

/// One store and the bookkeeping around every call into it.
struct Sandbox {
    store: Store<HostState>,
    name: TaskName,
    inner: Arc<Inner>,
    poisoned: bool,
    /// Fuel burnt by all calls so far (every call is metered).
    fuel_consumed: u64,
}

impl Sandbox {
    /// Calls into the guest with fresh per-call limits, then forwards its
    /// output to the log and classifies any failure.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>) -> Call<R>,
    ) -> Result<R, TaskError> {
        if self.poisoned {
            return Err(self.error(Cause::Poisoned));
        }
        let limits = &self.inner.policy.limits;
        let tank = limits.fuel_per_call.unwrap_or(u64::MAX);
        self.store
            .set_fuel(tank)
            .expect("invariant: the engine meters fuel");
        self.store.set_epoch_deadline(1);
        self.store.data_mut().call_deadline = limits
            .max_call_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.store.data_mut().now_ms = now;
        self.store.data_mut().limiter.refused_growth = None;
        self.store.data_mut().limiter.refused_cap = None;
        self.store.data_mut().begin_call();
        let result = f(&mut self.store);
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_consumed = self.fuel_consumed.saturating_add(tank.saturating_sub(left));
        let stderr = self.forward_output();
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(AppError::Failed(m))) => Err(self.error(Cause::Failed(m))),
            Ok(Err(AppError::InvalidConfig(m))) => Err(self.error(Cause::InvalidConfig(m))),
            Err(e) => {
                self.poisoned = true;
                let cause = self.classify(&e, &stderr);
                Err(self.error(cause))
            }
        }
    }

    fn error(&self, cause: Cause) -> TaskError {
        TaskError {
            task: self.name.clone(),
            cause,
        }
    }

    fn classify(&self, e: &wasmtime::Error, stderr: &str) -> Cause {
        let limits = &self.inner.policy.limits;
        // The trap itself first: a call may be refused memory, cope, and
        // then run out of fuel.
        if let Some(limit) = e.downcast_ref::<crate::host::HostLimit>() {
            return Cause::HostLimit(limit.0.clone());
        }
        match e.downcast_ref::<Interrupted>() {
            Some(Interrupted::Cancelled) => return Cause::Cancelled,
            Some(Interrupted::Deadline) => {
                return Cause::Deadline {
                    limit_ms: limits.max_call_ms.unwrap_or(0),
                };
            }
            None => {}
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return Cause::OutOfFuel {
                    limit: limits.fuel_per_call.unwrap_or(0),
                };
            }
            Some(Trap::StackOverflow) => {
                return Cause::StackOverflow {
                    limit_kib: limits.stack_kib,
                };
            }
            Some(Trap::MemoryOutOfBounds) if wrapped_stack_pointer(e) => {
                return Cause::ShadowStackOverflow;
            }
            _ => {}
        }
        if let Some(cap) = &self.store.data().limiter.refused_cap {
            return Cause::Cap(cap.to_string());
        }
        if let Some(requested) = self.store.data().limiter.refused_growth {
            return Cause::MemoryLimit {
                limit: limits.memory_bytes(),
                requested: requested as u64,
            };
        }
        match panic_message(stderr) {
            Some(msg) => Cause::Panic(msg),
            None => Cause::Trap(format!("{e:#}")),
        }
    }

    /// Sends the guest's stdout, stderr and log calls to the host log;
    /// returns stderr (for panic messages).
    fn forward_output(&mut self) -> String {
        let data = self.store.data_mut();
        let (out, out_dropped) = data.stdout.take();
        let (err, err_dropped) = data.stderr.take();
        let dropped = out_dropped + err_dropped + std::mem::take(&mut data.logs_dropped);
        // Most calls print nothing: the task's name is formatted (every
        // call, per batch) only when there is something to log.
        if out.is_empty() && err.is_empty() && data.logs.is_empty() && dropped == 0 {
            return String::new();
        }
        let task = self.name.to_string();
        for line in String::from_utf8_lossy(&out).lines() {
            tracing::info!(task = %task, stream = "stdout", "{line}");
        }
        let err = String::from_utf8_lossy(&err).into_owned();
        for line in err.lines() {
            tracing::info!(task = %task, stream = "stderr", "{line}");
        }
        for GuestLog { level, message } in data.logs.drain(..) {
            match level {
                "error" => tracing::error!(task = %task, "{message}"),
                "warn" => tracing::warn!(task = %task, "{message}"),
                "info" => tracing::info!(task = %task, "{message}"),
                _ => tracing::debug!(task = %task, "{message}"),
            }
        }
        if dropped > 0 {
            tracing::warn!(task = %task, dropped, "guest output over the per-call cap was dropped");
        }
        err
    }
}

/// Why the epoch callback stopped a call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Interrupted {
    #[error("the task was cancelled")]
    Cancelled,
    #[error("the call's deadline passed")]
    Deadline,
}

/// Runs on every epoch tick while a guest runs: stops a cancelled task's
/// call and one past its deadline, and lets the fair gate hand the core to
/// another tenant (time spent waiting for it back does not count against
/// the call's deadline).
fn on_epoch(mut ctx: wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    let data = ctx.data_mut();
    if data.cancelled.as_ref().is_some_and(|c| c()) {
        return Err(Interrupted::Cancelled.into());
    }
    if data.call_deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(Interrupted::Deadline.into());
    }
    let before = Instant::now();
    sluice_share::yield_point();
    if let Some(d) = data.call_deadline.as_mut() {
        *d += before.elapsed();
    }
    Ok(UpdateDeadline::Continue(1))
}

/// The message of a Rust panic as the default hook prints it to stderr.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let rest = &stderr[start + "panicked at ".len()..];
    let (location, message) = rest.split_once(":\n").unwrap_or((rest, ""));
    let message: Vec<&str> = message
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    Some(format!(
        "{} (at {})",
        message.join(" ").trim(),
        location.trim()
    ))
}

/// A subtask's chain: one store, one `chain` resource. After a trap every
/// call fails with [`Cause::Poisoned`]; drop it and create a new one.
pub struct GuestChain {
    sandbox: Sandbox,
    bindings: Bindings,
    handle: ResourceAny,
}

impl GuestChain {
    /// Whether a trap has poisoned this chain.
    pub fn is_poisoned(&self) -> bool {
        self.sandbox.poisoned
    }

    /// Fuel burnt by every call into this chain so far (calls are metered
    /// whether or not the policy limits fuel).
    pub fn fuel_consumed(&self) -> u64 {
        self.sandbox.fuel_consumed
    }

    /// Bytes of linear memory this chain's instance holds.
    pub fn memory_bytes(&self) -> u64 {
        self.sandbox.store.data().limiter.memory_bytes as u64
    }

    /// Takes the counters the guest added to since the last call to this.
    pub fn take_counters(&mut self) -> std::collections::BTreeMap<String, u64> {
        std::mem::take(&mut self.sandbox.store.data_mut().counters)
    }

    /// Runs a batch through the chain.
    pub fn process(&mut self, input: u32, batch: Batch) -> Result<GuestOutput, TaskError> {
        let (b, h) = (&self.bindings, self.handle);
        let out = self.sandbox.call(|s| b.process(s, h, input, batch))?;
        self.output(out)
    }

    /// Polls a source chain for up to `max` records.
    pub fn poll_source(&mut self, max: u32) -> Result<SourceOutput, TaskError> {
        let (b, h) = (&self.bindings, self.handle);
        let out = self.sandbox.call(|s| b.poll_source(s, h, max))?;
        Ok(SourceOutput {
            output: self.output(out.output)?,
            watermark: out.watermark,
            finished: out.finished,
        })
    }

    /// The watermark advanced.
    pub fn advance_watermark(&mut self, wm: i64) -> Result<GuestOutput, TaskError> {
        let (b, h) = (&self.bindings, self.handle);
        let out = self.sandbox.call(|s| b.advance_watermark(s, h, wm))?;
        self.output(out)
    }

    /// Processing time reached `now`.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<GuestOutput, TaskError> {
        let (b, h) = (&self.bindings, self.handle);
        let out = self
            .sandbox
            .call(|s| b.advance_processing_time(s, h, now))?;
        self.output(out)
    }

    /// All inputs ended.
    pub fn end_of_input(&mut self) -> Result<GuestOutput, TaskError> {
        let (b, h) = (&self.bindings, self.handle);
        let out = self.sandbox.call(|s| b.end_of_input(s, h))?;
        self.output(out)
    }

    /// Snapshots every operator's state.
    pub fn snapshot(&mut self, checkpoint: u64) -> Result<Vec<StateChunk>, TaskError> {
        let (b, h) = (&self.bindings, self.handle);
        self.sandbox.call(|s| b.snapshot(s, h, checkpoint))
    }

    fn output(&mut self, out: RawOutput) -> Result<GuestOutput, TaskError> {
        // The batch is already in host memory (as large as the guest's
        // memory allows at most); over the cap it goes no further.
        let limit = self.sandbox.inner.policy.limits.max_output_bytes_per_call;
        let records = out.records.records();
        let emitted = (out.records.data.len() as u64)
            .saturating_add(records.saturating_mul(sluice_policy::RECORD_OVERHEAD));
        if emitted > limit {
            self.sandbox.poisoned = true;
            return Err(self.sandbox.error(Cause::OutputLimit {
                limit,
                emitted,
                records,
            }));
        }
        let records = out
            .records
            .into_batch()
            .map_err(|e| self.sandbox.error(Cause::Malformed(e)))?;
        records
            .validate()
            .map_err(|e| self.sandbox.error(Cause::Malformed(e.to_string())))?;
        Ok(GuestOutput {
            records,
            next_processing_timer: out.next_processing_timer,
        })
    }
}

/// Whether an out-of-bounds access looks like an overflow of the stack a
/// guest's compiler keeps in linear memory (LLVM puts it first, growing
/// down towards address 0, so an overflow wraps below 0): the fault address
/// just below 4 GiB when Wasmtime reports one ("memory fault at wasm address
/// 0x…"), else a trap deep in a recursion — the captured backtrace full and
/// made of at most three functions.
fn wrapped_stack_pointer(e: &wasmtime::Error) -> bool {
    const WRAPPED: u64 = 0xFFF0_0000;
    let faulted_high = e.chain().any(|cause| {
        cause
            .to_string()
            .strip_prefix("memory fault at wasm address 0x")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|addr| (WRAPPED..1 << 32).contains(&addr))
    });
    let recursing = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .is_some_and(|bt| {
            let frames = bt.frames();
            let functions: std::collections::BTreeSet<u32> =
                frames.iter().map(|f| f.func_index()).collect();
            frames.len() >= 16 && functions.len() <= 3
        });
    faulted_high || recursing
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_extracted_from_the_default_hook_output() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:36:17:\noperator gave up on record \"0\"\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("operator gave up on record \"0\" (at src/lib.rs:36:17)")
        );
        assert_eq!(panic_message("all fine"), None);
    }
}
