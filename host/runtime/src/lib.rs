//! The embedded mini-cluster behind `sluice run`: the JobManager core
//! (`sluice-coord`) and one TaskManager's task core (`sluice-task`) in one
//! process, with in-process channels instead of QUIC.
//!
//! Each subtask runs on its own thread. Channels between subtasks are
//! bounded queues of batches, so a slow consumer holds back its producers
//! (backpressure) and memory stays bounded. The driver feeds task status
//! reports into the coordinator and carries out its commands.

#![warn(missing_docs)]

mod components;
mod local_checkpoints;
mod read_ahead;
pub mod snapshot;
pub mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use sluice_connectors::{ConnectorError, Connectors};
use sluice_coord::{Command, ExecutionGraph, Job, JobStatus, SchedulingError, TaskId, TaskStatus};
use sluice_policy::Policy;
use sluice_types::{Event, GraphError, Implementation, JobGraph, JobId, OperatorKind, keygroup};
use sluice_wasm::{App, LoadError, PlanError, Runtime, RuntimeOptions};

pub use components::{Components, MAX_LINKS, check_link_count, check_link_name};

/// Batches a channel holds before its sender blocks.
const CHANNEL_CAPACITY: usize = 8;
/// How often the observer hears about progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// How often the loop drives checkpoints, at the least.
const CHECKPOINT_TICK: Duration = Duration::from_millis(20);

/// Why a job could not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cluster could not be set up.
    #[error("cannot start the mini-cluster: {0}")]
    Setup(String),
    /// The policy refuses the job.
    #[error(transparent)]
    Denied(#[from] sluice_policy::Denied),
    /// The job cannot start from the savepoint it names.
    #[error("{0}")]
    Savepoint(String),
    /// The component was rejected.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The plan function failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The graph cannot run.
    #[error("the job graph is invalid: {0}")]
    Graph(GraphError),
    /// A connector node is misconfigured or not allowed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// Not enough slots.
    #[error(transparent)]
    Scheduling(#[from] SchedulingError),
    /// The job ran and failed.
    #[error("job failed: {message}")]
    Failed {
        /// The root cause.
        message: String,
        /// How far it got.
        progress: Box<Progress>,
    },
    /// The job was cancelled (an interrupt).
    #[error("the job was cancelled")]
    Cancelled(Box<Progress>),
}

// The graph error is in the message, so it is not also a `source`.
impl From<GraphError> for RunError {
    fn from(e: GraphError) -> Self {
        RunError::Graph(e)
    }
}

/// Records counted at one node of the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Node name.
    pub name: String,
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
}

/// A snapshot of a running (or finished) job.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Time since the job started.
    pub elapsed: Duration,
    /// Job status.
    pub status: JobStatus,
    /// Per node, in graph order.
    pub nodes: Vec<NodeCounts>,
    /// Subtasks running, finished, and in all.
    pub tasks: TaskTally,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Where the job's checkpoints are kept after it ended (a failed job's),
    /// as the location of the newest one.
    pub kept_checkpoint: Option<String>,
}

/// How many of a job's subtasks are where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTally {
    /// Running now.
    pub running: u32,
    /// Done with their input.
    pub finished: u32,
    /// All subtasks.
    pub total: u32,
}

/// A savepoint (or a kept checkpoint) to start a local run from.
pub struct ResumePoint {
    /// The storage it is in.
    pub storage: sluice_state::Storage,
    /// Its metadata.
    pub metadata: snapshot::CheckpointMetadata,
    /// Its location, as given.
    pub location: String,
}

/// What a run may be told while it runs.
#[derive(Default)]
pub struct RunControl<'a> {
    /// A message here cancels the job (e.g. Ctrl-C).
    pub interrupt: Option<&'a Receiver<()>>,
    /// Start from this savepoint (the job was prepared with it).
    pub resume: Option<&'a ResumePoint>,
}

/// A count updated by a task thread and read by anyone.
#[derive(Debug, Default)]
pub struct Counter {
    /// Records received.
    pub records_in: AtomicU64,
    /// Records emitted.
    pub records_out: AtomicU64,
}

