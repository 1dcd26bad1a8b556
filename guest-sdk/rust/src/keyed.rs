//! Keyed state and timers, kept inside the guest and snapshotted per key group.
//!
//! State lives in guest memory (a host call per access would cost more than
//! the work), in one map from key to its key group and state. A snapshot is
//! a list of independent per-key-group chunks that a job restored at another
//! parallelism can hand to new owners. A key's group is computed (xxh3, with
//! 128-bit products that wasm32 emulates) only when the key is new: a key
//! with state remembers it.

use std::collections::BTreeMap;

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

/// A key's group and state. The state is an `Option` so that it can be lent
/// to the operator in place (one lookup, no allocation for a key already
/// present); an entry left `None` after a call is removed, so every entry
/// has state.
struct Entry<S> {
    group: u32,
    state: Option<S>,
}

/// FxHash: only 64-bit multiplies, which wasm runs natively (xxh3's 128-bit
/// products become library calls there); flooding is not a concern inside a
/// tenant's own sandbox.
type KeyMap<S> = HashMap<Vec<u8>, Entry<S>, rustc_hash::FxBuildHasher>;

/// A borrowed key to look up in a [`KeyMap`]: hashed as the key is, compared
/// in words (`crate::bytes`) where a `&[u8]` would go through `memcmp`.
#[derive(Clone, Copy)]
struct KeyRef<'a>(&'a [u8]);

impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h);
    }
}

impl hashbrown::Equivalent<Vec<u8>> for KeyRef<'_> {
    fn equivalent(&self, k: &Vec<u8>) -> bool {
        crate::bytes::eq(self.0, k)
    }
}

/// What one key group holds; the unit of snapshots.
#[derive(Serialize, Deserialize)]
struct KeyGroupSnapshot<S> {
    state: Vec<(Vec<u8>, S)>,
    timers: Vec<(TimeDomain, i64, Vec<u8>)>,
}

/// Timers of one domain, fired and snapshotted in (time, key group, key)
/// order. Registering a timer that is already pending costs one hash lookup
/// (no allocation, no key comparisons along a tree: a window operator
/// registers the same few timers for every record of a key).
#[derive(Default)]
struct TimerSet {
    pending: hashbrown::HashSet<TimerKey, rustc_hash::FxBuildHasher>,
    by_time: BTreeMap<(i64, u32), Keys>,
}

/// The keys with a timer at one (time, key group), sorted on demand.
#[derive(Default)]
struct Keys {
    keys: Vec<Vec<u8>>,
    /// Whether `keys` is sorted, descending (the next to fire is last).
    sorted: bool,
}

#[derive(PartialEq, Eq)]
struct TimerKey {
    time: i64,
    group: u32,
    key: Vec<u8>,
}

/// A borrowed [`TimerKey`], to look one up without copying the key.
struct TimerRef<'a> {
    time: i64,
    group: u32,
    key: &'a [u8],
}

impl std::hash::Hash for TimerKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        TimerRef {
            time: self.time,
            group: self.group,
            key: &self.key,
        }
        .hash(h);
    }
}

impl std::hash::Hash for TimerRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.time.hash(h);
        self.group.hash(h);
        self.key.hash(h);
    }
}

impl hashbrown::Equivalent<TimerKey> for TimerRef<'_> {
    fn equivalent(&self, k: &TimerKey) -> bool {
        self.time == k.time && self.group == k.group && crate::bytes::eq(self.key, &k.key)
    }
}

impl TimerSet {
    fn insert(&mut self, time: i64, group: u32, key: &[u8]) {
        if self.pending.contains(&TimerRef { time, group, key }) {
            return;
        }
        self.pending.insert(TimerKey {
            time,
            group,
            key: key.to_vec(),
        });
        let keys = self.by_time.entry((time, group)).or_default();
        keys.keys.push(key.to_vec());
        keys.sorted = false;
    }

    fn first_time(&self) -> Option<i64> {
        self.by_time.first_key_value().map(|(&(time, _), _)| time)
    }

