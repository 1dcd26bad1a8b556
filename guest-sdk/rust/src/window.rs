//! Event-time windows over a keyed stream: tumbling, sliding and session
//! windows with allowed lateness, as Flink's window operators have them.
//!
//! A [`WindowAggregate`] says how a record changes a window's accumulator
//! and what a window emits when it fires; [`keyed_window`] (one input) and
//! [`co_window`] (two inputs, e.g. a window join) turn it into a keyed
//! operator. Per key, the open windows and their accumulators are keyed
//! state (snapshotted and restored like any other); each window registers
//! one timer when it opens, at its last millisecond.
//!
//! Semantics (those of Flink's event-time windows with the default trigger):
//! a window `[start, end)` fires once the watermark reaches `end - 1`; it is
//! kept for `allowed lateness` more, and a record arriving in that time
//! adds to it and fires it again at once; a record for a window whose
//! `end - 1 + lateness` the watermark has already reached is late and
//! dropped (counted in the `late_records_dropped` metric), unless it joins
//! a session that is still open. Records without an event time are an
//! error.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::keyed::{KeyedContext, KeyedProcess, Timer};
use crate::operator::{Config, OperatorDef, co_process, keyed_process};
use crate::record::{Collector, Record};
use crate::{Error, failed, invalid_config};

/// The counter of records dropped for arriving too late.
const LATE_METRIC: &str = "late_records_dropped";
/// Late records counted in the guest before one host call reports them
/// (they are also reported whenever a timer fires).
const LATE_REPORT: u64 = 1024;

/// Late records an operator dropped and has not yet reported to the
/// `late_records_dropped` counter (one host call per [`LATE_REPORT`], and on
/// every timer).
#[derive(Default)]
pub(crate) struct LateRecords(u64);

impl LateRecords {
    /// One more record dropped.
    pub(crate) fn dropped(&mut self) {
        self.0 += 1;
        if self.0 >= LATE_REPORT {
            self.report();
        }
    }

    /// Reports what was counted since the last report.
    pub(crate) fn report(&mut self) {
        if self.0 > 0 {
            crate::counter_add(LATE_METRIC, std::mem::take(&mut self.0));
        }
    }
}

/// The most sliding windows one record may belong to (`size / slide`):
/// beyond, every record would cost a window's state and work many times.
const MAX_WINDOWS_PER_RECORD: i64 = 10_000;

/// A window of event time: `[start, end)` in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
}

impl Window {
    /// The window's last millisecond: the time its results carry, and the
    /// watermark at which it fires.
    pub fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }

    fn cover(&self, other: &Window) -> Window {
        Window {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// Which windows a record belongs to, and how long they wait for late records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    kind: Kind,
    lateness: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

impl Windows {
    /// Back-to-back windows of `size_ms`, aligned to the epoch.
    pub fn tumbling(size_ms: i64) -> Self {
        Windows {
            kind: Kind::Tumbling { size: size_ms },
            lateness: 0,
        }
    }

    /// Windows of `size_ms` starting every `slide_ms` (aligned to the epoch);
    /// a record belongs to every window that covers its time.
    pub fn sliding(size_ms: i64, slide_ms: i64) -> Self {
        Windows {
            kind: Kind::Sliding {
                size: size_ms,
                slide: slide_ms,
            },
            lateness: 0,
        }
    }

    /// Per key, records less than `gap_ms` apart share a window: a session
    /// ends `gap_ms` after its last record. Sessions that a record bridges
    /// are merged (with [`WindowAggregate::merge`]).
    pub fn session(gap_ms: i64) -> Self {
        Windows {
            kind: Kind::Session { gap: gap_ms },
            lateness: 0,
        }
    }

    /// Keeps each window `lateness_ms` past its end for late records (0 by
    /// default: a window is dropped once it has fired).
    pub fn allowed_lateness(mut self, lateness_ms: i64) -> Self {
        self.lateness = lateness_ms;
        self
    }

    /// Refuses sizes that cannot work, naming the setting.
    fn check(&self) -> Result<(), Error> {
        let positive = |what: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(invalid_config(format!(
                    "a window's {what} must be positive, not {v} ms"
                )))
            }
        };
        match self.kind {
            Kind::Tumbling { size } => positive("size", size)?,
            Kind::Sliding { size, slide } => {
                positive("size", size)?;
                positive("slide", slide)?;
                let per_record = size / slide + i64::from(size % slide != 0);
                if per_record > MAX_WINDOWS_PER_RECORD {
                    return Err(invalid_config(format!(
                        "sliding windows of {size} ms every {slide} ms put each record in \
                         {per_record} windows; at most {MAX_WINDOWS_PER_RECORD}"
                    )));
                }
            }
            Kind::Session { gap } => positive("session gap", gap)?,
        }
        if self.lateness < 0 {
            return Err(invalid_config(format!(
                "allowed lateness must not be negative, not {} ms",
                self.lateness
            )));
        }
        Ok(())
    }

    /// The windows a record at `ts` belongs to (a session: its own, before
    /// merging), in ascending order of start.
    fn assign(&self, ts: i64, into: &mut Vec<Window>) {
        into.clear();
        let window = |start: i64, size: i64| Window {
            start,
            end: start.saturating_add(size),
        };
        match self.kind {
            Kind::Tumbling { size } => into.push(window(ts - ts.rem_euclid(size), size)),
            Kind::Sliding { size, slide } => {
                let last = ts - ts.rem_euclid(slide);
                let mut start = last;
                while start > ts.saturating_sub(size) {
                    into.push(window(start, size));
                    match start.checked_sub(slide) {
                        Some(s) => start = s,
                        None => break,
                    }
                }
                into.reverse();
            }
            Kind::Session { gap } => into.push(window(ts, gap)),
        }
    }

    /// The watermark from which `w` takes no more records.
    fn closes(&self, w: &Window) -> i64 {
        w.max_timestamp().saturating_add(self.lateness)
    }
}

