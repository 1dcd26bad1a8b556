//! One subtask: its chain (host source or inputs → guest operators → host
//! sink) and its outputs.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, TrySendError};
use sluice_connectors::{Connectors, Poll, Sink};
use sluice_coord::{TaskDeployment, TaskFailure, TaskId, TaskStatus};
use sluice_task::{
    AlignmentMode, BarrierAligner, BatchLimits, InputTracker, OutputRouter, RouteError,
    WatermarkGenerator,
};
use sluice_types::{Batch, BatchBuilder, Event, Implementation, NodeSpec, OperatorKind};
use sluice_wasm::{ChainSpec, GuestChain, GuestOutput, StateChunk, TaskLabel};

use crate::read_ahead::ReadAhead;
use crate::snapshot::{CheckpointNotice, Checkpointing, TakenSnapshot, TaskSnapshot};
use crate::{GUEST_INSTANCES, GUEST_MEMORY_BYTES, TaskCounters};

/// Records a source is asked for per poll (and so per guest call).
const SOURCE_BATCH: usize = 1024;
/// The longest records wait in a partly filled output batch while the
/// task is busy (Flink's `execution.buffer-timeout.interval` default). A
/// task with nothing to read, or a source that had less than a full batch
/// to give, sends what it holds at once.
const BUFFER_TIMEOUT: Duration = Duration::from_millis(100);

/// What a subtask runs with. Channels are in-process queues; a
/// TaskManager bridges the ones that cross to another process.
pub struct TaskContext {
    /// The job's components.
    pub components: crate::Components,
    /// Host connectors.
    pub connectors: Arc<Connectors>,
    /// The policy's name, for error messages.
    pub policy: String,
    /// Input channels with the input index each feeds.
    pub inputs: Vec<(Receiver<Event>, u32)>,
    /// Output channels by channel id.
    pub outputs: HashMap<u32, Sender<Event>>,
    /// Disconnected when the task must stop.
    pub cancel: Receiver<()>,
    /// This task's counters.
    pub counters: Arc<TaskCounters>,
    /// Checkpoint signals, when the job takes checkpoints.
    pub checkpointing: Option<Checkpointing>,
    /// State to start from (a checkpoint's), or `None` for a fresh start.
    pub restore: Option<TaskSnapshot>,
    /// The job the task belongs to.
    pub job: sluice_types::JobId,
    /// Whether a cancelled sink also deletes what it pre-committed: true
    /// where no savepoint can refer to it (a local run).
    pub discard_precommitted_on_cancel: bool,
    /// The tenant's lane through the process's fair CPU gate: the task's
    /// thread runs only while it holds a core from it. `None`: no gate.
    pub lane: Option<sluice_share::Lane>,
    /// Whether a host source is read on a thread of its own while the task
    /// runs what it read before (see `read_ahead`): worth it only while
    /// the process has a core to spare, see [`crate::read_ahead_pays`].
    pub read_ahead: bool,
    /// Accounts the task's guest instance is counted against (its tenant's
    /// and its job's on this process, with their caps).
    pub accounts: Vec<sluice_share::Account>,
}

pub(crate) enum Stop {
    Canceled,
    Failed(TaskFailure),
}

/// What a completed receive of the input loop got.
enum Got {
    Input(usize, Result<Event, crossbeam_channel::RecvError>),
    Cancel,
    Notice(Result<CheckpointNotice, crossbeam_channel::RecvError>),
}

impl From<sluice_connectors::ConnectorError> for Stop {
    fn from(e: sluice_connectors::ConnectorError) -> Self {
        Stop::Failed(if e.retryable() {
            TaskFailure::recoverable(e.to_string())
        } else {
            TaskFailure::non_recoverable(e.to_string())
        })
    }
}

impl From<sluice_wasm::TaskError> for Stop {
    fn from(e: sluice_wasm::TaskError) -> Self {
        if e.cause == sluice_wasm::Cause::Cancelled {
            return Stop::Canceled;
        }
        Stop::Failed(if e.cause.would_repeat() {
            TaskFailure::non_recoverable(e.to_string())
        } else {
            TaskFailure::recoverable(e.to_string())
        })
    }
}

