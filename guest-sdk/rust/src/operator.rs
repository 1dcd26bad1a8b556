//! Operator kinds and how each is adapted to the chain runtime.

use crate::bindings::exports::sluice::app::app::OperatorKind;
use crate::keyed::{KeyedOperator, KeyedProcess};
use crate::record::{Collector, Record, records};
use crate::{Error, Graph, plan::Args};

/// An application: its operators and its plan function.
pub trait Application: 'static {
    /// Every operator the application exports, by name.
    fn operators() -> Vec<OperatorDef>;
    /// Builds the job's dataflow graph from its arguments.
    fn plan(args: &Args) -> Result<Graph, Error>;
}

/// An operator's configuration (the node's `config` in the plan).
pub type Config = Args;

type Factory = Box<dyn Fn(&Config) -> Result<Box<dyn RawOperator>, Error>>;

/// One exported operator: its name, kind and how to create an instance.
pub struct OperatorDef {
    pub(crate) name: String,
    pub(crate) kind: OperatorKind,
    pub(crate) description: String,
    pub(crate) factory: Factory,
}

impl OperatorDef {
    fn new(name: &str, kind: OperatorKind, factory: Factory) -> Self {
        OperatorDef {
            name: name.to_owned(),
            kind,
            description: String::new(),
            factory,
        }
    }

    /// Adds a one-line description, shown by `sluice validate`.
    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }
}

/// Where a chain's operators stand: subtask, parallelism, key groups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenContext {
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
}

/// Snapshot chunks: `(key group, bytes)`, `None` for operator (non-keyed) state.
pub(crate) type Chunks = Vec<(Option<u32>, Vec<u8>)>;

/// What every operator looks like to the chain runtime.
pub(crate) trait RawOperator {
    fn open(&mut self, _ctx: &OpenContext) -> Result<(), Error> {
        Ok(())
    }
    fn process(&mut self, input: u32, record: Record<'_>, out: &mut Collector)
    -> Result<(), Error>;
    fn poll_source(&mut self, _max: u32, _out: &mut Collector) -> Result<SourcePoll, Error> {
        Err(crate::failed("this operator is not a source"))
    }
    fn watermark(&mut self, _wm: i64, _out: &mut Collector) -> Result<(), Error> {
        Ok(())
    }
    fn processing_time(&mut self, _now: i64, _out: &mut Collector) -> Result<(), Error> {
        Ok(())
    }
    fn end_of_input(&mut self, _out: &mut Collector) -> Result<(), Error> {
        Ok(())
    }
    /// `(key group, bytes)` chunks; `None` for operator (non-keyed) state.
    fn snapshot(&mut self) -> Result<Chunks, Error> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _key_group: Option<u32>, _data: &[u8]) -> Result<(), Error> {
        Err(crate::failed("this operator has no state to restore"))
    }
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }
}

pub(crate) struct SourcePoll {
    pub watermark: Option<i64>,
    pub finished: bool,
}

pub(crate) fn process_batch(
    op: &mut dyn RawOperator,
    input: u32,
    data: &[u8],
    meta: &[u8],
    out: &mut Collector,
) -> Result<(), Error> {
    for r in records(data, meta) {
        let r = r?;
        out.timestamp = r.timestamp;
        op.process(input, r, out)?;
    }
    out.timestamp = None;
    Ok(())
}

struct FnOperator<F>(F);

