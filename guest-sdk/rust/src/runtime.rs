//! The glue between the contract's exports and an [`Application`]: one
//! `chain` per subtask runs its operators in order inside a single call.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::bindings::exports::sluice::app::app::OperatorInfo;
use crate::bindings::exports::sluice::app::task::{
    self, ChainSpec, Output, SourceOutput, StateChunk,
};
use crate::bindings::sluice::app::plan::Graph as WitGraph;
use crate::bindings::sluice::app::types::Batch;
use crate::operator::{OpenContext, RawOperator, process_batch};
use crate::record::Collector;
use crate::{Application, Args, Error, invalid_config};

#[doc(hidden)]
pub fn operators<A: Application>() -> Vec<OperatorInfo> {
    A::operators()
        .into_iter()
        .map(|d| OperatorInfo {
            name: d.name,
            kind: d.kind,
            description: d.description,
        })
        .collect()
}

#[doc(hidden)]
pub fn plan<A: Application>(args: Vec<(String, String)>) -> Result<WitGraph, Error> {
    A::plan(&Args::new(args)).map(crate::Graph::into_wit)
}

pub(crate) struct Chain {
    ops: Vec<Box<dyn RawOperator>>,
    /// Scratch buffers between operators: `bufs[i]` holds operator i's output.
    bufs: Vec<Collector>,
    /// Records each operator emitted during the current call.
    emitted: Vec<u64>,
}

impl Chain {
    /// Feeds operator `i`'s pending output through operators `i+1..` and
    /// returns the last operator's output.
    fn drain_from(&mut self, i: usize) -> Result<(), Error> {
        for j in i + 1..self.ops.len() {
            let (before, after) = self.bufs.split_at_mut(j);
            let input = &mut before[j - 1];
            if input.is_empty() {
                continue;
            }
            self.emitted[j - 1] += input.len() as u64;
            process_batch(
                &mut *self.ops[j],
                0,
                &input.data,
                &input.meta,
                &mut after[0],
            )?;
            input.clear();
        }
        Ok(())
    }

    fn output(&mut self) -> Output {
        let next = self
            .ops
            .iter()
            .filter_map(|o| o.next_processing_timer())
            .min();
        let last = self
            .bufs
            .last_mut()
            .expect("invariant: a chain has at least one operator");
        let n = self.emitted.len();
        self.emitted[n - 1] += last.len() as u64;
        // One host call per operator that emitted anything, not per record.
        for (i, count) in self.emitted.iter_mut().enumerate() {
            if *count > 0 {
                crate::counter_add(&format!("sluice.records-out.{i}"), core::mem::take(count));
            }
        }
        Output {
            records: last.take_batch(),
            next_processing_timer: next,
        }
    }

    /// Runs `step` on every operator in order, passing what each emits downstream.
    fn each_operator(
        &mut self,
        mut step: impl FnMut(&mut dyn RawOperator, &mut Collector) -> Result<(), Error>,
    ) -> Result<Output, Error> {
        for i in 0..self.ops.len() {
            step(&mut *self.ops[i], &mut self.bufs[i])?;
            self.drain_from(i)?;
        }
        Ok(self.output())
    }
}

impl Chain {
    /// Creates the operators of a chain and restores their state.
    pub(crate) fn create<A: Application>(spec: ChainSpec) -> Result<Chain, Error> {
        if spec.operators.is_empty() {
            return Err(invalid_config("a chain needs at least one operator"));
        }
        let mut defs = A::operators();
        let ctx = OpenContext {
            subtask: spec.subtask,
            parallelism: spec.parallelism,
            max_parallelism: spec.max_parallelism,
        };
        let mut ops = Vec::with_capacity(spec.operators.len());
        for o in spec.operators {
            let def = defs
                .iter_mut()
                .find(|d| d.name == o.operator)
                .ok_or_else(|| {
                    invalid_config(format!(
                        "node `{}` names operator `{}`, which this application does not export",
                        o.node, o.operator
                    ))
                })?;
            let mut op = (def.factory)(&Args::new(o.config))?;
            op.open(&ctx)?;
            ops.push(op);
        }
        for chunk in spec.restore {
            let op = ops.get_mut(chunk.operator as usize).ok_or_else(|| {
                invalid_config(format!(
                    "restored state names operator {} of the chain",
                    chunk.operator
                ))
            })?;
            op.restore(chunk.key_group, &chunk.data)?;
        }
        let bufs = ops.iter().map(|_| Collector::default()).collect();
        let emitted = vec![0; ops.len()];
        Ok(Chain { ops, bufs, emitted })
    }

    pub(crate) fn process(&mut self, input: u32, records: &Batch) -> Result<Output, Error> {
        process_batch(
            &mut *self.ops[0],
            input,
            &records.data,
            &records.meta,
            &mut self.bufs[0],
        )?;
        self.drain_from(0)?;
        Ok(self.output())
    }

    pub(crate) fn poll_source(&mut self, max_records: u32) -> Result<SourceOutput, Error> {
        let poll = self.ops[0].poll_source(max_records, &mut self.bufs[0])?;
        self.drain_from(0)?;
        Ok(SourceOutput {
            output: self.output(),
            watermark: poll.watermark,
            finished: poll.finished,
        })
    }

    pub(crate) fn advance_watermark(&mut self, watermark: i64) -> Result<Output, Error> {
        self.each_operator(|op, out| op.watermark(watermark, out))
    }

    pub(crate) fn advance_processing_time(&mut self, now: i64) -> Result<Output, Error> {
        self.each_operator(|op, out| op.processing_time(now, out))
    }

    pub(crate) fn end_of_input(&mut self) -> Result<Output, Error> {
        self.each_operator(|op, out| op.end_of_input(out))
    }

    pub(crate) fn snapshot(&mut self) -> Result<Vec<StateChunk>, Error> {
        let mut chunks = Vec::new();
        for (i, op) in self.ops.iter_mut().enumerate() {
            for (key_group, data) in op.snapshot()? {
                chunks.push(StateChunk {
                    operator: i as u32,
                    key_group,
                    data,
                });
            }
        }
        Ok(chunks)
    }
}

/// The `chain` resource, generic over the application.
#[doc(hidden)]
pub struct ChainImpl<A> {
    chain: RefCell<Chain>,
    _app: PhantomData<fn() -> A>,
}

impl<A: Application> task::GuestChain for ChainImpl<A> {
    fn create(spec: ChainSpec) -> Result<task::Chain, Error> {
        let chain = Chain::create::<A>(spec)?;
        Ok(task::Chain::new(ChainImpl::<A> {
            chain: RefCell::new(chain),
            _app: PhantomData,
        }))
    }

    fn process(&self, input: u32, records: Batch) -> Result<Output, Error> {
        self.chain.borrow_mut().process(input, &records)
    }

    fn poll_source(&self, max_records: u32) -> Result<SourceOutput, Error> {
        self.chain.borrow_mut().poll_source(max_records)
    }

    fn advance_watermark(&self, watermark: i64) -> Result<Output, Error> {
        self.chain.borrow_mut().advance_watermark(watermark)
    }

    fn advance_processing_time(&self, now: i64) -> Result<Output, Error> {
        self.chain.borrow_mut().advance_processing_time(now)
    }

    fn end_of_input(&self) -> Result<Output, Error> {
        self.chain.borrow_mut().end_of_input()
    }

    fn snapshot(&self, _checkpoint_id: u64) -> Result<Vec<StateChunk>, Error> {
        self.chain.borrow_mut().snapshot()
    }
}