/// A tag naming a restore: the job and the checkpoint it restores from. A
/// file sink names the files of a subtask that has no state of its own in
/// the checkpoint with it.
fn restore_tag(job: sluice_types::JobId, checkpoint: u64) -> String {
    let job = job.to_string();
    format!("{}c{checkpoint}", &job[..job.len().min(8)])
}

/// Runs a subtask to its end and reports its status; a panic in the host
/// code of one task fails that task, not the process.
pub fn run(dep: TaskDeployment, ctx: TaskContext, report: &dyn Fn(TaskId, TaskStatus)) {
    let id = dep.task;
    let name = format!("{} ({}/{})", dep.name, id.subtask + 1, dep.parallelism);
    report(id, TaskStatus::Running);
    let counters = ctx.counters.clone();
    // From here the thread runs only while it holds a core of its tenant's
    // lane; it hands it back whenever it waits (see `sluice_share::gate`).
    let entered = ctx.lane.clone();
    let entered = entered.as_ref().map(sluice_share::Lane::enter);
    let cpu_start = crate::thread_cpu_ns();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Task::open(dep, ctx).and_then(Task::run)
    }));
    let final_status = match result {
        Ok(Ok(())) => TaskStatus::Finished,
        Ok(Err(Stop::Canceled)) => TaskStatus::Canceled,
        Ok(Err(Stop::Failed(failure))) => {
            tracing::error!(task = %name, kind = failure.kind.name(), "task failed: {}", failure.message);
            TaskStatus::Failed(failure)
        }
        Err(panic) => {
            let msg = panic_message(&*panic);
            TaskStatus::Failed(TaskFailure::recoverable(format!(
                "task {name} hit an internal error: {msg}"
            )))
        }
    };
    counters.set_cpu(crate::thread_cpu_ns().saturating_sub(cpu_start));
    if final_status == TaskStatus::Finished {
        counters.finished.store(true, Ordering::Relaxed);
    }
    drop(entered);
    report(id, final_status);
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Task {
    dep: TaskDeployment,
    ctx: TaskContext,
    source: Option<ReadAhead>,
    guest: Option<GuestChain>,
    /// Index in `dep.nodes` of the first guest node.
    first_guest: usize,
    guest_len: usize,
    sink: Option<Box<dyn Sink>>,
    /// The checkpoint this run was restored from (0: none); older barriers
    /// are stale.
    restored_from: u64,
    /// What the guest chain costs, as last published to the counters.
    guest_usage: GuestUsage,
    router: OutputRouter,
    watermarks: Option<WatermarkGenerator>,
    next_timer: Option<i64>,
    pending: Vec<(u32, Batch)>,
    /// What a host source polls into (kept for its buffers' capacity).
    source_out: BatchBuilder,
    /// When the output batches were last flushed.
    flushed_at: Instant,
}