/// What a window computes: how a record changes its accumulator, and what
/// it emits when it fires.
pub trait WindowAggregate: 'static {
    /// A window's running result, kept in keyed state (serialised with
    /// postcard into snapshots).
    type Acc: Serialize + DeserializeOwned + Default + 'static;

    /// Adds `record` (from `input`: 0, or 1 for a [`co_window`]'s second
    /// input) to `window`'s accumulator.
    fn add(
        &mut self,
        acc: &mut Self::Acc,
        window: Window,
        input: u32,
        record: &Record<'_>,
    ) -> Result<(), Error>;

    /// `window` of `key` fired: emit its result. Emitted records carry the
    /// window's last millisecond as their event time.
    fn fire(
        &mut self,
        key: &[u8],
        window: Window,
        acc: &Self::Acc,
        out: &mut Collector,
    ) -> Result<(), Error>;

    /// Session windows only: folds `other` into `acc` when a record bridges
    /// two sessions.
    fn merge(&mut self, acc: &mut Self::Acc, other: Self::Acc) -> Result<(), Error> {
        let _ = (acc, other);
        Err(failed(
            "session windows merge accumulators: implement WindowAggregate::merge",
        ))
    }
}

/// A key's open windows, in ascending order of start.
#[derive(Serialize, Deserialize)]
#[serde(bound = "A: Serialize + DeserializeOwned")]
struct Open<A>(Vec<(Window, A)>);

impl<A> Default for Open<A> {
    fn default() -> Self {
        Open(Vec::new())
    }
}

/// A [`WindowAggregate`] run as a keyed process function.
struct Windowed<W: WindowAggregate> {
    windows: Windows,
    aggregate: W,
    /// Reused for assigning windows (no allocation per record).
    assigned: Vec<Window>,
    late: LateRecords,
}

impl<W: WindowAggregate> Windowed<W> {
    fn fire(
        &mut self,
        key: &[u8],
        window: Window,
        acc: &W::Acc,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let at = out.timestamp.replace(window.max_timestamp());
        let result = self.aggregate.fire(key, window, acc, out);
        out.timestamp = at;
        result
    }

    /// A new window's timers: when it fires (unless the watermark passed
    /// that already: a late window fires as records come), and when it is
    /// dropped.
    fn register(&self, ctx: &mut KeyedContext<'_, Open<W::Acc>>, w: &Window) {
        if w.max_timestamp() > ctx.watermark() {
            ctx.register_event_timer(w.max_timestamp());
        }
        if self.windows.lateness > 0 {
            ctx.register_event_timer(self.windows.closes(w));
        }
    }

