//! Keyed state and timers, kept inside the guest and snapshotted per key group.
//!
//! State lives in guest memory (a host call per access would cost more than
//! the work), one map per key group this subtask owns, so a snapshot is a
//! list of independent per-key-group chunks that a job restored at another
//! parallelism can hand to new owners.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::operator::{OpenContext, RawOperator};
use crate::record::{Collector, Record};
use crate::{Error, failed};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when the host's wall clock reaches the timer's time.
    ProcessingTime,
}

/// A timer that fired.
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    /// When it was set to fire (ms).
    pub time: i64,
    /// Which clock it followed.
    pub domain: TimeDomain,
}

/// A keyed process function: `process` runs once per record with that
/// record's key's state; `on_timer` when a timer set for a key fires.
pub trait KeyedProcess: 'static {
    /// The state kept per key. It is serialised (postcard) into snapshots.
    type State: Serialize + DeserializeOwned + 'static;

    /// Processes one record.
    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, Self::State>,
        record: Record<'_>,
        out: &mut Collector,
    ) -> Result<(), Error>;

    /// A timer registered for `ctx.key()` fired.
    fn on_timer(
        &mut self,
        _ctx: &mut KeyedContext<'_, Self::State>,
        _timer: Timer,
        _out: &mut Collector,
    ) -> Result<(), Error> {
        Ok(())
    }
}

/// The current key, its state, and timer registration.
pub struct KeyedContext<'a, S> {
    key: &'a [u8],
    state: &'a mut Option<S>,
    timers: &'a mut Vec<(TimeDomain, i64)>,
    watermark: i64,
    input: u32,
}

impl<S> KeyedContext<'_, S> {
    /// The key being processed.
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// This key's state, read-only.
    pub fn get(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// This key's state; `None` if it has none. Set it to `None` to delete it.
    pub fn state(&mut self) -> &mut Option<S> {
        self.state
    }

    /// This key's state, created with `Default` if absent.
    pub fn state_or_default(&mut self) -> &mut S
    where
        S: Default,
    {
        self.state.get_or_insert_with(S::default)
    }

    /// Deletes this key's state.
    pub fn clear_state(&mut self) {
        *self.state = None;
    }

    /// Fires `on_timer` for this key once the watermark reaches `time`.
    /// Registering the same time twice fires once.
    pub fn register_event_timer(&mut self, time: i64) {
        self.timers.push((TimeDomain::EventTime, time));
    }

    /// Fires `on_timer` for this key once processing time reaches `time`.
    pub fn register_processing_timer(&mut self, time: i64) {
        self.timers.push((TimeDomain::ProcessingTime, time));
    }

    /// The current event-time watermark (`i64::MIN` before the first one).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Which input the record came from: 0, or 1 for the second input of a
    /// two-input operator.
    pub fn input(&self) -> u32 {
        self.input
    }
}

/// Values are `Option`s so that a key's state can be lent to the operator in
/// place (one lookup, no allocation for a key already present); entries left
/// `None` after a call are removed. FxHash: only 64-bit multiplies, which
/// wasm runs natively (xxh3's 128-bit products become library calls there);
/// flooding is not a concern inside a tenant's own sandbox.
type KeyMap<S> = HashMap<Vec<u8>, Option<S>, rustc_hash::FxBuildHasher>;

/// What one key group holds; the unit of snapshots.
#[derive(Serialize, Deserialize)]
struct KeyGroupSnapshot<S> {
    state: Vec<(Vec<u8>, S)>,
    timers: Vec<(TimeDomain, i64, Vec<u8>)>,
}

pub(crate) struct KeyedOperator<P: KeyedProcess> {
    f: P,
    ctx: OpenContext,
    first_group: u32,
    /// One map per owned key group, indexed by `kg - first_group`.
    groups: Vec<KeyMap<P::State>>,
    event_timers: BTreeSet<(i64, u32, Vec<u8>)>,
    processing_timers: BTreeSet<(i64, u32, Vec<u8>)>,
    watermark: i64,
    scratch_timers: Vec<(TimeDomain, i64)>,
}

impl<P: KeyedProcess> KeyedOperator<P> {
    pub(crate) fn new(f: P) -> Self {
        KeyedOperator {
            f,
            ctx: OpenContext {
                subtask: 0,
                parallelism: 1,
                max_parallelism: 1,
            },
            first_group: 0,
            groups: Vec::new(),
            event_timers: BTreeSet::new(),
            processing_timers: BTreeSet::new(),
            watermark: i64::MIN,
            scratch_timers: Vec::new(),
        }
    }

    fn group_index(&self, kg: u32) -> Result<usize, Error> {
        kg.checked_sub(self.first_group)
            .map(|i| i as usize)
            .filter(|&i| i < self.groups.len())
            .ok_or_else(|| {
                failed(format!(
                    "key group {kg} does not belong to subtask {} of {} (max parallelism {}): \
                     is the input of this keyed operator partitioned by hash?",
                    self.ctx.subtask, self.ctx.parallelism, self.ctx.max_parallelism
                ))
            })
    }