/// One subtask's counters, per node of its chain and for the whole task;
/// lock-free. A TaskManager reads them for heartbeats and metrics.
#[derive(Debug)]
pub struct TaskCounters {
    /// Node name and counts, in chain order.
    pub nodes: Vec<(String, Counter)>,
    /// Set when the task finished its input.
    pub finished: AtomicBool,
    /// Payload bytes (keys and values) entering the task, from its input
    /// channels or its host source.
    pub bytes_in: AtomicU64,
    /// Payload bytes leaving the task, to its output channels or host sink.
    pub bytes_out: AtomicU64,
    /// Nanoseconds the task spent blocked on a full output channel.
    pub backpressured_ns: AtomicU64,
    /// Fuel its guest chain burnt.
    pub fuel_consumed: AtomicU64,
    /// CPU time of the task, ns: its thread's (guest calls, connectors,
    /// routing) and its source's reader thread's.
    pub cpu_ns: AtomicU64,
    /// CPU time of the source's reader thread so far (see `read_ahead`).
    read_ahead_cpu_ns: AtomicU64,
}

/// Whether reading host sources on threads of their own pays (see
/// `read_ahead`) in a process that will run `tasks` task threads, of which
/// `sources` poll a host source, on `cores` cores: only while every
/// thread, each source's reader included, has a core of its own. With the
/// cores busy already, the reader's hand-offs cost more than it brings
/// (Nexmark q4 on 2 cores, three tasks: 13 % slower with it; q0–q2, one
/// task and its reader: 1.7× faster).
pub fn read_ahead_pays(tasks: usize, sources: usize, cores: usize) -> bool {
    tasks.saturating_add(sources) <= cores
}