impl Task {
    fn open(dep: TaskDeployment, mut ctx: TaskContext) -> Result<Self, Stop> {
        let (subtask, parallelism) = (dep.task.subtask, dep.parallelism);
        let restore = ctx.restore.take();
        let restored_from = restore.as_ref().map_or(0, |r| r.checkpoint);
        let connector = |n: &NodeSpec| match &n.implementation {
            Implementation::Connector(c) => Some(sluice_connectors::kind(c)),
            Implementation::Guest(_) => None,
        };
        let head = &dep.nodes[0];
        let source = match connector(head) {
            Some(Some(OperatorKind::Source)) => {
                let positions = restore.as_ref().map(|r| r.sources.as_slice());
                let source = ctx
                    .connectors
                    .source(head, subtask, parallelism, positions)?;
                Some(if ctx.read_ahead {
                    let name = format!("{} ({}/{parallelism})", dep.name, subtask + 1);
                    let lane = ctx.lane.clone();
                    ReadAhead::start(source, SOURCE_BATCH, &name, lane, ctx.counters.clone())
                        .map_err(|e| {
                            Stop::Failed(TaskFailure::recoverable(format!(
                                "cannot start the thread that reads the source: {e}"
                            )))
                        })?
                } else {
                    ReadAhead::inline(source, SOURCE_BATCH)
                })
            }
            _ => None,
        };
        let tail = dep.nodes.last().expect("invariant: a vertex has nodes");
        let sink = match connector(tail) {
            Some(Some(OperatorKind::Sink)) => {
                let restore = restore.as_ref().map(|r| sluice_connectors::SinkRestore {
                    tag: restore_tag(ctx.job, r.checkpoint),
                    states: r.sinks.clone(),
                });
                Some(ctx.connectors.sink(tail, subtask, restore.as_ref())?)
            }
            _ => None,
        };
        let guests: Vec<(usize, &NodeSpec, &String)> = dep
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.implementation {
                Implementation::Guest(op) => Some((i, n, op)),
                Implementation::Connector(_) => None,
            })
            .collect();
        let first_guest = guests.first().map_or(0, |g| g.0);
        let guest_len = guests.len();
        let guest = if guests.is_empty() {
            None
        } else {
            let label = TaskLabel {
                what: guests
                    .iter()
                    .map(|g| g.1.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> "),
                subtask: Some((subtask, parallelism)),
                policy: ctx.policy.clone(),
            };
            // Chaining keeps a chain's operators in one component.
            let (app, _) = ctx
                .components
                .resolve(guests[0].2)
                .map_err(|e| Stop::Failed(TaskFailure::non_recoverable(e)))?;
            let spec = ChainSpec {
                operators: guests
                    .iter()
                    .map(|(_, n, op)| {
                        let name = sluice_types::split_operator(op).1;
                        (name.to_owned(), n.name.clone(), n.config.clone())
                    })
                    .collect(),
                subtask,
                parallelism,
                max_parallelism: dep.max_parallelism,
                restore: restore
                    .as_ref()
                    .map(|r| {
                        r.guest
                            .iter()
                            .map(|(operator, key_group, data)| StateChunk {
                                operator: *operator,
                                key_group: *key_group,
                                data: data.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let cancel = ctx.cancel.clone();
            let control = sluice_wasm::CallControl {
                accounts: ctx.accounts.clone(),
                cancelled: Some(Arc::new(move || {
                    matches!(cancel.try_recv(), Err(TryRecvError::Disconnected))
                })),
            };
            Some(app.chain(label, spec, &control)?)
        };
        let mut router = OutputRouter::new(dep.max_parallelism, BatchLimits::default());
        for o in &dep.outputs {
            router.add_output(o.partitioning, o.channels.clone());
        }
        let watermarks = dep
            .nodes
            .iter()
            .rev()
            .find_map(|n| n.watermarks)
            .map(WatermarkGenerator::new);
        let mut guest_usage = GuestUsage::new(guest.is_some());
        if let Some(g) = &guest {
            guest_usage.update(g, &ctx.counters);
        }
        Ok(Task {
            dep,
            ctx,
            source,
            guest,
            first_guest,
            guest_len,
            sink,
            restored_from,
            guest_usage,
            router,
            watermarks,
            next_timer: None,
            pending: Vec::new(),
            source_out: BatchBuilder::new(),
            flushed_at: Instant::now(),
        })
    }

    fn counter(&self, node: usize) -> &crate::Counter {
        &self.ctx.counters.nodes[node].1
    }

    fn cancelled(&self) -> bool {
        matches!(self.ctx.cancel.try_recv(), Err(TryRecvError::Disconnected))
    }

    fn run(mut self) -> Result<(), Stop> {
        let is_guest_source =
            self.source.is_none() && self.dep.inputs.is_empty() && self.guest.is_some();
        let ran = if self.source.is_some() || is_guest_source {
            self.run_source()
        } else {
            self.run_inputs()
        }
        .and_then(|()| self.finish());
        if let Err(stop) = ran {
            // What the sink was writing will never be published.
            if let Some(sink) = self.sink.as_mut() {
                let discard =
                    matches!(stop, Stop::Canceled) && self.ctx.discard_precommitted_on_cancel;
                if let Err(e) = sink.abort(discard) {
                    tracing::warn!(task = %self.dep.name, "cannot clean up the sink's files: {e}");
                }
            }
            return Err(stop);
        }
        Ok(())
    }

    fn run_source(&mut self) -> Result<(), Stop> {
        loop {
            if self.cancelled() {
                return Err(Stop::Canceled);
            }
            sluice_share::yield_point();
            self.source_signals()?;
            self.fire_due_timers()?;
            let (finished, short) = if let Some(src) = self.source.as_mut() {
                let poll = src.poll(&mut self.source_out)?;
                let batch = self.source_out.take();
                let short = batch.len() < SOURCE_BATCH;
                self.ctx
                    .counters
                    .bytes_in
                    .fetch_add(batch.data.len() as u64, Ordering::Relaxed);
                self.counter(0)
                    .records_out
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.chain_input(0, batch)?;
                (poll == Poll::Finished, short)
            } else {
                let guest = self
                    .guest
                    .as_mut()
                    .expect("invariant: a guest source has a chain");
                let out = guest.poll_source(SOURCE_BATCH as u32)?;
                let short = out.output.records.len() < SOURCE_BATCH;
                self.handle_output(out.output)?;
                if let Some(wm) = out.watermark {
                    self.advance_watermark(wm)?;
                }
                (out.finished, short)
            };
            if finished {
                return Ok(());
            }
            // A source with less than a full batch to give is not keeping
            // up with demand: what it made goes now, not when batches fill.
            if short {
                self.flush()?;
            } else {
                self.flush_if_due()?;
            }
        }
    }

    fn run_inputs(&mut self) -> Result<(), Stop> {
        let inputs = std::mem::take(&mut self.ctx.inputs);
        let mut tracker = InputTracker::new(inputs.len());
        let mode = self
            .ctx
            .checkpointing
            .as_ref()
            .map_or(AlignmentMode::Aligned, |c| c.mode);
        let mut aligner = BarrierAligner::new(inputs.len(), mode).resume_after(self.restored_from);
        let mut ended = vec![false; inputs.len()];
        let cancel = self.ctx.cancel.clone();
        let mut notices = self.ctx.checkpointing.as_ref().map(|c| c.notices.clone());
        enum Slot {
            Input(usize),
            Cancel,
            Notice,
        }
        'select: while !tracker.all_ended() {
            // The channels that may be read now: not ended, not held back
            // by a barrier alignment. Rebuilt only when that set changes.
            let mut select = Select::new();
            let mut slots = Vec::new();
            for (i, (rx, _)) in inputs.iter().enumerate() {
                if !ended[i] && !aligner.is_blocked(i) {
                    select.recv(rx);
                    slots.push(Slot::Input(i));
                }
            }
            select.recv(&cancel);
            slots.push(Slot::Cancel);
            // The select keeps the address of what it watches: the very
            // receiver `complete` reads below.
            let notices_rx = notices.clone();
            if let Some(n) = &notices_rx {
                select.recv(n);
                slots.push(Slot::Notice);
            }
            // Completes a selected receive at once: a selected operation
            // holds its channel slot until then, and its sender spins on
            // that slot, so nothing may wait (for a core either) between.
            let complete = |op: crossbeam_channel::SelectedOperation<'_>| match slots[op.index()] {
                Slot::Input(i) => Got::Input(i, op.recv(&inputs[i].0)),
                Slot::Cancel => {
                    let _ = op.recv(&cancel);
                    Got::Cancel
                }
                Slot::Notice => {
                    Got::Notice(op.recv(notices_rx.as_ref().expect("invariant: selected")))
                }
            };
            loop {
                let got = match select.try_select() {
                    Ok(op) => complete(op),
                    Err(_) => {
                        // Nothing to read: send what is buffered before waiting.
                        self.flush()?;
                        match self.next_timer {
                            Some(t) => {
                                let wait =
                                    Duration::from_millis(t.saturating_sub(now_ms()).max(0) as u64);
                                let deadline = Instant::now() + wait;
                                match sluice_share::blocking(|| {
                                    select.select_deadline(deadline).map(&complete)
                                }) {
                                    Ok(got) => got,
                                    Err(_) => {
                                        self.fire_due_timers()?;
                                        continue;
                                    }
                                }
                            }
                            None => sluice_share::blocking(|| complete(select.select())),
                        }
                    }
                };
                sluice_share::yield_point();
                let (i, received) = match got {
                    Got::Input(i, received) => (i, received),
                    Got::Cancel => return Err(Stop::Canceled),
                    Got::Notice(received) => {
                        match received {
                            Ok(notice) => self.handle_notice(notice, &mut aligner)?,
                            // The driver stopped sending: nothing more to hear.
                            Err(_) => notices = None,
                        }
                        continue 'select;
                    }
                };
                let input = &inputs[i].1;
                match received {
                    Ok(Event::Records(batch)) => {
                        self.ctx
                            .counters
                            .bytes_in
                            .fetch_add(batch.data.len() as u64, Ordering::Relaxed);
                        self.chain_input(*input, batch)?;
                        self.flush_if_due()?;
                    }
                    Ok(Event::Watermark(wm)) => {
                        if let Some(f) = tracker.handle_watermark(i, wm) {
                            self.upstream_watermark(f)?;
                        }
                    }
                    Ok(Event::Barrier(id)) => {
                        let out = aligner.handle_barrier(i, id);
                        if let Some(id) = out.aligned {
                            self.checkpoint(id)?;
                        }
                        continue 'select;
                    }
                    Ok(Event::EndOfInput) => {
                        ended[i] = true;
                        if let Some(f) = tracker.handle_end(i) {
                            self.upstream_watermark(f)?;
                        }
                        if let Some(id) = aligner.handle_end(i).aligned {
                            self.checkpoint(id)?;
                        }
                        continue 'select;
                    }
                    Err(_) if self.cancelled() => return Err(Stop::Canceled),
                    Err(_) => {
                        return Err(Stop::Failed(TaskFailure::consequence(
                            "an upstream task stopped without finishing its output",
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// A source subtask's checkpoint signals, between two polls.
    fn source_signals(&mut self) -> Result<(), Stop> {
        let Some(cp) = self.ctx.checkpointing.clone() else {
            return Ok(());
        };
        while let Ok(notice) = cp.notices.try_recv() {
            self.handle_notice(notice, &mut BarrierAligner::new(0, cp.mode))?;
        }
        while let Ok(id) = cp.triggers.try_recv() {
            if id > self.restored_from {
                self.checkpoint(id)?;
            }
        }
        Ok(())
    }

    fn handle_notice(
        &mut self,
        notice: CheckpointNotice,
        aligner: &mut BarrierAligner,
    ) -> Result<(), Stop> {
        match notice {
            CheckpointNotice::Complete(id) => {
                if let Some(sink) = self.sink.as_mut() {
                    sink.commit(id)?;
                }
            }
            CheckpointNotice::Abort(id) => {
                aligner.handle_abort(id);
            }
        }
        Ok(())
    }

    /// Takes this subtask's part of checkpoint `id` and passes the barrier
    /// on: records before it leave first, then the snapshot goes to the
    /// driver (which stores it while the task goes on), then the barrier.
    fn checkpoint(&mut self, id: u64) -> Result<(), Stop> {
        let Some(cp) = self.ctx.checkpointing.clone() else {
            return Ok(());
        };
        self.flush()?;
        let mut snapshot = TaskSnapshot {
            checkpoint: id,
            ..TaskSnapshot::default()
        };
        if let Some(src) = &self.source {
            snapshot.sources.push(src.snapshot());
        }
        if let Some(g) = self.guest.as_mut() {
            snapshot.guest = g
                .snapshot(id)?
                .into_iter()
                .map(|c| (c.operator, c.key_group, c.data))
                .collect();
        }
        if let Some(sink) = self.sink.as_mut() {
            snapshot.sinks.push(sink.pre_commit(id)?);
        }
        // A driver that stopped listening is shutting the task down anyway.
        let _ = cp.snapshots.send(TakenSnapshot {
            task: self.dep.task,
            snapshot,
        });
        for ch in self.router.channels().collect::<Vec<_>>() {
            self.send(ch, Event::Barrier(id))?;
        }
        Ok(())
    }

    /// Records entering the chain after the head (host source or input channel).
    fn chain_input(&mut self, input: u32, batch: Batch) -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        match self.guest.as_mut() {
            Some(g) => {
                self.ctx.counters.nodes[self.first_guest]
                    .1
                    .records_in
                    .fetch_add(n, Ordering::Relaxed);
                let out = g.process(input, batch)?;
                self.handle_output(out)
            }
            None => self.emit(batch),
        }
    }

    fn handle_output(&mut self, out: GuestOutput) -> Result<(), Stop> {
        self.next_timer = out.next_processing_timer;
        let guest = self
            .guest
            .as_mut()
            .expect("invariant: output comes from the chain");
        // Per-operator counts, reported by the SDK once per call.
        let counts = guest.take_counters();
        self.guest_usage.update(guest, &self.ctx.counters);
        let vertex = &self.ctx.counters.nodes;
        for (name, n) in counts {
            if let Some(i) = name
                .strip_prefix("sluice.records-out.")
                .and_then(|i| i.parse::<usize>().ok())
                && i < self.guest_len
            {
                let node = self.first_guest + i;
                vertex[node].1.records_out.fetch_add(n, Ordering::Relaxed);
                if let Some(next) = vertex.get(node + 1).filter(|_| i + 1 < self.guest_len) {
                    next.1.records_in.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        self.emit(out.records)
    }

    /// Records leaving the chain: into the sink, then to the outputs.
    fn emit(&mut self, batch: Batch) -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(g) = self.watermarks.as_mut() {
            batch
                .iter()
                .filter_map(|r| r.timestamp)
                .for_each(|t| g.observe(t));
        }
        if let Some(sink) = self.sink.as_mut() {
            let last = self.dep.nodes.len() - 1;
            self.ctx.counters.nodes[last]
                .1
                .records_in
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.ctx
                .counters
                .bytes_out
                .fetch_add(batch.data.len() as u64, Ordering::Relaxed);
            sink.write(&batch)?;
        }
        let mut pending = std::mem::take(&mut self.pending);
        self.router
            .route(batch, &mut |ch, b| pending.push((ch, b)))
            .map_err(|e| {
                Stop::Failed(TaskFailure::non_recoverable(match e {
                    RouteError::MissingKey => format!(
                        "`{}` emitted a record without a key onto a hash edge",
                        self.dep.name
                    ),
                    RouteError::Malformed => format!("`{}`: {e}", self.dep.name),
                }))
            })?;
        self.send_all(&mut pending)?;
        self.pending = pending;
        if let Some(wm) = self.watermarks.as_mut().and_then(WatermarkGenerator::poll) {
            self.broadcast_watermark(wm)?;
        }
        Ok(())
    }

    /// Sends batches, blocking while a receiver is full (backpressure) unless cancelled.
    fn send_all(&mut self, batches: &mut Vec<(u32, Batch)>) -> Result<(), Stop> {
        for (ch, b) in batches.drain(..) {
            let bytes = b.data.len() as u64;
            self.send(ch, Event::Records(b))?;
            self.ctx
                .counters
                .bytes_out
                .fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    fn send(&self, ch: u32, event: Event) -> Result<(), Stop> {
        let tx = &self.ctx.outputs[&ch];
        let event = match tx.try_send(event) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(event)) => event,
            Err(TrySendError::Disconnected(_)) => return Err(self.downstream_gone()),
        };
        // The receiver is full: from here on the task is backpressured.
        let blocked = Instant::now();
        let result = sluice_share::blocking(|| {
            crossbeam_channel::select! {
                send(tx, event) -> r => r.map_err(|_| self.downstream_gone()),
                recv(self.ctx.cancel) -> _ => Err(Stop::Canceled),
            }
        });
        let waited = u64::try_from(blocked.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.ctx
            .counters
            .backpressured_ns
            .fetch_add(waited, Ordering::Relaxed);
        result
    }

    fn downstream_gone(&self) -> Stop {
        if self.cancelled() {
            Stop::Canceled
        } else {
            Stop::Failed(TaskFailure::consequence("a downstream task stopped early"))
        }
    }

    /// A watermark from the inputs (or a guest source).
    fn upstream_watermark(&mut self, wm: i64) -> Result<(), Stop> {
        // i64::MAX means every input ended: `finish` completes event time.
        if wm == i64::MAX {
            return Ok(());
        }
        self.advance_watermark(wm)
    }

    fn advance_watermark(&mut self, wm: i64) -> Result<(), Stop> {
        if let Some(g) = self.guest.as_mut() {
            let out = g.advance_watermark(wm)?;
            self.handle_output(out)?;
        }
        // A vertex that generates its own watermarks does not forward its inputs'.
        if self.watermarks.is_none() {
            self.broadcast_watermark(wm)?;
        }
        Ok(())
    }

    fn broadcast_watermark(&mut self, wm: i64) -> Result<(), Stop> {
        self.flush()?;
        for ch in self.router.channels().collect::<Vec<_>>() {
            self.send(ch, Event::Watermark(wm))?;
        }
        Ok(())
    }

    fn fire_due_timers(&mut self) -> Result<(), Stop> {
        let now = now_ms();
        if let (Some(t), Some(g)) = (self.next_timer, self.guest.as_mut())
            && t <= now
        {
            let out = g.advance_processing_time(now)?;
            self.handle_output(out)?;
        }
        Ok(())
    }

    fn flush_if_due(&mut self) -> Result<(), Stop> {
        if self.flushed_at.elapsed() >= BUFFER_TIMEOUT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        self.flushed_at = Instant::now();
        let mut pending = std::mem::take(&mut self.pending);
        self.router.flush(&mut |ch, b| pending.push((ch, b)));
        self.send_all(&mut pending)?;
        self.pending = pending;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Stop> {
        if let Some(g) = self.guest.as_mut() {
            let out = g.end_of_input()?;
            self.handle_output(out)?;
        }
        self.flush()?;
        for ch in self.router.channels().collect::<Vec<_>>() {
            self.send(ch, Event::EndOfInput)?;
        }
        if let Some(sink) = self.sink.as_mut() {
            sink.finish()?;
        }
        Ok(())
    }
}

/// A guest chain's fuel and memory, folded into the task's counters and the
/// process-wide gauges after every call; the instance leaves the gauges when
/// the task ends.
struct GuestUsage {
    live: bool,
    fuel: u64,
    memory: u64,
    /// The thread's CPU time when the task opened.
    cpu_start: u64,
}

impl GuestUsage {
    fn new(live: bool) -> Self {
        if live {
            GUEST_INSTANCES.fetch_add(1, Ordering::Relaxed);
        }
        GuestUsage {
            live,
            fuel: 0,
            memory: 0,
            cpu_start: crate::thread_cpu_ns(),
        }
    }

    fn update(&mut self, chain: &GuestChain, counters: &TaskCounters) {
        let fuel = chain.fuel_consumed();
        counters
            .fuel_consumed
            .fetch_add(fuel.saturating_sub(self.fuel), Ordering::Relaxed);
        self.fuel = fuel;
        counters.set_cpu(crate::thread_cpu_ns().saturating_sub(self.cpu_start));
        let memory = chain.memory_bytes();
        if memory >= self.memory {
            GUEST_MEMORY_BYTES.fetch_add(memory - self.memory, Ordering::Relaxed);
        } else {
            GUEST_MEMORY_BYTES.fetch_sub(self.memory - memory, Ordering::Relaxed);
        }
        self.memory = memory;
    }
}

impl Drop for GuestUsage {
    fn drop(&mut self) {
        GUEST_MEMORY_BYTES.fetch_sub(self.memory, Ordering::Relaxed);
        if self.live {
            GUEST_INSTANCES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