    fn pop_first(&mut self) -> Option<(i64, u32, Vec<u8>)> {
        let mut first = self.by_time.first_entry()?;
        let (time, group) = *first.key();
        let keys = first.get_mut();
        if !keys.sorted {
            keys.keys.sort_unstable_by(|a, b| b.cmp(a));
            keys.sorted = true;
        }
        let key = keys.keys.pop();
        if keys.keys.is_empty() {
            first.remove();
        }
        // No empty entry is kept, so the first one had a key.
        let key = key?;
        self.pending.remove(&TimerRef {
            time,
            group,
            key: &key,
        });
        Some((time, group, key))
    }

    /// Every pending timer, in firing order.
    fn iter(&self) -> impl Iterator<Item = (i64, u32, &Vec<u8>)> {
        self.by_time.iter().flat_map(|(&(time, group), keys)| {
            let mut sorted: Vec<&Vec<u8>> = keys.keys.iter().collect();
            sorted.sort_unstable();
            sorted.into_iter().map(move |key| (time, group, key))
        })
    }
}

pub(crate) struct KeyedOperator<P: KeyedProcess> {
    f: P,
    ctx: OpenContext,
    /// The key groups this subtask owns.
    groups: std::ops::Range<u32>,
    keys: KeyMap<P::State>,
    event_timers: TimerSet,
    processing_timers: TimerSet,
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
            groups: 0..0,
            keys: KeyMap::default(),
            event_timers: TimerSet::default(),
            processing_timers: TimerSet::default(),
            watermark: i64::MIN,
            scratch_timers: Vec::new(),
        }
    }

    /// Checks that this subtask owns key group `kg`.
    fn owned(&self, kg: u32) -> Result<u32, Error> {
        if self.groups.contains(&kg) {
            return Ok(kg);
        }
        Err(failed(format!(
            "key group {kg} does not belong to subtask {} of {} (max parallelism {}): \
             is the input of this keyed operator partitioned by hash?",
            self.ctx.subtask, self.ctx.parallelism, self.ctx.max_parallelism
        )))
    }

    /// Runs `f` for `key` (of key group `kg`, computed from the key if not
    /// given and the key is new) with its state, then files the timers it
    /// registered.
    fn with_key(
        &mut self,
        key: &[u8],
        kg: Option<u32>,
        input: u32,
        out: &mut Collector,
        call: impl FnOnce(&mut P, &mut KeyedContext<'_, P::State>, &mut Collector) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let watermark = self.watermark;
        let (kg, result) = match self.keys.get_mut(&KeyRef(key)) {
            // One lookup for a key with state; its group is known.
            Some(entry) => {
                let mut ctx = KeyedContext {
                    key,
                    state: &mut entry.state,
                    timers: &mut self.scratch_timers,
                    watermark,
                    input,
                };
                let result = call(&mut self.f, &mut ctx, out);
                let kg = entry.group;
                if entry.state.is_none() {
                    self.keys.remove(&KeyRef(key));
                }
                (kg, result)
            }
            // A new key: the key is copied only if it keeps state.
            None => {
                let kg = match kg {
                    Some(kg) => kg,
                    None => sluice_keygroup::key_group(key, self.ctx.max_parallelism),
                };
                let kg = self.owned(kg)?;
                let mut state = None;
                let mut ctx = KeyedContext {
                    key,
                    state: &mut state,
                    timers: &mut self.scratch_timers,
                    watermark,
                    input,
                };
                let result = call(&mut self.f, &mut ctx, out);
                if state.is_some() {
                    self.keys.insert(key.to_vec(), Entry { group: kg, state });
                }
                (kg, result)
            }
        };
        for (domain, t) in self.scratch_timers.drain(..) {
            let set = match domain {
                TimeDomain::EventTime => &mut self.event_timers,
                TimeDomain::ProcessingTime => &mut self.processing_timers,
            };
            set.insert(t, kg, key);
        }
        result
    }

    fn fire(&mut self, domain: TimeDomain, upto: i64, out: &mut Collector) -> Result<(), Error> {
        loop {
            let set = match domain {
                TimeDomain::EventTime => &mut self.event_timers,
                TimeDomain::ProcessingTime => &mut self.processing_timers,
            };
            if set.first_time().is_none_or(|first| first > upto) {
                break;
            }
            let Some((time, kg, key)) = set.pop_first() else {
                break;
            };
            out.timestamp = Some(time).filter(|_| domain == TimeDomain::EventTime);
            let timer = Timer { time, domain };
            self.with_key(&key, Some(kg), 0, out, |f, ctx, out| {
                f.on_timer(ctx, timer, out)
            })?;
        }
        out.timestamp = None;
        Ok(())
    }
}