    /// Adds a record to one window (opening it if new), firing it at once
    /// if the watermark already passed its end.
    fn add_to(
        &mut self,
        ctx: &mut KeyedContext<'_, Open<W::Acc>>,
        window: Window,
        r: &Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let input = ctx.input();
        let watermark = ctx.watermark();
        let open = &mut ctx.state_or_default().0;
        let at = match open.binary_search_by_key(&window.start, |(w, _)| w.start) {
            Ok(at) => at,
            Err(at) => {
                open.insert(at, (window, W::Acc::default()));
                self.register(ctx, &window);
                at
            }
        };
        let open = &mut ctx.state_or_default().0;
        self.aggregate.add(&mut open[at].1, window, input, r)?;
        if window.max_timestamp() <= watermark {
            // Late but within the allowed lateness: the window fired
            // already, and fires again with this record in it.
            let key = ctx.key();
            let open = &ctx.get().expect("invariant: the window was just added").0;
            self.fire(key, window, &open[at].1, out)?;
        }
        Ok(())
    }

    /// Adds a record to `window`, one of those it was assigned to: merged
    /// first with the sessions it overlaps (a session), dropped if late.
    fn add_record(
        &mut self,
        ctx: &mut KeyedContext<'_, Open<W::Acc>>,
        window: Window,
        r: &Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        // A record that joins an open session is never late: open windows
        // are those the watermark has not closed yet (as in Flink, which
        // merges first and then drops a late result).
        let window = match self.windows.kind {
            Kind::Session { .. } => self.merge_sessions(ctx, window)?,
            _ => window,
        };
        if self.windows.closes(&window) <= ctx.watermark() {
            self.late.dropped();
            return Ok(());
        }
        self.add_to(ctx, window, r, out)
    }

    /// Merges `window` (a new session) with every open session it overlaps;
    /// the merged window (`window` itself if it overlaps none).
    fn merge_sessions(
        &mut self,
        ctx: &mut KeyedContext<'_, Open<W::Acc>>,
        window: Window,
    ) -> Result<Window, Error> {
        let open = &mut ctx.state_or_default().0;
        let mut merged = window;
        let mut acc: Option<W::Acc> = None;
        let mut i = 0;
        while i < open.len() {
            if open[i].0.overlaps(&merged) {
                let (w, a) = open.remove(i);
                merged = merged.cover(&w);
                match acc.as_mut() {
                    None => acc = Some(a),
                    Some(into) => self.aggregate.merge(into, a)?,
                }
                // Earlier sessions may overlap the grown window: look again.
                i = 0;
            } else {
                i += 1;
            }
        }
        if let Some(acc) = acc {
            let at = open.partition_point(|(w, _)| w.start < merged.start);
            open.insert(at, (merged, acc));
            // Timers of absorbed sessions that ended earlier fire into
            // nothing; the merged session's own are registered here (again,
            // harmlessly, if it ends where one of them did).
            self.register(ctx, &merged);
        }
        Ok(merged)
    }
}

impl<W: WindowAggregate> KeyedProcess for Windowed<W> {
    type State = Open<W::Acc>;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Open<W::Acc>>,
        r: Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error> {
        let ts = r.timestamp.ok_or_else(|| {
            failed("a window operator received a record without an event time: assign timestamps upstream")
        })?;
        let mut assigned = std::mem::take(&mut self.assigned);
        self.windows.assign(ts, &mut assigned);
        let result = assigned
            .iter()
            .try_for_each(|&w| self.add_record(ctx, w, &r, out));
        self.assigned = assigned;
        if ctx.get().is_some_and(|o| o.0.is_empty()) {
            ctx.clear_state();
        }
        result
    }

    fn on_timer(
        &mut self,
        ctx: &mut KeyedContext<'_, Open<W::Acc>>,
        timer: Timer,
        out: &mut Collector,
    ) -> Result<(), Error> {
        self.late.report();
        let Some(open) = ctx.state().take() else {
            return Ok(());
        };
        let key = ctx.key();
        let mut kept = Vec::with_capacity(open.0.len());
        let mut result = Ok(());
        for (w, acc) in open.0 {
            if result.is_ok() && w.max_timestamp() == timer.time {
                result = self.fire(key, w, &acc, out);
            }
            if self.windows.closes(&w) > timer.time {
                kept.push((w, acc));
            }
        }
        if !kept.is_empty() {
            *ctx.state() = Some(Open(kept));
        }
        result
    }
}