impl<F> RawOperator for FnOperator<F>
where
    F: FnMut(Record<'_>, &mut Collector) -> Result<(), Error>,
{
    fn process(&mut self, _input: u32, r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
        (self.0)(r, out)
    }
}

/// A stateless one-to-one transform: emit at most one record per input.
pub fn map<F>(name: &str, f: F) -> OperatorDef
where
    F: FnMut(Record<'_>, &mut Collector) -> Result<(), Error> + Clone + 'static,
{
    let op_name = name.to_owned();
    OperatorDef::new(
        name,
        OperatorKind::Map,
        Box::new(move |_| {
            let mut f = f.clone();
            let op_name = op_name.clone();
            Ok(
                Box::new(FnOperator(move |r: Record<'_>, out: &mut Collector| {
                    let before = out.len();
                    f(r, out)?;
                    if out.len() > before + 1 {
                        return Err(crate::failed(format!(
                            "map operator `{op_name}` emitted {} records for one input; use flat_map",
                            out.len() - before
                        )));
                    }
                    Ok(())
                })) as Box<dyn RawOperator>,
            )
        }),
    )
}

/// A stateless one-to-many transform.
pub fn flat_map<F>(name: &str, f: F) -> OperatorDef
where
    F: FnMut(Record<'_>, &mut Collector) -> Result<(), Error> + Clone + 'static,
{
    OperatorDef::new(
        name,
        OperatorKind::FlatMap,
        Box::new(move |_| Ok(Box::new(FnOperator(f.clone())) as Box<dyn RawOperator>)),
    )
}

/// Keeps the records for which `f` returns true.
pub fn filter<F>(name: &str, f: F) -> OperatorDef
where
    F: FnMut(&Record<'_>) -> bool + Clone + 'static,
{
    OperatorDef::new(
        name,
        OperatorKind::Filter,
        Box::new(move |_| {
            let mut f = f.clone();
            Ok(
                Box::new(FnOperator(move |r: Record<'_>, out: &mut Collector| {
                    if f(&r) {
                        out.push_record(&r);
                    }
                    Ok(())
                })) as Box<dyn RawOperator>,
            )
        }),
    )
}

/// A sink inside the sandbox: consumes records, emits none.
pub fn sink<F>(name: &str, f: F) -> OperatorDef
where
    F: FnMut(Record<'_>) -> Result<(), Error> + Clone + 'static,
{
    OperatorDef::new(
        name,
        OperatorKind::Sink,
        Box::new(move |_| {
            let mut f = f.clone();
            Ok(
                Box::new(FnOperator(move |r: Record<'_>, _out: &mut Collector| f(r)))
                    as Box<dyn RawOperator>,
            )
        }),
    )
}

/// A keyed process function with per-key state and timers. Its input must be
/// partitioned by hash.
pub fn keyed_process<P, F>(name: &str, make: F) -> OperatorDef
where
    P: KeyedProcess,
    F: Fn(&Config) -> Result<P, Error> + 'static,
{
    OperatorDef::new(
        name,
        OperatorKind::KeyedProcess,
        Box::new(move |cfg| Ok(Box::new(KeyedOperator::new(make(cfg)?)) as Box<dyn RawOperator>)),
    )
}

/// A keyed two-input operator (e.g. a join): `KeyedProcess::process` receives
/// the input index (0 or 1) in `KeyedContext::input`.
pub fn co_process<P, F>(name: &str, make: F) -> OperatorDef
where
    P: KeyedProcess,
    F: Fn(&Config) -> Result<P, Error> + 'static,
{
    let mut def = keyed_process(name, make);
    def.kind = OperatorKind::CoProcess;
    def
}

/// What a source's `poll` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records may follow.
    More,
    /// More records may follow; no later record will be older than this
    /// event time (a watermark).
    Watermark(i64),
    /// The source is exhausted.
    Finished,
}

/// A source inside the sandbox (a generator): it must be able to snapshot its
/// position and resume from it.
pub trait Source: 'static {
    /// Emits up to `max` records.
    fn poll(&mut self, max: u32, out: &mut Collector) -> Result<SourceStatus, Error>;
    /// The position to resume from after a failure.
    fn snapshot(&self) -> Vec<u8>;
    /// Resumes from a position returned by `snapshot`.
    fn restore(&mut self, position: &[u8]) -> Result<(), Error>;
    /// Called once before polling, with this subtask's index and the parallelism.
    fn open(&mut self, _subtask: u32, _parallelism: u32) -> Result<(), Error> {
        Ok(())
    }
}

struct SourceOperator<S>(S);

impl<S: Source> RawOperator for SourceOperator<S> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), Error> {
        self.0.open(ctx.subtask, ctx.parallelism)
    }
    fn process(&mut self, _: u32, _: Record<'_>, _: &mut Collector) -> Result<(), Error> {
        Err(crate::failed("a source has no input"))
    }
    fn poll_source(&mut self, max: u32, out: &mut Collector) -> Result<SourcePoll, Error> {
        Ok(match self.0.poll(max, out)? {
            SourceStatus::More => SourcePoll {
                watermark: None,
                finished: false,
            },
            SourceStatus::Watermark(w) => SourcePoll {
                watermark: Some(w),
                finished: false,
            },
            SourceStatus::Finished => SourcePoll {
                watermark: None,
                finished: true,
            },
        })
    }
    fn snapshot(&mut self) -> Result<Chunks, Error> {
        Ok(vec![(None, self.0.snapshot())])
    }
    fn restore(&mut self, key_group: Option<u32>, data: &[u8]) -> Result<(), Error> {
        match key_group {
            None => self.0.restore(data),
            Some(_) => Err(crate::failed("a source has no keyed state")),
        }
    }
}

/// A source operator; `make` creates one instance per subtask.
pub fn source<S, F>(name: &str, make: F) -> OperatorDef
where
    S: Source,
    F: Fn(&Config) -> Result<S, Error> + 'static,
{
    OperatorDef::new(
        name,
        OperatorKind::Source,
        Box::new(move |cfg| Ok(Box::new(SourceOperator(make(cfg)?)) as Box<dyn RawOperator>)),
    )
}