impl<P: KeyedProcess> RawOperator for KeyedOperator<P> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), Error> {
        self.groups = sluice_keygroup::range(ctx.subtask, ctx.max_parallelism, ctx.parallelism);
        self.ctx = *ctx;
        Ok(())
    }

    fn process(&mut self, input: u32, r: Record<'_>, out: &mut Collector) -> Result<(), Error> {
        let key = r.key.ok_or_else(|| {
            failed("a keyed operator received a record without a key: emit keyed records upstream")
        })?;
        self.with_key(key, None, input, out, |f, ctx, out| f.process(ctx, r, out))
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
        let first = self.groups.start;
        let mut per_group: Vec<KeyGroupSnapshot<&P::State>> = self
            .groups
            .clone()
            .map(|_| KeyGroupSnapshot {
                state: Vec::new(),
                timers: Vec::new(),
            })
            .collect();
        for (k, entry) in &self.keys {
            if let Some(state) = &entry.state {
                per_group[(entry.group - first) as usize]
                    .state
                    .push((k.clone(), state));
            }
        }
        for g in &mut per_group {
            // By key: the same state always snapshots to the same bytes,
            // whichever SDK wrote it (guest-sdk/golden).
            g.state.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        for (domain, set) in [
            (TimeDomain::EventTime, &self.event_timers),
            (TimeDomain::ProcessingTime, &self.processing_timers),
        ] {
            for (t, kg, key) in set.iter() {
                per_group[(kg - first) as usize]
                    .timers
                    .push((domain, t, key.clone()));
            }
        }
        per_group
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.state.is_empty() || !g.timers.is_empty())
            .map(|(i, g)| {
                let bytes = postcard::to_allocvec(&g)
                    .map_err(|e| failed(format!("cannot serialise keyed state: {e}")))?;
                Ok((Some(first + i as u32), bytes))
            })
            .collect()
    }

    fn restore(&mut self, key_group: Option<u32>, data: &[u8]) -> Result<(), Error> {
        let kg = key_group.ok_or_else(|| failed("keyed operator got non-keyed state"))?;
        let kg = self.owned(kg)?;
        let g: KeyGroupSnapshot<P::State> = postcard::from_bytes(data)
            .map_err(|e| failed(format!("corrupt keyed state for key group {kg}: {e}")))?;
        self.keys.extend(g.state.into_iter().map(|(k, v)| {
            let entry = Entry {
                group: kg,
                state: Some(v),
            };
            (k, entry)
        }));
        for (domain, t, key) in g.timers {
            match domain {
                TimeDomain::EventTime => self.event_timers.insert(t, kg, &key),
                TimeDomain::ProcessingTime => self.processing_timers.insert(t, kg, &key),
            }
        }
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.processing_timers.first_time()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::TimerSet;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(i64, u32, Vec<u8>),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0i64..6, 0u32..3, proptest::collection::vec(0u8..4, 0..3))
                .prop_map(|(t, g, k)| Op::Insert(t, g, k)),
            1 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// The timer set behaves as an ordered set of (time, group, key):
        /// duplicates collapse, pops come in order, even when inserts fall
        /// between pops at the time being fired.
        #[test]
        fn timers_pop_in_order_once_each_like_an_ordered_set(
            ops in proptest::collection::vec(op(), 0..200)
        ) {
            let mut timers = TimerSet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(t, g, k) => {
                        timers.insert(t, g, &k);
                        model.insert((t, g, k));
                    }
                    Op::Pop => prop_assert_eq!(timers.pop_first(), model.pop_first()),
                }
                prop_assert_eq!(timers.first_time(), model.first().map(|t| t.0));
                let listed: Vec<_> = timers.iter().map(|(t, g, k)| (t, g, k.clone())).collect();
                let expected: Vec<_> = model.iter().cloned().collect();
                prop_assert_eq!(listed, expected);
            }
        }
    }
}