/// A keyed operator computing `W` over `windows` of its input (which must
/// be partitioned by hash and carry event time).
///
/// Bids per auction in 10 s windows sliding by 2 s:
///
/// ```
/// use sluice_sdk::prelude::*;
///
/// struct Count;
///
/// impl WindowAggregate for Count {
///     type Acc = u64;
///
///     fn add(&mut self, n: &mut u64, _: Window, _: u32, _: &Record<'_>) -> Result<(), Error> {
///         *n += 1;
///         Ok(())
///     }
///
///     fn fire(&mut self, key: &[u8], w: Window, n: &u64, out: &mut Collector) -> Result<(), Error> {
///         out.emit_keyed(key, format!("{},{n}", w.start).as_bytes());
///         Ok(())
///     }
/// }
///
/// let op = keyed_window("bids", Windows::sliding(10_000, 2_000), |_| Ok(Count));
/// # let _ = op;
/// ```
pub fn keyed_window<W, F>(name: &str, windows: Windows, make: F) -> OperatorDef
where
    W: WindowAggregate,
    F: Fn(&Config) -> Result<W, Error> + 'static,
{
    keyed_process(name, move |cfg| windowed(windows, make(cfg)?))
}

/// [`keyed_window`] over two inputs: `WindowAggregate::add` gets the input
/// index, so a window can join what both inputs brought.
pub fn co_window<W, F>(name: &str, windows: Windows, make: F) -> OperatorDef
where
    W: WindowAggregate,
    F: Fn(&Config) -> Result<W, Error> + 'static,
{
    co_process(name, move |cfg| windowed(windows, make(cfg)?))
}

