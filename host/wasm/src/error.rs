//! Errors of the sandbox, one enum per boundary.

use std::fmt;

/// The engine or cache could not be set up (a host configuration problem;
/// not retryable without changing it).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the configuration.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// A policy this process cannot run as written.
    #[error("cannot run the policy here: {0}")]
    Policy(String),
    /// The cache directory is unusable.
    #[error("cannot use the component cache at {path}: {error}")]
    Cache {
        /// The directory.
        path: std::path::PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
}

/// A component that cannot be loaded. Never retryable: the user must fix the
/// component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a WebAssembly component at all, or malformed.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// Imports outside the sandbox's allowed set.
    #[error(
        "the component imports {} outside the sandbox: {}; Sluice operators may not use the network or the file system (use a host connector instead)",
        if .0.len() == 1 { "an interface" } else { "interfaces" },
        .0.join(", ")
    )]
    ForbiddenImports(Vec<String>),
    /// Declares more than the sandbox allows (checked before compiling).
    #[error("the component is over a sandbox limit, so it was not compiled: {0}")]
    OverLimit(String),
    /// The compiler process failed for a reason of the host's.
    #[error("cannot compile the component here: {0}")]
    Compiler(String),
    /// Does not export the contract's world.
    #[error(
        "the component does not implement the Sluice contract (world sluice:app/application, version 0.2.0 or 0.1.0): {0}; build it with the Sluice SDK"
    )]
    NotAnApplication(String),
}

/// Why a plan function did not produce a graph.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The application rejected the arguments.
    #[error("the application rejected the job's arguments: {0}")]
    InvalidArguments(String),
    /// The application reported a failure.
    #[error("the plan function failed: {0}")]
    Failed(String),
    /// The plan function trapped or hit a limit.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// What went wrong inside a guest call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Fuel ran out.
    OutOfFuel {
        /// The per-call limit.
        limit: u64,
    },
    /// The wall-clock deadline passed.
    Deadline {
        /// The per-call limit in ms.
        limit_ms: u64,
    },
    /// Linear memory would have grown beyond the limit.
    MemoryLimit {
        /// The limit in bytes.
        limit: u64,
        /// What the guest asked for.
        requested: u64,
    },
    /// The wasm stack overflowed.
    StackOverflow {
        /// The limit in KiB.
        limit_kib: u64,
    },
    /// An access out of linear memory's bounds deep in a recursion: almost
    /// surely the stack the guest's compiler keeps in linear memory (for
    /// Rust, 1 MiB below the data) overflowed.
    ShadowStackOverflow,
    /// The guest panicked with this message.
    Panic(String),
    /// Any other trap.
    Trap(String),
    /// The guest returned `error.failed`.
    Failed(String),
    /// The guest returned `error.invalid-config`.
    InvalidConfig(String),
    /// The guest returned data that breaks the contract.
    Malformed(String),
    /// The guest broke a limit on what it may ask of the host in one call
    /// (metric names, bytes passed to host imports).
    HostLimit(String),
    /// The call emitted more than the policy's `max_output_bytes_per_call`.
    OutputLimit {
        /// The limit in bytes.
        limit: u64,
        /// What the call emitted, counted the same way.
        emitted: u64,
        /// Records emitted.
        records: u64,
    },
    /// An instance or its memory would pass a cap of its tenant or job on
    /// this process (the message names the cap).
    Cap(String),
    /// The task was cancelled while the call ran.
    Cancelled,
    /// The chain already trapped and cannot be called again.
    Poisoned,
}

impl Cause {
    /// Whether calling the guest again on the same input would fail the
    /// same way: limits on what one call may use, traps and the contract
    /// are deterministic; a wall-clock deadline depends on the machine's load.
    /// A cancellation may be different on another try. A cap of the
    /// tenant on a TaskManager counts as repeating: the job fails at once
    /// with the cap named (restarting into it would only churn), and the
    /// tenant lowers the parallelism or ends other jobs.
    pub fn would_repeat(&self) -> bool {
        !matches!(self, Cause::Deadline { .. } | Cause::Cancelled)
    }
}

/// Names a task in errors: "task `read -> split` subtask 2/4".
#[derive(Clone, Debug, Default)]
pub struct TaskName {
    /// What the task runs (operators or "plan function").
    pub what: String,
    /// Subtask and parallelism, if it is a subtask.
    pub subtask: Option<(u32, u32)>,
    /// The policy that set the limits.
    pub policy: String,
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subtask {
            Some((s, p)) => write!(f, "operator `{}` subtask {}/{}", self.what, s + 1, p),
            None => f.write_str(&self.what),
        }
    }
}

/// A guest call failed. A trap poisons the chain (the store is dropped and
/// the task fails); the process stays healthy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TaskError {
    /// Which task.
    pub task: TaskName,
    /// Why.
    pub cause: Cause,
}

impl TaskError {
    fn describe(&self) -> String {
        let t = &self.task;
        let policy = &t.policy;
        match &self.cause {
            Cause::OutOfFuel { limit } => format!(
                "{t} ran out of fuel (limit {limit} per call, policy `{policy}`); raise `fuel_per_call` or make the operator cheaper"
            ),
            Cause::Deadline { limit_ms } => format!(
                "{t} exceeded its time limit ({limit_ms} ms per call, policy `{policy}`); raise `max_call_ms` or make the operator cheaper"
            ),
            Cause::MemoryLimit { limit, requested } => format!(
                "{t} exceeded its memory limit ({} MiB, policy `{policy}`; it asked for {} MiB); raise `memory_mib` or keep less in memory",
                limit >> 20,
                requested.div_ceil(1 << 20)
            ),
            Cause::StackOverflow { limit_kib } => format!(
                "{t} overflowed its stack ({limit_kib} KiB, policy `{policy}`); raise `stack_kib` or recurse less"
            ),
            Cause::ShadowStackOverflow => format!(
                "{t} overflowed the stack in its linear memory (the one its compiler reserves, \
                 1 MiB by default for Rust: a memory access out of bounds, deep in a \
                 recursion); recurse less or keep less on the stack, or link the component \
                 with a larger one (`-C link-arg=-zstack-size=BYTES`)"
            ),
            Cause::Panic(msg) => format!("{t} panicked: {msg}"),
            Cause::Trap(msg) => format!("{t} trapped: {msg}"),
            Cause::Failed(msg) => format!("{t} failed: {msg}"),
            Cause::InvalidConfig(msg) => format!("{t} rejected its configuration: {msg}"),
            Cause::Malformed(msg) => format!("{t} broke the contract: {msg}"),
            Cause::HostLimit(msg) => format!("{t} broke a host-call limit: {msg}"),
            Cause::OutputLimit {
                limit,
                emitted,
                records,
            } => format!(
                "{t} emitted {records} records ({emitted} bytes counting {} per record) in one call, over its output limit ({limit} bytes per call, policy `{policy}`); raise `max_output_bytes_per_call` or emit less per call",
                sluice_policy::RECORD_OVERHEAD
            ),
            Cause::Cap(msg) => format!("{t} was refused by a per-process cap: {msg}"),
            Cause::Cancelled => format!("{t} was cancelled during a call"),
            Cause::Poisoned => format!("{t} was called after it trapped"),
        }
    }
}