/// Whether a task running these chained nodes polls a host source (its
/// head is a source connector).
pub fn polls_a_host_source(nodes: &[sluice_types::NodeSpec]) -> bool {
    matches!(
        nodes.first().map(|n| &n.implementation),
        Some(sluice_types::Implementation::Connector(c))
            if sluice_connectors::kind(c) == Some(sluice_types::OperatorKind::Source)
    )
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// CPU time the calling thread has used, in ns: a task's thread (and its
/// source's reader thread, if it has one) measure what the task costs,
/// whatever its wall-clock time.
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Guest instances alive in this process (one per subtask with guest
/// operators), and the linear memory they hold.
static GUEST_INSTANCES: AtomicU64 = AtomicU64::new(0);
static GUEST_MEMORY_BYTES: AtomicU64 = AtomicU64::new(0);

/// Guest instances alive in this process.
pub fn guest_instances() -> u64 {
    GUEST_INSTANCES.load(Ordering::Relaxed)
}

/// Bytes of linear memory held by this process's guest instances.
pub fn guest_memory_bytes() -> u64 {
    GUEST_MEMORY_BYTES.load(Ordering::Relaxed)
}

impl TaskCounters {
    /// Zeroed counters for the nodes of a chain.
    pub fn new(nodes: &[sluice_types::NodeSpec]) -> Self {
        TaskCounters {
            nodes: nodes
                .iter()
                .map(|n| (n.name.clone(), Counter::default()))
                .collect(),
            finished: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            fuel_consumed: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            read_ahead_cpu_ns: AtomicU64::new(0),
        }
    }

    /// Sets the task's CPU time from its own thread's, `own_ns`.
    fn set_cpu(&self, own_ns: u64) {
        let reader = self.read_ahead_cpu_ns.load(Ordering::Relaxed);
        self.cpu_ns
            .store(own_ns.saturating_add(reader), Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> Vec<NodeCounts> {
        self.nodes
            .iter()
            .map(|(name, c)| NodeCounts {
                name: name.clone(),
                records_in: c.records_in.load(Ordering::Relaxed),
                records_out: c.records_out.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Sums per-subtask counts into per-node counts, in graph order.
pub fn sum_by_node(
    execution: &ExecutionGraph,
    tasks: &[(TaskId, Vec<NodeCounts>)],
) -> Vec<NodeCounts> {
    let mut out: Vec<Vec<NodeCounts>> = execution
        .vertices
        .iter()
        .map(|v| {
            v.nodes
                .iter()
                .map(|n| NodeCounts {
                    name: n.name.clone(),
                    ..NodeCounts::default()
                })
                .collect()
        })
        .collect();
    for (task, counts) in tasks {
        if let Some(vertex) = out.get_mut(task.vertex as usize) {
            for (total, c) in vertex.iter_mut().zip(counts) {
                total.records_in += c.records_in;
                total.records_out += c.records_out;
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// A planned job, ready to run.
pub struct PreparedJob {
    /// The plan function's graph.
    pub graph: JobGraph,
    /// The chained execution graph.
    pub execution: ExecutionGraph,
}

/// The mini-cluster.
pub struct LocalCluster {
    runtime: Runtime,
    connectors: Arc<Connectors>,
    slots: u32,
    /// Checkpoint interval and storage, when jobs take checkpoints.
    checkpoints: Option<(Duration, sluice_state::Storage)>,
    // Drives OpenDAL's IO; dropped last.
    _io: tokio::runtime::Runtime,
}

impl LocalCluster {
    /// A mini-cluster with `slots` task slots under `policy`; relative file
    /// paths in jobs resolve against `base_dir`.
    pub fn new(
        policy: Policy,
        slots: u32,
        cache_dir: Option<PathBuf>,
        base_dir: Option<PathBuf>,
    ) -> Result<Self, RunError> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-io")
            .enable_all()
            .build()
            .map_err(|e| RunError::Setup(format!("cannot start the IO runtime: {e}")))?;
        let connectors =
            Connectors::new(io.handle(), base_dir).map_err(|e| RunError::Setup(e.to_string()))?;
        let options = RuntimeOptions {
            slots,
            cache_dir,
            ..RuntimeOptions::default()
        };
        let runtime = Runtime::new(policy, options).map_err(|e| RunError::Setup(e.to_string()))?;
        Ok(LocalCluster {
            runtime,
            connectors: Arc::new(connectors),
            slots,
            checkpoints: None,
            _io: io,
        })
    }

    /// Jobs take a checkpoint every `interval` into the storage at `uri`.
    pub fn with_checkpoints(mut self, interval: Duration, uri: &str) -> Result<Self, RunError> {
        let storage = sluice_state::Storage::open(uri, &sluice_state::S3Options::from_env())
            .map_err(|e| RunError::Setup(e.to_string()))?;
        // A store that does not answer fails the run before it starts.
        self._io
            .block_on(storage.probe(Duration::from_secs(15)))
            .map_err(|e| RunError::Setup(e.to_string()))?;
        self.checkpoints = Some((interval, storage));
        Ok(self)
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        self.runtime.policy()
    }

    /// Validates and compiles a component.
    pub fn load(&self, wasm: &[u8]) -> Result<App, RunError> {
        Ok(self.runtime.load(wasm)?)
    }

    /// Runs the plan function and checks the graph against the contract,
    /// the connectors' rules, the policy and the mini-cluster's slots.
    pub fn prepare(
        &self,
        components: &Components,
        args: &[(String, String)],
        parallelism: u32,
        resume: Option<Resume<'_>>,
    ) -> Result<PreparedJob, RunError> {
        let job = prepare_job(
            &self.connectors,
            self.runtime.policy(),
            components,
            args,
            parallelism,
            resume,
        )?;
        let needed = job.execution.slots_needed();
        if needed > self.slots {
            return Err(SchedulingError {
                needed,
                available: self.slots,
            }
            .into());
        }
        Ok(job)
    }

    /// Opens the savepoint at `location` (as `sluice savepoint` printed it:
    /// a storage URI ending in `JOB/chk-N`, or a plain path).
    pub fn open_savepoint(&self, location: &str) -> Result<ResumePoint, RunError> {
        let bad = |why: String| RunError::Savepoint(format!("savepoint `{location}`: {why}"));
        let (root, relative) = snapshot::split_location(location).ok_or_else(|| {
            bad(
                "not a savepoint location (it ends in JOB/chk-N, as `sluice savepoint` prints)"
                    .into(),
            )
        })?;
        let storage = sluice_state::Storage::open(&root, &sluice_state::S3Options::from_env())
            .map_err(|e| bad(e.to_string()))?;
        let metadata =
            snapshot::read_metadata(&storage, self._io.handle(), &relative).map_err(bad)?;
        Ok(ResumePoint {
            storage,
            metadata,
            location: location.to_owned(),
        })
    }

    /// Runs a prepared job to its end, calling `observe` with progress
    /// about twice a second and once at the end. A message on
    /// `control.interrupt` cancels it; `control.resume` restores it.
    pub fn run(
        &self,
        components: &Components,
        job: PreparedJob,
        observe: &mut dyn FnMut(&Progress),
        control: RunControl<'_>,
    ) -> Result<Progress, RunError> {
        let started = Instant::now();
        let now = || started.elapsed().as_millis() as u64;
        let mut counters: Vec<(TaskId, Arc<TaskCounters>)> = Vec::new();
        let total_tasks = job.execution.tasks().count() as u32;
        let read_ahead = read_ahead_pays(
            total_tasks as usize,
            job.execution
                .vertices
                .iter()
                .filter(|v| polls_a_host_source(&v.nodes))
                .map(|v| v.parallelism as usize)
                .sum(),
            cores(),
        );
        let mut channels: Vec<Option<(Sender<Event>, Receiver<Event>)>> =
            (0..job.execution.channel_count())
                .map(|_| Some(bounded(CHANNEL_CAPACITY)))
                .collect();
        let (status_tx, status_rx) = unbounded::<(TaskId, TaskStatus)>();
        let (cancel_tx, cancel_rx) = bounded::<()>(0);
        let mut cancel_tx = Some(cancel_tx);
        let execution = job.execution.clone();
        let mut restored = match control.resume {
            Some(r) => {
                let tasks: Vec<TaskId> = execution.tasks().collect();
                let shapes: Vec<(TaskId, u32, u32)> = tasks
                    .iter()
                    .map(|t| {
                        let p = execution.vertices[t.vertex as usize].parallelism;
                        (*t, p, execution.max_parallelism)
                    })
                    .collect();
                let plan = r.metadata.restore_for(&execution, &tasks);
                snapshot::fetch(&r.storage, self._io.handle(), &plan, &shapes)
                    .map_err(RunError::Savepoint)?
            }
            None => HashMap::new(),
        };
        let job_id = JobId(rand::random());
        let mut checkpoints = self.checkpoints.as_ref().map(|(interval, storage)| {
            local_checkpoints::LocalCheckpoints::new(
                job_id,
                interval.as_millis().max(1) as u64,
                storage.clone(),
                self._io.handle().clone(),
                job.execution.clone(),
                control.resume.map_or(0, |r| r.metadata.checkpoint),
            )
        });
        let mut coord = Job::new(job.execution, now());
        coord.handle_slots_offered(self.slots, now())?;
        let mut threads = Vec::new();
        let progress = |coord: &Job, counters: &[(TaskId, Arc<TaskCounters>)]| {
            let per_task: Vec<_> = counters.iter().map(|(t, c)| (*t, c.snapshot())).collect();
            let finished = counters
                .iter()
                .filter(|(_, c)| c.finished.load(Ordering::Relaxed))
                .count() as u32;
            let running = coord
                .tasks()
                .values()
                .filter(|s| **s == TaskStatus::Running)
                .count() as u32;
            Progress {
                elapsed: started.elapsed(),
                status: coord.status(),
                nodes: sum_by_node(&execution, &per_task),
                tasks: TaskTally {
                    running,
                    finished,
                    total: total_tasks,
                },
                checkpoints: 0,
                kept_checkpoint: None,
            }
        };
        let never = crossbeam_channel::never();
        let mut interrupt = control.interrupt.unwrap_or(&never);
        let mut last_observed = Instant::now();
        loop {
            while let Some(cmd) = coord.poll_command() {
                match cmd {
                    Command::Deploy { deployment, .. } => {
                        let task_counters = Arc::new(TaskCounters::new(&deployment.nodes));
                        counters.push((deployment.task, task_counters.clone()));
                        let ctx = task::TaskContext {
                            components: components.clone(),
                            connectors: self.connectors.clone(),
                            policy: self.runtime.policy().name.clone(),
                            inputs: deployment
                                .inputs
                                .iter()
                                .map(|&(ch, input)| (channel(&channels, ch).1, input))
                                .collect(),
                            outputs: deployment
                                .outputs
                                .iter()
                                .flat_map(|o| o.channels.iter())
                                .map(|&ch| (ch, channel(&channels, ch).0))
                                .collect(),
                            cancel: cancel_rx.clone(),
                            counters: task_counters,
                            checkpointing: checkpoints.as_mut().and_then(|c| c.task(&deployment)),
                            restore: restored.remove(&deployment.task),
                            job: job_id,
                            // No savepoint of a local run can name them.
                            discard_precommitted_on_cancel: true,
                            // One tenant: nobody to share the cores with.
                            lane: None,
                            read_ahead,
                            accounts: Vec::new(),
                        };
                        let status = status_tx.clone();
                        let id = deployment.task;
                        let handle = std::thread::Builder::new()
                            .name(format!("task-{}-{}", id.vertex, id.subtask))
                            .spawn(move || {
                                task::run(*deployment, ctx, &|t, s| {
                                    let _ = status.send((t, s));
                                })
                            })
                            .map_err(|e| {
                                RunError::Setup(format!("cannot start a task thread: {e}"))
                            })?;
                        threads.push(handle);
                    }
                    // The mini-cluster cancels all tasks at once: every task
                    // selects on this channel and sees it close.
                    Command::Cancel(_) => drop(cancel_tx.take()),
                }
            }
            // All tasks hold their own channel ends now; drop ours so a task
            // that exits is seen by its peers as a closed channel.
            channels.iter_mut().for_each(|c| *c = None);
            if let Some(c) = checkpoints.as_mut() {
                c.deployed();
                if let Some(reason) = c.drive(&coord, now()) {
                    coord.fail_run(reason, now());
                    continue;
                }
            }
            if coord.status().is_terminal() {
                break;
            }
            // With checkpoints the loop also wakes up for their timers.
            let wait = if checkpoints.is_some() {
                CHECKPOINT_TICK
            } else {
                PROGRESS_INTERVAL
            };
            crossbeam_channel::select! {
                recv(status_rx) -> report => {
                    if let Ok((task, status)) = report {
                        coord.handle_task_status(task, status, now());
                    }
                }
                recv(interrupt) -> _ => {
                    coord.cancel(now());
                    interrupt = &never;
                }
                default(wait) => {}
            }
            if last_observed.elapsed() >= PROGRESS_INTERVAL {
                last_observed = Instant::now();
                let mut p = progress(&coord, &counters);
                p.checkpoints = checkpoints.as_ref().map_or(0, |c| c.completed());
                observe(&p);
            }
        }
        for t in threads {
            let _ = t.join();
        }
        let kept = checkpoints
            .as_mut()
            .and_then(|c| c.finish(coord.status(), now()));
        let mut end = progress(&coord, &counters);
        end.checkpoints = checkpoints.as_ref().map_or(0, |c| c.completed());
        end.kept_checkpoint = kept;
        observe(&end);
        match coord.status() {
            JobStatus::Finished => Ok(end),
            JobStatus::Canceled => Err(RunError::Cancelled(Box::new(end))),
            _ => Err(RunError::Failed {
                message: coord.failure().unwrap_or("unknown cause").to_owned(),
                progress: Box::new(end),
            }),
        }
    }
}

fn channel(
    channels: &[Option<(Sender<Event>, Receiver<Event>)>],
    ch: u32,
) -> (Sender<Event>, Receiver<Event>) {
    channels[ch as usize]
        .clone()
        .expect("invariant: every channel exists until all tasks are deployed")
}

/// A savepoint (or retained checkpoint) a job starts from.
#[derive(Clone, Copy, Debug)]
pub struct Resume<'a> {
    /// Its metadata.
    pub savepoint: &'a snapshot::CheckpointMetadata,
    /// Start even if it holds state of vertices the job does not have.
    pub allow_non_restored_state: bool,
}

/// Runs the plan function and checks the graph against the contract, the
/// connectors' rules and `policy` (the runtime's, or on a shared cluster the
/// tenant's with its file roots): everything a submission must pass
/// before it waits for slots. File connectors' paths come out absolute and
/// normalised, as the tasks will open them. Starting from a savepoint, its
/// file outputs may be written again, and the savepoint must fit the job.
pub fn prepare_job(
    connectors: &Connectors,
    policy: &Policy,
    components: &Components,
    args: &[(String, String)],
    parallelism: u32,
    resume: Option<Resume<'_>>,
) -> Result<PreparedJob, RunError> {
    policy.check_parallelism(parallelism)?;
    let mut graph = components.main().plan(args)?;
    // Before any work proportional to the plan's size.
    for (what, count, max) in [
        ("nodes", graph.nodes.len(), policy.quotas.max_plan_nodes),
        ("edges", graph.edges.len(), policy.quotas.max_plan_edges),
    ] {
        if count > max as usize {
            return Err(GraphError::TooLarge { what, count, max }.into());
        }
    }
    // Operator kinds by the name a plan gives them (`LINK/NAME` for a
    // linked component's).
    let mut operators: HashMap<String, OperatorKind> = HashMap::new();
    let main = std::iter::once((None, components.main()));
    for (link, app) in main.chain(components.linked_apps().map(|(l, a)| (Some(l), a))) {
        for o in app.operators().map_err(PlanError::from)? {
            let name = match link {
                Some(l) => format!("{l}/{}", o.name),
                None => o.name,
            };
            operators.insert(name, o.kind);
        }
    }
    let max_parallelism = graph
        .max_parallelism
        .unwrap_or(keygroup::DEFAULT_MAX_PARALLELISM);
    let limit = max_parallelism.min(policy.quotas.max_parallelism);
    graph.validate(parallelism, limit, &|node| match &node.implementation {
        Implementation::Guest(op) => {
            if let Err(problem) = components.resolve(op) {
                return Err(GraphError::UnknownLink {
                    node: node.name.clone(),
                    operator: op.clone(),
                    problem,
                });
            }
            operators
                .get(op)
                .copied()
                .ok_or_else(|| GraphError::UnknownOperator {
                    node: node.name.clone(),
                    operator: op.clone(),
                })
        }
        Implementation::Connector(c) => {
            sluice_connectors::kind(c).ok_or_else(|| GraphError::UnknownConnector {
                node: node.name.clone(),
                connector: c.clone(),
                available: sluice_connectors::CONNECTORS.join(", "),
            })
        }
    })?;
    // A linked component would be loaded on every TaskManager for nothing.
    let used: std::collections::HashSet<&str> = graph
        .nodes
        .iter()
        .filter_map(|n| n.implementation.link())
        .collect();
    if let Some((unused, _)) = components.linked_apps().find(|(l, _)| !used.contains(l)) {
        return Err(GraphError::UnusedLink(unused.to_owned()).into());
    }
    // A savepoint's outputs may hold its part files; one of the first
    // metadata format does not say which they are.
    let resumed = |dir: &std::path::Path| {
        resume.is_some_and(|r| {
            r.savepoint.version < 2
                || r.savepoint
                    .outputs
                    .iter()
                    .any(|o| std::path::Path::new(o) == dir)
        })
    };
    for node in &mut graph.nodes {
        if let Implementation::Connector(c) = &node.implementation
            && let Some(path) = connectors.check(node, c, policy, &resumed)?
        {
            node.config.retain(|(k, _)| k != "path");
            node.config
                .push(("path".into(), path.to_string_lossy().into_owned()));
        }
    }
    let execution = ExecutionGraph::build(&graph, parallelism, max_parallelism);
    if let Some(r) = resume {
        r.savepoint
            .check_fits(&execution, r.allow_non_restored_state)
            .map_err(RunError::Savepoint)?;
    }
    Ok(PreparedJob { graph, execution })
}
