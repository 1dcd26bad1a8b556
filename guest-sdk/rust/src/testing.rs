//! Running an application's operators natively, for unit tests and
//! benchmarks: the same chain runtime the component uses, without wasm.

use crate::bindings::exports::sluice::app::task::{ChainSpec, OperatorSpec, Output, StateChunk};
use crate::bindings::sluice::app::types::Batch;
use crate::record::{Collector, records};
use crate::runtime::Chain;
use crate::{Application, Error};

/// A record emitted by a chain under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its event time.
    pub timestamp: Option<i64>,
}

/// The values of `out` as text, sorted (what the SDK's own tests compare).
#[cfg(test)]
pub(crate) fn sorted_values(out: Vec<OwnedRecord>) -> Vec<String> {
    let mut v: Vec<String> = out
        .into_iter()
        .map(|r| String::from_utf8(r.value).expect("utf-8"))
        .collect();
    v.sort();
    v
}

/// A chain of an application's operators, run in-process.
pub struct Harness {
    chain: Chain,
}

impl Harness {
    /// A chain of the named operators (no config) as subtask 0 of 1.
    pub fn new<A: Application>(operators: &[&str]) -> Result<Self, Error> {
        let ops = operators
            .iter()
            .map(|o| (*o, Vec::new()))
            .collect::<Vec<_>>();
        Self::with_spec::<A>(
            &ops,
            0,
            1,
            sluice_keygroup::DEFAULT_MAX_PARALLELISM,
            Vec::new(),
        )
    }

    /// A chain with configured operators, a position in the job, and state
    /// to restore.
    pub fn with_spec<A: Application>(
        operators: &[(&str, Vec<(String, String)>)],
        subtask: u32,
        parallelism: u32,
        max_parallelism: u32,
        restore: Vec<StateChunk>,
    ) -> Result<Self, Error> {
        let spec = ChainSpec {
            operators: operators
                .iter()
                .map(|(op, config)| OperatorSpec {
                    operator: (*op).to_owned(),
                    node: (*op).to_owned(),
                    config: config.clone(),
                })
                .collect(),
            subtask,
            parallelism,
            max_parallelism,
            restore,
        };
        Ok(Harness {
            chain: Chain::create::<A>(spec)?,
        })
    }

    /// Runs `(key, value)` records through the chain on `input`.
    pub fn process(
        &mut self,
        input: u32,
        recs: &[(Option<&[u8]>, &[u8])],
    ) -> Result<Vec<OwnedRecord>, Error> {
        let mut c = Collector::default();
        for (k, v) in recs {
            match k {
                Some(k) => c.emit_keyed(k, v),
                None => c.emit(v),
            }
        }
        let out = self.chain.process(input, &c.take_batch())?;
        owned(out)
    }

    /// Runs a batch in the contract's layout through the chain.
    pub fn process_batch(&mut self, input: u32, batch: &Batch) -> Result<Output, Error> {
        self.chain.process(input, batch)
    }

    /// Advances the watermark and returns what fired.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<Vec<OwnedRecord>, Error> {
        owned(self.chain.advance_watermark(watermark)?)
    }

    /// Advances processing time and returns what fired.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<Vec<OwnedRecord>, Error> {
        owned(self.chain.advance_processing_time(now)?)
    }

    /// The earliest pending processing-time timer, as the host would see it.
    pub fn next_processing_timer(&mut self) -> Result<Option<i64>, Error> {
        Ok(self
            .chain
            .advance_processing_time(i64::MIN)?
            .next_processing_timer)
    }

    /// Ends the input and returns what was flushed.
    pub fn end_of_input(&mut self) -> Result<Vec<OwnedRecord>, Error> {
        owned(self.chain.end_of_input()?)
    }

    /// Snapshots the chain's state.
    pub fn snapshot(&mut self) -> Result<Vec<StateChunk>, Error> {
        self.chain.snapshot()
    }
}

