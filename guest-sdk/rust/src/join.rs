//! Interval joins of two keyed streams, as Flink's `intervalJoin`: a record
//! of the left input (input 0) joins every record of the right input
//! (input 1) with the same key whose event time lies within
//! `[left + lower, left + upper]`.
//!
//! Each input's records are kept per key (keyed state, snapshotted and
//! restored like any other) for as long as the other input may still bring
//! a partner: a left record until the watermark passes `left + upper`, a
//! right record until it passes `right - lower`; an event-time timer drops
//! them then. A pair is joined once, when the later of its two records
//! arrives, and what the join emits carries the later of the two event
//! times. A record whose event time is below the watermark is late: it is
//! dropped and counted in the `late_records_dropped` metric (Flink's rule).
//! Records without an event time are an error.

use serde::{Deserialize, Serialize};

use crate::keyed::{KeyedContext, KeyedProcess, Timer};
use crate::operator::{Config, OperatorDef, co_process};
use crate::record::{Collector, Record};
use crate::window::LateRecords;
use crate::{Error, failed, invalid_config};

/// Which right records a left record joins: those whose event time minus
/// the left one's lies within the bounds (inclusive unless made exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    lower: i64,
    upper: i64,
}

impl Interval {
    /// Right records from `lower_ms` to `upper_ms` after the left record
    /// (negative: before it), both ends included.
    pub fn between(lower_ms: i64, upper_ms: i64) -> Self {
        Interval {
            lower: lower_ms,
            upper: upper_ms,
        }
    }

    /// Excludes the lower bound itself.
    pub fn lower_exclusive(mut self) -> Self {
        self.lower = self.lower.saturating_add(1);
        self
    }

    /// Excludes the upper bound itself.
    pub fn upper_exclusive(mut self) -> Self {
        self.upper = self.upper.saturating_sub(1);
        self
    }

    fn check(&self) -> Result<(), Error> {
        if self.lower > self.upper {
            return Err(invalid_config(format!(
                "an interval join's lower bound ({} ms) is above its upper bound ({} ms), \
                 exclusive bounds applied: no pair could ever join",
                self.lower, self.upper
            )));
        }
        Ok(())
    }

    /// The first watermark at which a left record at `ts` can have no
    /// partner still to come (future right records are at or after the
    /// watermark).
    fn left_expires(&self, ts: i64) -> i64 {
        ts.saturating_add(self.upper).saturating_add(1)
    }

    /// The same for a right record.
    fn right_expires(&self, ts: i64) -> i64 {
        ts.saturating_sub(self.lower).saturating_add(1)
    }
}

/// What a joined pair emits.
pub trait IntervalJoin: 'static {
    /// `left` (input 0) and `right` (input 1) share `key`, and `right`'s
    /// event time minus `left`'s is within the interval. Emitted records
    /// carry the later of the two event times unless given another.
    fn join(
        &mut self,
        key: &[u8],
        left: &Record<'_>,
        right: &Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error>;
}

/// A key's buffered records per input, each in ascending event time
/// (records of equal time in arrival order).
#[derive(Default, Serialize, Deserialize)]
struct Buffers {
    left: Vec<(i64, Vec<u8>)>,
    right: Vec<(i64, Vec<u8>)>,
}

/// An [`IntervalJoin`] run as a two-input keyed process function.
struct Joiner<J: IntervalJoin> {
    interval: Interval,
    join: J,
    late: LateRecords,
}

impl<J: IntervalJoin> Joiner<J> {
    /// Joins the record `r` at `ts` (from `input`) with its partners among
    /// `others`, the other input's buffered records.
    fn join_with(
        &mut self,
        key: &[u8],
        input: u32,
        r: &Record<'_>,
        ts: i64,
        others: &[(i64, Vec<u8>)],
        out: &mut Collector,
    ) -> Result<(), Error> {
        let (from, to) = if input == 0 {
            (
                ts.saturating_add(self.interval.lower),
                ts.saturating_add(self.interval.upper),
            )
        } else {
            (
                ts.saturating_sub(self.interval.upper),
                ts.saturating_sub(self.interval.lower),
            )
        };
        let first = others.partition_point(|(t, _)| *t < from);
        let at = out.timestamp;
        let mut result = Ok(());
        for (t, value) in others[first..].iter().take_while(|(t, _)| *t <= to) {
            let other = Record {
                key: Some(key),
                value,
                timestamp: Some(*t),
            };
            out.timestamp = Some(ts.max(*t));
            result = if input == 0 {
                self.join.join(key, r, &other, out)
            } else {
                self.join.join(key, &other, r, out)
            };
            if result.is_err() {
                break;
            }
        }
        out.timestamp = at;
        result
    }
}