    /// Runs `f` for `key` with its state, then files the timers it registered.
    fn with_key(
        &mut self,
        key: &[u8],
        kg: u32,
        input: u32,
        out: &mut Collector,
        call: impl FnOnce(&mut P, &mut KeyedContext<'_, P::State>, &mut Collector) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let gi = self.group_index(kg)?;
        let map = &mut self.groups[gi];
        // One lookup; the key is copied only when it is new.
        let slot = map.entry_ref(key).or_insert(None);
        let mut ctx = KeyedContext {
            key,
            state: slot,
            timers: &mut self.scratch_timers,
            watermark: self.watermark,
            input,
        };
        let result = call(&mut self.f, &mut ctx, out);
        if ctx.state.is_none() {
            map.remove(key);
        }
        for (domain, t) in self.scratch_timers.drain(..) {
            let set = match domain {
                TimeDomain::EventTime => &mut self.event_timers,
                TimeDomain::ProcessingTime => &mut self.processing_timers,
            };
            set.insert((t, kg, key.to_vec()));
        }
        result
    }

    fn fire(&mut self, domain: TimeDomain, upto: i64, out: &mut Collector) -> Result<(), Error> {
        loop {
            let set = match domain {
                TimeDomain::EventTime => &mut self.event_timers,
                TimeDomain::ProcessingTime => &mut self.processing_timers,
            };
            let Some(first) = set.first() else { break };
            if first.0 > upto {
                break;
            }
            let (time, kg, key) = set.pop_first().expect("invariant: first() was Some");
            out.timestamp = Some(time).filter(|_| domain == TimeDomain::EventTime);
            let timer = Timer { time, domain };
            self.with_key(&key, kg, 0, out, |f, ctx, out| f.on_timer(ctx, timer, out))?;
        }
        out.timestamp = None;
        Ok(())
    }
}

impl<P: KeyedProcess> RawOperator for KeyedOperator<P> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), Error> {
        let r = sluice_keygroup::range(ctx.subtask, ctx.max_parallelism, ctx.parallelism);
        self.ctx = *ctx;
        self.first_group = r.start;
        self.groups = r.map(|_| KeyMap::default()).collect();
        Ok(())
    }

    fn process(&mut self, input: u32, r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
        let key = r.key.ok_or_else(|| {
            failed("a keyed operator received a record without a key: emit keyed records upstream")
        })?;
        let kg = sluice_keygroup::key_group(key, self.ctx.max_parallelism);
        self.with_key(key, kg, input, out, |f, ctx, out| f.process(ctx, r, out))
    }

    fn watermark(&mut self, wm: i64, out: &mut Collector) -> Result<(), Error> {
        self.watermark = self.watermark.max(wm);
        self.fire(TimeDomain::EventTime, wm, out)
    }

    fn processing_time(&mut self, now: i64, out: &mut Collector) -> Result<(), Error> {
        self.fire(TimeDomain::ProcessingTime, now, out)
    }

    fn end_of_input(&mut self, out: &mut Collector) -> Result<(), Error> {
        // Bounded input ended: event time is complete, so every event-time timer fires.
        self.watermark(i64::MAX, out)
    }

    fn snapshot(&mut self) -> Result<crate::operator::Chunks, Error> {
        let mut per_group: Vec<KeyGroupSnapshot<&P::State>> = self
            .groups
            .iter()
            .map(|m| {
                let mut state: Vec<_> = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_ref()?)))
                    .collect();
                // By key: the same state always snapshots to the same bytes,
                // whichever SDK wrote it (guest-sdk/golden).
                state.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                KeyGroupSnapshot {
                    state,
                    timers: Vec::new(),
                }
            })
            .collect();
        for (domain, set) in [
            (TimeDomain::EventTime, &self.event_timers),
            (TimeDomain::ProcessingTime, &self.processing_timers),
        ] {
            for (t, kg, key) in set {
                let gi = (kg - self.first_group) as usize;
                per_group[gi].timers.push((domain, *t, key.clone()));
            }
        }
        per_group
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.state.is_empty() || !g.timers.is_empty())
            .map(|(i, g)| {
                let bytes = postcard::to_allocvec(&g)
                    .map_err(|e| failed(format!("cannot serialise keyed state: {e}")))?;
                Ok((Some(self.first_group + i as u32), bytes))
            })
            .collect()
    }

    fn restore(&mut self, key_group: Option<u32>, data: &[u8]) -> Result<(), Error> {
        let kg = key_group.ok_or_else(|| failed("keyed operator got non-keyed state"))?;
        let gi = self.group_index(kg)?;
        let g: KeyGroupSnapshot<P::State> = postcard::from_bytes(data)
            .map_err(|e| failed(format!("corrupt keyed state for key group {kg}: {e}")))?;
        self.groups[gi].extend(g.state.into_iter().map(|(k, v)| (k, Some(v))));
        for (domain, t, key) in g.timers {
            match domain {
                TimeDomain::EventTime => self.event_timers.insert((t, kg, key)),
                TimeDomain::ProcessingTime => self.processing_timers.insert((t, kg, key)),
            };
        }
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.processing_timers.first().map(|t| t.0)
    }
}