fn owned(out: Output) -> Result<Vec<OwnedRecord>, Error> {
    records(&out.records.data, &out.records.meta)
        .map(|r| {
            r.map(|r| OwnedRecord {
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.to_vec(),
                timestamp: r.timestamp,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// Sums u64 values per key; emits `key=sum` when the watermark passes
    /// the timer set at the record's timestamp.
    struct Sum;

    impl KeyedProcess for Sum {
        type State = u64;

        fn process(
            &mut self,
            ctx: &mut KeyedContext<'_, u64>,
            r: Record<'_>,
            _: &mut Collector,
        ) -> Result<(), Error> {
            let v: u64 = r
                .value_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| failed("not a number"))?;
            *ctx.state_or_default() += v;
            ctx.register_event_timer(r.timestamp.unwrap_or(i64::MAX));
            Ok(())
        }

        fn on_timer(
            &mut self,
            ctx: &mut KeyedContext<'_, u64>,
            _: Timer,
            out: &mut Collector,
        ) -> Result<(), Error> {
            let line = format!(
                "{}={}",
                String::from_utf8_lossy(ctx.key()),
                ctx.get().copied().unwrap_or(0)
            );
            out.emit(line.as_bytes());
            Ok(())
        }
    }

    struct App;

    impl Application for App {
        fn operators() -> Vec<OperatorDef> {
            vec![keyed_process("sum", |_| Ok(Sum))]
        }

        fn plan(_: &Args) -> Result<Graph, Error> {
            Ok(Graph::new())
        }
    }

    use super::sorted_values as values;

    #[test]
    fn event_time_timers_fire_when_the_watermark_passes_them() {
        let mut h = Harness::new::<App>(&["sum"]).expect("chain");
        let mut c = Collector::default();
        c.emit_at(Some(b"a"), b"1", 10);
        c.emit_at(Some(b"b"), b"5", 30);
        c.emit_at(Some(b"a"), b"2", 10);
        let out = h.process_batch(0, &c.take_batch()).expect("process");
        assert!(out.records.meta.is_empty());
        assert_eq!(values(h.advance_watermark(20).expect("wm")), ["a=3"]);
        assert_eq!(
            values(h.advance_watermark(20).expect("wm")),
            Vec::<String>::new()
        );
        assert_eq!(values(h.end_of_input().expect("end")), ["b=5"]);
    }

    /// Emits `key` once processing time reaches 100 ms after the record.
    struct Ping;

    impl KeyedProcess for Ping {
        type State = ();

        fn process(
            &mut self,
            ctx: &mut KeyedContext<'_, ()>,
            r: Record<'_>,
            _: &mut Collector,
        ) -> Result<(), Error> {
            let at: i64 = r
                .value_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| failed("not a time"))?;
            ctx.register_processing_timer(at + 100);
            Ok(())
        }

        fn on_timer(
            &mut self,
            ctx: &mut KeyedContext<'_, ()>,
            t: Timer,
            out: &mut Collector,
        ) -> Result<(), Error> {
            assert_eq!(t.domain, TimeDomain::ProcessingTime);
            out.emit(ctx.key());
            Ok(())
        }
    }

    struct PingApp;

    impl Application for PingApp {
        fn operators() -> Vec<OperatorDef> {
            vec![keyed_process("ping", |_| Ok(Ping))]
        }

        fn plan(_: &Args) -> Result<Graph, Error> {
            Ok(Graph::new())
        }
    }

    #[test]
    fn processing_time_timers_fire_in_time_order_and_report_the_next_one() {
        let mut h = Harness::new::<PingApp>(&["ping"]).expect("chain");
        h.process(0, &[(Some(b"late"), b"500"), (Some(b"early"), b"0")])
            .expect("process");
        assert_eq!(h.next_processing_timer().expect("timer"), Some(100));
        assert_eq!(
            values(h.advance_processing_time(99).expect("tick")),
            Vec::<String>::new()
        );
        assert_eq!(
            values(h.advance_processing_time(100).expect("tick")),
            ["early"]
        );
        assert_eq!(h.next_processing_timer().expect("timer"), Some(600));
        assert_eq!(
            values(h.advance_processing_time(1_000).expect("tick")),
            ["late"]
        );
        assert_eq!(h.next_processing_timer().expect("timer"), None);
    }

    #[test]
    fn a_record_without_a_key_fails_the_keyed_operator() {
        let mut h = Harness::new::<App>(&["sum"]).expect("chain");
        let err = h.process(0, &[(None, b"1")]).expect_err("no key");
        assert!(matches!(err, Error::Failed(m) if m.contains("without a key")));
    }

    #[test]
    fn state_snapshotted_at_parallelism_1_restores_across_4_subtasks() {
        let max = 16;
        let mut one =
            Harness::with_spec::<App>(&[("sum", vec![])], 0, 1, max, vec![]).expect("chain");
        let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            one.process(0, &[(Some(k.as_bytes()), i.to_string().as_bytes())])
                .expect("process");
        }
        let chunks = one.snapshot().expect("snapshot");
        assert!(
            chunks
                .iter()
                .all(|c| c.key_group.is_some_and(|kg| kg < max))
        );
        let mut totals = Vec::new();
        for s in 0..4 {
            let mine: Vec<StateChunk> = chunks
                .iter()
                .filter(|c| sluice_keygroup::owner(c.key_group.expect("keyed"), max, 4) == s)
                .cloned()
                .collect();
            let mut h =
                Harness::with_spec::<App>(&[("sum", vec![])], s, 4, max, mine).expect("restore");
            totals.extend(values(h.end_of_input().expect("end")));
        }
        totals.sort();
        let mut expected: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k}={i}"))
            .collect();
        expected.sort();
        assert_eq!(totals, expected);
    }
}