impl<J: IntervalJoin> KeyedProcess for Joiner<J> {
    type State = Buffers;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Buffers>,
        r: Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let ts = r.timestamp.ok_or_else(|| {
            failed("an interval join received a record without an event time: assign timestamps upstream")
        })?;
        let watermark = ctx.watermark();
        if ts < watermark {
            self.late.dropped();
            return Ok(());
        }
        let input = ctx.input();
        let mut buffers = ctx.state().take().unwrap_or_default();
        let others = if input == 0 {
            &buffers.right
        } else {
            &buffers.left
        };
        let result = self.join_with(ctx.key(), input, &r, ts, others, out);
        let (own, expires) = if input == 0 {
            (&mut buffers.left, self.interval.left_expires(ts))
        } else {
            (&mut buffers.right, self.interval.right_expires(ts))
        };
        // Kept only if a partner may still come.
        let keep = expires > watermark;
        if keep {
            let at = own.partition_point(|(t, _)| *t <= ts);
            own.insert(at, (ts, r.value.to_vec()));
        }
        if !buffers.left.is_empty() || !buffers.right.is_empty() {
            *ctx.state() = Some(buffers);
        }
        if keep {
            ctx.register_event_timer(expires);
        }
        result
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Buffers>,
        timer: Timer,
        _out: &mut Collector,
    ) -> Result<(), Error> {
        self.late.report();
        let Some(mut buffers) = ctx.state().take() else {
            return Ok(());
        };
        let interval = self.interval;
        buffers
            .left
            .retain(|(t, _)| interval.left_expires(*t) > timer.time);
        buffers
            .right
            .retain(|(t, _)| interval.right_expires(*t) > timer.time);
        if !buffers.left.is_empty() || !buffers.right.is_empty() {
            *ctx.state() = Some(buffers);
        }
        Ok(())
    }
}