fn windowed<W: WindowAggregate>(windows: Windows, aggregate: W) -> Result<Windowed<W>, Error> {
    windows.check()?;
    Ok(Windowed {
        windows,
        aggregate,
        assigned: Vec::new(),
        late: LateRecords::default(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::prelude::*;
    use crate::testing::Harness;

    /// Counts a window's records; emits `key start end count`.
    struct Count;

    impl WindowAggregate for Count {
        type Acc = u64;

        fn add(&mut self, acc: &mut u64, _: Window, _: u32, _: &Record<'_>) -> Result<(), Error> {
            *acc += 1;
            Ok(())
        }

        fn fire(
            &mut self,
            key: &[u8],
            w: Window,
            acc: &u64,
            out: &mut Collector,
        ) -> Result<(), Error> {
            let key = String::from_utf8_lossy(key);
            out.emit(format!("{key} {} {} {acc}", w.start, w.end).as_bytes());
            Ok(())
        }

        fn merge(&mut self, acc: &mut u64, other: u64) -> Result<(), Error> {
            *acc += other;
            Ok(())
        }
    }

    /// Counts without a merge.
    struct NoMerge;

    impl WindowAggregate for NoMerge {
        type Acc = u64;

        fn add(&mut self, acc: &mut u64, _: Window, _: u32, _: &Record<'_>) -> Result<(), Error> {
            *acc += 1;
            Ok(())
        }

        fn fire(&mut self, _: &[u8], _: Window, _: &u64, _: &mut Collector) -> Result<(), Error> {
            Ok(())
        }
    }

    /// Per window, what each input brought: emits `key left right`.
    struct Join;

    impl WindowAggregate for Join {
        type Acc = (u64, u64);

        fn add(
            &mut self,
            acc: &mut (u64, u64),
            _: Window,
            input: u32,
            _: &Record<'_>,
        ) -> Result<(), Error> {
            if input == 0 {
                acc.0 += 1;
            } else {
                acc.1 += 1;
            }
            Ok(())
        }

        fn fire(
            &mut self,
            key: &[u8],
            _: Window,
            acc: &(u64, u64),
            out: &mut Collector,
        ) -> Result<(), Error> {
            let key = String::from_utf8_lossy(key);
            out.emit(format!("{key} {} {}", acc.0, acc.1).as_bytes());
            Ok(())
        }
    }

    struct App;

    impl Application for App {
        fn operators() -> Vec<OperatorDef> {
            vec![
                keyed_window("tumbling", Windows::tumbling(10), |_| Ok(Count)),
                keyed_window("sliding", Windows::sliding(10, 5), |_| Ok(Count)),
                keyed_window("late", Windows::tumbling(10).allowed_lateness(5), |_| {
                    Ok(Count)
                }),
                keyed_window("session", Windows::session(10), |_| Ok(Count)),
                keyed_window("no-merge", Windows::session(10), |_| Ok(NoMerge)),
                keyed_window("zero", Windows::tumbling(0), |_| Ok(Count)),
                keyed_window("too-many", Windows::sliding(86_400_000, 1), |_| Ok(Count)),
                keyed_window(
                    "negative-lateness",
                    Windows::sliding(10, 5).allowed_lateness(-1),
                    |_| Ok(Count),
                ),
                co_window("join", Windows::tumbling(10), |_| Ok(Join)),
                keyed_window(
                    "model",
                    Windows::sliding(MODEL_SIZE, MODEL_SLIDE).allowed_lateness(MODEL_LATENESS),
                    |_| Ok(Count),
                ),
            ]
        }

        fn plan(_: &Args) -> Result<Graph, Error> {
            Ok(Graph::new())
        }
    }

    fn feed(h: &mut Harness, input: u32, recs: &[(&str, i64)]) -> Result<Vec<String>, Error> {
        let mut c = Collector::default();
        for (k, ts) in recs {
            c.emit_at(Some(k.as_bytes()), b"", *ts);
        }
        let out = h.process_batch(input, &c.take_batch())?;
        let mut lines: Vec<String> = crate::record::records(&out.records.data, &out.records.meta)
            .map(|r| String::from_utf8(r.expect("valid").value.to_vec()).expect("utf-8"))
            .collect();
        lines.sort();
        Ok(lines)
    }

    use crate::testing::sorted_values as lines;

    fn harness(op: &str) -> Harness {
        Harness::new::<App>(&[op]).expect("chain")
    }

    #[test]
    fn tumbling_windows_fire_once_the_watermark_reaches_their_end() {
        let mut h = harness("tumbling");
        assert!(
            feed(&mut h, 0, &[("a", 1), ("a", 5), ("b", 9), ("a", 12)])
                .expect("process")
                .is_empty()
        );
        assert!(lines(h.advance_watermark(8).expect("wm")).is_empty());
        assert_eq!(
            lines(h.advance_watermark(9).expect("wm")),
            ["a 0 10 2", "b 0 10 1"]
        );
        let out = h.end_of_input().expect("end");
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].timestamp,
            Some(19),
            "results carry the window's last ms"
        );
        assert_eq!(lines(out), ["a 10 20 1"]);
    }

    #[test]
    fn a_record_belongs_to_every_sliding_window_covering_it() {
        let mut h = harness("sliding");
        feed(&mut h, 0, &[("a", 7), ("a", -3)]).expect("process");
        assert_eq!(
            lines(h.end_of_input().expect("end")),
            ["a -10 0 1", "a -5 5 1", "a 0 10 1", "a 5 15 1"]
        );
    }

    #[test]
    fn within_the_allowed_lateness_a_record_fires_its_window_again_after_it_is_dropped() {
        let mut h = harness("late");
        feed(&mut h, 0, &[("a", 3)]).expect("process");
        assert_eq!(lines(h.advance_watermark(9).expect("wm")), ["a 0 10 1"]);
        // Late, but the window is kept until the watermark reaches 14.
        assert_eq!(feed(&mut h, 0, &[("a", 4)]).expect("process"), ["a 0 10 2"]);
        assert!(lines(h.advance_watermark(14).expect("wm")).is_empty());
        // Too late: dropped, no window comes back.
        assert!(feed(&mut h, 0, &[("a", 5)]).expect("process").is_empty());
        assert!(h.end_of_input().expect("end").is_empty());
    }

    #[test]
    fn without_lateness_a_record_for_a_fired_window_is_dropped() {
        let mut h = harness("tumbling");
        feed(&mut h, 0, &[("a", 3)]).expect("process");
        assert_eq!(lines(h.advance_watermark(9).expect("wm")), ["a 0 10 1"]);
        assert!(feed(&mut h, 0, &[("a", 4)]).expect("process").is_empty());
        assert_eq!(
            feed(&mut h, 0, &[("a", 10)]).expect("process"),
            Vec::<String>::new()
        );
        assert_eq!(lines(h.end_of_input().expect("end")), ["a 10 20 1"]);
    }

    #[test]
    fn sessions_grow_and_merge_when_a_record_bridges_them() {
        let mut h = harness("session");
        feed(
            &mut h,
            0,
            &[
                ("a", 0),
                ("a", 5),
                ("a", 30),
                ("a", 12),
                ("a", 25),
                ("b", 1),
            ],
        )
        .expect("process");
        // a: [0,22) and [25,40), then 21 bridges them.
        feed(&mut h, 0, &[("a", 21)]).expect("process");
        assert_eq!(
            lines(h.end_of_input().expect("end")),
            ["a 0 40 6", "b 1 11 1"]
        );
    }

    #[test]
    fn a_late_record_that_joins_an_open_session_is_kept_one_alone_is_dropped() {
        let mut h = harness("session");
        feed(&mut h, 0, &[("a", 0), ("a", 5), ("a", 14)]).expect("process");
        assert!(lines(h.advance_watermark(12).expect("wm")).is_empty());
        // Its own session [1, 11) ended before the watermark, but it
        // overlaps the open [0, 24).
        assert!(feed(&mut h, 0, &[("a", 1)]).expect("joins").is_empty());
        // [-20, -10) overlaps nothing: late, dropped.
        assert!(feed(&mut h, 0, &[("a", -20)]).expect("dropped").is_empty());
        assert_eq!(lines(h.end_of_input().expect("end")), ["a 0 24 4"]);
    }

    #[test]
    fn sessions_that_never_touch_fire_apart() {
        let mut h = harness("session");
        feed(&mut h, 0, &[("a", 0), ("a", 10), ("a", 25)]).expect("process");
        // [0,10) and [10,20) touch but do not overlap.
        assert_eq!(
            lines(h.end_of_input().expect("end")),
            ["a 0 10 1", "a 10 20 1", "a 25 35 1"]
        );
    }

    #[test]
    fn a_session_merge_without_merge_is_an_error_that_says_what_to_implement() {
        let mut h = harness("no-merge");
        // A record that extends one session needs no merge...
        feed(&mut h, 0, &[("a", 0), ("a", 5), ("a", 20)]).expect("two sessions");
        // ...one that bridges two does.
        let err = feed(&mut h, 0, &[("a", 12)]).expect_err("a merge");
        assert!(
            format!("{err:?}").contains("WindowAggregate::merge"),
            "{err:?}"
        );
    }

    #[test]
    fn impossible_sizes_are_refused_when_the_operator_is_created() {
        for (op, says) in [
            ("zero", "size must be positive, not 0 ms"),
            ("too-many", "each record in 86400000 windows; at most 10000"),
            ("negative-lateness", "lateness must not be negative"),
        ] {
            let err = Harness::new::<App>(&[op]).err().expect("refused");
            assert!(
                matches!(&err, Error::InvalidConfig(m) if m.contains(says)),
                "{op}: {err:?}"
            );
        }
    }

    #[test]
    fn a_record_without_event_time_is_an_error() {
        let mut h = harness("tumbling");
        let err = h
            .process(0, &[(Some(b"a".as_slice()), b"".as_slice())])
            .expect_err("no time");
        assert!(
            format!("{err:?}").contains("without an event time"),
            "{err:?}"
        );
    }

    #[test]
    fn a_co_window_sees_which_input_each_record_came_from() {
        let mut h = harness("join");
        feed(&mut h, 0, &[("a", 1), ("a", 2), ("b", 3)]).expect("left");
        feed(&mut h, 1, &[("a", 4), ("c", 5)]).expect("right");
        assert_eq!(
            lines(h.end_of_input().expect("end")),
            ["a 2 1", "b 1 0", "c 0 1"]
        );
    }

    #[test]
    fn open_windows_survive_a_snapshot_and_restore() {
        let mut h = harness("late");
        feed(&mut h, 0, &[("a", 3), ("b", 12)]).expect("process");
        assert_eq!(lines(h.advance_watermark(9).expect("wm")), ["a 0 10 1"]);
        let chunks = h.snapshot().expect("snapshot");
        let mut restored =
            Harness::with_spec::<App>(&[("late", vec![])], 0, 1, 128, chunks).expect("restore");
        // Watermarks are not state: the sources send them again. Once one
        // is back, the fired window is still open for late records (its
        // count survived), and the other one still waits for its timer.
        assert!(lines(restored.advance_watermark(9).expect("wm")).is_empty());
        assert_eq!(
            feed(&mut restored, 0, &[("a", 8)]).expect("late"),
            ["a 0 10 2"]
        );
        assert_eq!(
            lines(restored.advance_watermark(19).expect("wm")),
            ["b 10 20 1"]
        );
        // The cleanup timers came back too: past them, nothing is open.
        assert!(lines(restored.advance_watermark(30).expect("wm")).is_empty());
        assert!(
            feed(&mut restored, 0, &[("a", 9), ("b", 19)])
                .expect("too late")
                .is_empty()
        );
        assert!(restored.snapshot().expect("snapshot").is_empty());
    }

    const MODEL_SIZE: i64 = 6;
    const MODEL_SLIDE: i64 = 4;
    const MODEL_LATENESS: i64 = 3;

    /// Flink's semantics spelled out directly: per (key, window) a count;
    /// a record is dropped when its window's end - 1 + lateness is at or
    /// below the watermark, fires its window at once when the end - 1 is;
    /// a watermark fires windows whose end - 1 it passes and forgets those
    /// it closes.
    #[derive(Default)]
    struct Model {
        watermark: Option<i64>,
        counts: BTreeMap<(String, i64), u64>,
    }

    impl Model {
        fn windows(ts: i64) -> Vec<i64> {
            let last = ts - ts.rem_euclid(MODEL_SLIDE);
            (0..)
                .map(|i| last - i * MODEL_SLIDE)
                .take_while(|s| *s > ts - MODEL_SIZE)
                .collect()
        }

        fn record(&mut self, key: &str, ts: i64) -> Vec<String> {
            let wm = self.watermark.unwrap_or(i64::MIN);
            let mut out = Vec::new();
            for start in Self::windows(ts) {
                let max = start + MODEL_SIZE - 1;
                if max + MODEL_LATENESS <= wm {
                    continue;
                }
                let n = self.counts.entry((key.to_owned(), start)).or_default();
                *n += 1;
                if max <= wm {
                    out.push(format!("{key} {start} {} {n}", start + MODEL_SIZE));
                }
            }
            out.sort();
            out
        }

        fn advance(&mut self, to: i64) -> Vec<String> {
            let from = self.watermark.unwrap_or(i64::MIN);
            if to <= from {
                return Vec::new();
            }
            self.watermark = Some(to);
            let mut out = Vec::new();
            for ((key, start), n) in &self.counts {
                let max = start + MODEL_SIZE - 1;
                if from < max && max <= to {
                    out.push(format!("{key} {start} {} {n}", start + MODEL_SIZE));
                }
            }
            self.counts
                .retain(|(_, start), _| start + MODEL_SIZE - 1 + MODEL_LATENESS > to);
            out.sort();
            out
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Record(u8, i64),
        Watermark(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3, 0i64..40).prop_map(|(k, t)| Step::Record(k, t)),
            1 => (0i64..45).prop_map(Step::Watermark),
        ]
    }

    proptest! {
        /// Sliding windows with allowed lateness, records out of order and
        /// late, against the model: the same results after every step.
        #[test]
        fn sliding_windows_with_lateness_match_the_model(steps in proptest::collection::vec(step(), 0..60)) {
            let mut h = harness("model");
            let mut model = Model::default();
            for s in steps {
                match s {
                    Step::Record(k, ts) => {
                        let key = ["a", "b", "c"][k as usize];
                        let got = feed(&mut h, 0, &[(key, ts)]).expect("process");
                        prop_assert_eq!(got, model.record(key, ts));
                    }
                    Step::Watermark(wm) => {
                        let got = lines(h.advance_watermark(wm).expect("wm"));
                        prop_assert_eq!(got, model.advance(wm));
                    }
                }
            }
            let got = lines(h.end_of_input().expect("end"));
            prop_assert_eq!(got, model.advance(i64::MAX));
        }
    }
}