/// A two-input keyed operator joining its inputs' records of equal key
/// within `interval` of event time (both inputs partitioned by hash, with
/// event time).
///
/// Bids within ten seconds after a person registered:
///
/// ```
/// use sluice_sdk::prelude::*;
///
/// struct Pair;
///
/// impl IntervalJoin for Pair {
///     fn join(
///         &mut self,
///         key: &[u8],
///         person: &Record<'_>,
///         bid: &Record<'_>,
///         out: &mut Collector,
///     ) -> Result<(), Error> {
///         let mut line = person.value.to_vec();
///         line.push(b',');
///         line.extend_from_slice(bid.value);
///         out.emit_keyed(key, &line);
///         Ok(())
///     }
/// }
///
/// let op = interval_join("new-bidders", Interval::between(0, 10_000), |_| Ok(Pair));
/// # let _ = op;
/// ```
pub fn interval_join<J, F>(name: &str, interval: Interval, make: F) -> OperatorDef
where
    J: IntervalJoin,
    F: Fn(&Config) -> Result<J, Error> + 'static,
{
    co_process(name, move |cfg| {
        interval.check()?;
        Ok(Joiner {
            interval,
            join: make(cfg)?,
            late: LateRecords::default(),
        })
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::prelude::*;
    use crate::testing::Harness;

    /// Emits `key left-ts right-ts left-value right-value`.
    struct Pairs;

    impl IntervalJoin for Pairs {
        fn join(
            &mut self,
            key: &[u8],
            left: &Record<'_>,
            right: &Record<'_>,
            out: &mut Collector,
        ) -> Result<(), Error> {
            let line = format!(
                "{} {} {} {} {}",
                String::from_utf8_lossy(key),
                left.timestamp.unwrap_or_default(),
                right.timestamp.unwrap_or_default(),
                String::from_utf8_lossy(left.value),
                String::from_utf8_lossy(right.value),
            );
            out.emit(line.as_bytes());
            Ok(())
        }
    }

    /// The model's operators and their bounds: around the left record,
    /// wholly before it, wholly after it.
    const MODELS: [(&str, i64, i64); 3] = [
        ("model", -3, 5),
        ("model-before", -6, -2),
        ("model-after", 1, 4),
    ];

    struct App;

    impl Application for App {
        fn operators() -> Vec<OperatorDef> {
            vec![
                interval_join("around", Interval::between(-2, 3), |_| Ok(Pairs)),
                interval_join(
                    "exclusive",
                    Interval::between(-2, 3).lower_exclusive().upper_exclusive(),
                    |_| Ok(Pairs),
                ),
                interval_join("before", Interval::between(-10, -5), |_| Ok(Pairs)),
                interval_join("empty", Interval::between(0, 0).upper_exclusive(), |_| {
                    Ok(Pairs)
                }),
            ]
            .into_iter()
            .chain(MODELS.map(|(name, lower, upper)| {
                interval_join(name, Interval::between(lower, upper), |_| Ok(Pairs))
            }))
            .collect()
        }

        fn plan(_: &Args) -> Result<Graph, Error> {
            Ok(Graph::new())
        }
    }

    fn harness(op: &str) -> Harness {
        Harness::new::<App>(&[op]).expect("chain")
    }

    fn feed(h: &mut Harness, input: u32, recs: &[(&str, i64, &str)]) -> Vec<(String, i64)> {
        let mut c = Collector::default();
        for (k, ts, v) in recs {
            c.emit_at(Some(k.as_bytes()), v.as_bytes(), *ts);
        }
        let out = h.process_batch(input, &c.take_batch()).expect("process");
        let mut lines: Vec<(String, i64)> =
            crate::record::records(&out.records.data, &out.records.meta)
                .map(|r| {
                    let r = r.expect("valid");
                    (
                        String::from_utf8(r.value.to_vec()).expect("utf-8"),
                        r.timestamp.expect("an event time"),
                    )
                })
                .collect();
        lines.sort();
        lines
    }

    fn values(lines: Vec<(String, i64)>) -> Vec<String> {
        lines.into_iter().map(|(l, _)| l).collect()
    }

    use crate::testing::sorted_values as owned;

    #[test]
    fn a_left_record_joins_the_right_records_within_its_interval_whichever_came_first() {
        let mut h = harness("around");
        // Right records from 2 to 13; the left one at 10 takes 8..=13.
        assert!(
            feed(
                &mut h,
                1,
                &[
                    ("a", 2, "r2"),
                    ("a", 7, "r7"),
                    ("a", 8, "r8"),
                    ("b", 9, "b9")
                ]
            )
            .is_empty()
        );
        assert_eq!(
            feed(&mut h, 0, &[("a", 10, "l10")]),
            [("a 10 8 l10 r8".to_owned(), 10)],
            "a pair carries the later event time"
        );
        // Right records after the left one find it in its buffer.
        assert_eq!(
            feed(
                &mut h,
                1,
                &[("a", 13, "r13"), ("a", 14, "r14"), ("a", 10, "r10")]
            ),
            [
                ("a 10 10 l10 r10".to_owned(), 10),
                ("a 10 13 l10 r13".to_owned(), 13)
            ]
        );
        assert!(h.end_of_input().expect("end").is_empty());
    }

    #[test]
    fn exclusive_bounds_leave_out_the_ends() {
        let mut h = harness("exclusive");
        feed(&mut h, 0, &[("a", 10, "l")]);
        assert_eq!(
            values(feed(
                &mut h,
                1,
                &[
                    ("a", 8, "r8"),
                    ("a", 9, "r9"),
                    ("a", 12, "r12"),
                    ("a", 13, "r13")
                ]
            )),
            ["a 10 12 l r12", "a 10 9 l r9"]
        );
    }

    #[test]
    fn an_interval_wholly_before_the_left_record_joins_earlier_right_records() {
        let mut h = harness("before");
        feed(&mut h, 1, &[("a", 0, "r0"), ("a", 4, "r4"), ("a", 6, "r6")]);
        assert_eq!(
            values(feed(&mut h, 0, &[("a", 11, "l11")])),
            ["a 11 4 l11 r4", "a 11 6 l11 r6"]
        );
    }

    #[test]
    fn an_interval_with_no_room_is_refused_with_its_bounds() {
        let err = Harness::new::<App>(&["empty"]).err().expect("refused");
        let text = format!("{err:?}");
        assert!(
            text.contains("lower bound (0 ms) is above its upper bound (-1 ms)"),
            "{text}"
        );
    }

    #[test]
    fn late_records_are_dropped_and_expired_ones_forgotten() {
        let mut h = harness("around");
        feed(&mut h, 0, &[("a", 10, "l10"), ("a", 20, "l20")]);
        // Left 10 is needed until the watermark passes 13.
        assert!(owned(h.advance_watermark(13).expect("wm")).is_empty());
        assert_eq!(
            values(feed(&mut h, 1, &[("a", 13, "r13")])),
            ["a 10 13 l10 r13"]
        );
        h.advance_watermark(14).expect("wm");
        // 12 is late now (below the watermark): dropped, though left 10
        // would have matched it.
        assert!(feed(&mut h, 1, &[("a", 12, "r12")]).is_empty());
        // 14 is not late, and left 10 is gone (14 is outside its interval
        // anyway); left 20 is not reached.
        assert!(feed(&mut h, 1, &[("a", 14, "r14")]).is_empty());
        // Past every record's expiry nothing is kept.
        h.advance_watermark(100).expect("wm");
        assert!(h.snapshot().expect("snapshot").is_empty());
    }

    #[test]
    fn buffered_records_survive_a_snapshot_and_restore() {
        let mut h = harness("around");
        feed(&mut h, 0, &[("a", 10, "l10"), ("b", 5, "l5")]);
        feed(&mut h, 1, &[("b", 30, "r30")]);
        let chunks = h.snapshot().expect("snapshot");
        assert!(!chunks.is_empty());
        let mut restored =
            Harness::with_spec::<App>(&[("around", vec![])], 0, 1, 128, chunks).expect("restore");
        assert_eq!(
            values(feed(&mut restored, 1, &[("a", 11, "r11"), ("b", 6, "r6")])),
            ["a 10 11 l10 r11", "b 5 6 l5 r6"]
        );
        assert_eq!(
            values(feed(&mut restored, 0, &[("b", 28, "l28")])),
            ["b 28 30 l28 r30"]
        );
        // The cleanup timers came back too.
        restored.advance_watermark(1_000).expect("wm");
        assert!(restored.snapshot().expect("snapshot").is_empty());
    }

    #[test]
    fn a_record_without_an_event_time_is_an_error() {
        let mut h = harness("around");
        let err = h.process(0, &[(Some(b"a".as_slice()), b"x".as_slice())]);
        let text = format!("{:?}", err.expect_err("refused"));
        assert!(text.contains("without an event time"), "{text}");
    }

    #[derive(Clone, Debug)]
    enum Step {
        Record(u32, u8, i64),
        Watermark(i64),
        Restore,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0u32..2, 0u8..2, 0i64..16).prop_map(|(i, k, t)| Step::Record(i, k, t)),
            3 => (0i64..18).prop_map(Step::Watermark),
            1 => Just(Step::Restore),
        ]
    }

    proptest! {
        /// Records of both inputs, out of order and late, watermarks and
        /// restores from snapshots, against the definition: every pair of
        /// records that were not late on arrival, of one key, within the
        /// interval, joined exactly once when the later one arrives.
        #[test]
        fn interval_joins_match_the_definition(
            model in 0..MODELS.len(),
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let (name, lower, upper) = MODELS[model];
            let mut h = harness(name);
            let mut watermark = i64::MIN;
            // Accepted records: (input, key, ts, value).
            let mut seen: Vec<(u32, &str, i64, String)> = Vec::new();
            for (n, s) in steps.into_iter().enumerate() {
                match s {
                    Step::Record(input, k, ts) => {
                        let key = ["a", "b"][k as usize];
                        let value = format!("v{n}");
                        let got = values(feed(&mut h, input, &[(key, ts, &value)]));
                        let mut want = Vec::new();
                        if ts >= watermark {
                            for (i, k2, t2, v2) in &seen {
                                if *i == input || *k2 != key {
                                    continue;
                                }
                                let (lt, rt, lv, rv) = if input == 0 {
                                    (ts, *t2, value.as_str(), v2.as_str())
                                } else {
                                    (*t2, ts, v2.as_str(), value.as_str())
                                };
                                if (lower..=upper).contains(&(rt - lt)) {
                                    want.push(format!("{key} {lt} {rt} {lv} {rv}"));
                                }
                            }
                            seen.push((input, key, ts, value));
                        }
                        want.sort();
                        prop_assert_eq!(got, want);
                    }
                    Step::Watermark(wm) => {
                        prop_assert!(h.advance_watermark(wm).expect("wm").is_empty());
                        watermark = watermark.max(wm);
                    }
                    Step::Restore => {
                        let chunks = h.snapshot().expect("snapshot");
                        h = Harness::with_spec::<App>(&[(name, vec![])], 0, 1, 128, chunks)
                            .expect("restore");
                        if watermark > i64::MIN {
                            // Watermarks are not state: sources send theirs again.
                            h.advance_watermark(watermark).expect("wm");
                        }
                    }
                }
            }
            prop_assert!(h.end_of_input().expect("end").is_empty());
            // Every buffered record expired with the input's end.
            prop_assert!(h.snapshot().expect("snapshot").is_empty());
        }
    }
}
