//! The fair-share decision, sans-IO: which waiting tenant gets the next
//! core, and when a running one must hand its core over. Time comes in as
//! `now` (ns since any fixed origin); nothing here sleeps or locks.
//!
//! Each tenant has a weight and a virtual time: the CPU time it used,
//! divided by its weight. A free core goes to the waiting tenant with the
//! smallest virtual time, so over any busy period tenants get CPU in
//! proportion to their weights, whatever their number of threads. A tenant
//! with nothing to run waits for nothing: its share goes to the others
//! (work-conserving). A tenant that arrives or comes back after being idle
//! starts at the system's virtual time — the smallest virtual time of the
//! busy tenants, which never goes back, even while nobody is busy — and at
//! most 20 ms (weighted) behind the busiest tenant, so idling earns no
//! credit and a newcomer only a short head start.
//! An optional ceiling (`cpu_cores`) caps a tenant's use even when cores
//! are idle, with a token bucket refilled at the ceiling's rate.
//!
//! ```
//! use sluice_share::fair::{Fair, Grant};
//!
//! let mut fair = Fair::new(1);
//! let a = fair.tenant("a", 1, None);
//! let b = fair.tenant("b", 3, None);
//! assert_eq!(fair.request(a, 1, 0), Grant::Now);
//! assert_eq!(fair.request(b, 2, 0), Grant::Queued);
//! // `a` ran 3 ms: `b` waits, behind by more than the granularity.
//! fair.charge(a, 3_000_000, 3_000_000);
//! assert!(fair.should_yield(a, 3_000_000, 3_000_000));
//! assert_eq!(fair.release(a, 3_000_000), vec![2]);
//! ```

use std::collections::VecDeque;

/// Virtual time is CPU ns × this ÷ weight (integer arithmetic that keeps
/// small weights' differences).
const SCALE: u128 = 1 << 16;

/// A running tenant yields to one whose virtual time is smaller by more
/// than this much weighted CPU time (so that equals do not ping-pong).
pub const GRANULARITY_NS: u64 = 2_000_000;

/// Among one tenant's own threads, a core changes hands after this long.
pub const SLICE_NS: u64 = 10_000_000;

/// A tenant (re)activating starts at most this far (in its weighted ns)
/// behind the busiest tenant, even when a tenant that cannot use more
/// CPU (few threads, a ceiling) holds the system's virtual time back.
const MAX_LAG_NS: u64 = 20_000_000;

/// How much unused ceiling a tenant may bank, in ns of its rate.
const BURST_NS: u64 = 100_000_000;

/// A tenant's index in a [`Fair`].
pub type TenantIx = usize;

/// The answer to a request for a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Run now.
    Now,
    /// Wait: a later [`Fair::release`] or [`Fair::dispatch`] names the
    /// ticket when it is granted.
    Queued,
}

#[derive(Clone, Debug)]
struct Lane {
    name: String,
    weight: u64,
    /// Cores at most, as a rate (`None`: no ceiling).
    ceiling: Option<f64>,
    vtime: u128,
    holding: usize,
    waiting: VecDeque<u64>,
    /// Ceiling budget in ns; negative after an overdraft.
    tokens: i64,
    refilled_at: u64,
    used_ns: u64,
}

impl Lane {
    fn active(&self) -> bool {
        self.holding > 0 || !self.waiting.is_empty()
    }

    fn refill(&mut self, now: u64) {
        let Some(rate) = self.ceiling else {
            return;
        };
        let elapsed = now.saturating_sub(self.refilled_at);
        self.refilled_at = now;
        let cap = (BURST_NS as f64 * rate) as i64;
        let add = (elapsed as f64 * rate) as i64;
        self.tokens = self.tokens.saturating_add(add).min(cap);
    }

    /// Whether the ceiling lets this tenant take one more core now.
    fn eligible(&self) -> bool {
        match self.ceiling {
            None => true,
            Some(rate) => self.tokens > 0 && (self.holding as f64) < rate.ceil(),
        }
    }
}

/// The scheduler state of one process's cores.
#[derive(Clone, Debug)]
pub struct Fair {
    free: usize,
    lanes: Vec<Lane>,
    /// The system's virtual time: the smallest virtual time of the active
    /// tenants, kept when none is active; it only moves forward.
    floor: u128,
}

impl Fair {
    /// A scheduler handing out `cores` cores (at least one).
    pub fn new(cores: usize) -> Self {
        Fair {
            free: cores.max(1),
            lanes: Vec::new(),
            floor: 0,
        }
    }

    /// Registers a tenant, or updates its weight and ceiling; returns its
    /// index. A weight of 0 counts as 1.
    pub fn tenant(&mut self, name: &str, weight: u32, ceiling: Option<f64>) -> TenantIx {
        let ceiling = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        if let Some(ix) = self.lanes.iter().position(|l| l.name == name) {
            let lane = &mut self.lanes[ix];
            lane.weight = u64::from(weight.max(1));
            if lane.ceiling.is_none() && ceiling.is_some() {
                lane.tokens = 0;
            }
            lane.ceiling = ceiling;
            return ix;
        }
        self.lanes.push(Lane {
            name: name.to_owned(),
            weight: u64::from(weight.max(1)),
            ceiling,
            vtime: 0,
            holding: 0,
            waiting: VecDeque::new(),
            tokens: 0,
            refilled_at: 0,
            used_ns: 0,
        });
        self.lanes.len() - 1
    }

    /// A tenant's name.
    pub fn name(&self, t: TenantIx) -> &str {
        &self.lanes[t].name
    }

    /// Number of tenants registered.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether no tenant is registered.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// CPU ns charged to a tenant so far.
    pub fn used_ns(&self, t: TenantIx) -> u64 {
        self.lanes[t].used_ns
    }

    /// A tenant's weight.
    pub fn weight(&self, t: TenantIx) -> u64 {
        self.lanes[t].weight
    }

    /// A tenant's ceiling in cores.
    pub fn ceiling(&self, t: TenantIx) -> Option<f64> {
        self.lanes[t].ceiling
    }

    /// Cores held by the tenant, and its threads waiting for one.
    pub fn load(&self, t: TenantIx) -> (usize, usize) {
        (self.lanes[t].holding, self.lanes[t].waiting.len())
    }

    /// Whether the tenant is over its ceiling now (its waiters are
    /// throttled rather than queued behind others).
    pub fn throttled(&mut self, t: TenantIx, now: u64) -> bool {
        let lane = &mut self.lanes[t];
        lane.refill(now);
        lane.ceiling.is_some() && lane.tokens <= 0
    }

    /// ns until a throttled tenant's budget is positive again (`None`
    /// without a ceiling).
    pub fn throttled_for(&self, t: TenantIx) -> Option<u64> {
        let lane = &self.lanes[t];
        let rate = lane.ceiling?;
        let deficit = (-lane.tokens).max(0) as f64 + 1.0;
        Some((deficit / rate).ceil() as u64)
    }

    /// Moves the system's virtual time up to the smallest virtual time of
    /// the active tenants.
    fn advance_floor(&mut self) {
        if let Some(min) = self
            .lanes
            .iter()
            .filter(|l| l.active())
            .map(|l| l.vtime)
            .min()
        {
            self.floor = self.floor.max(min);
        }
    }

    /// A thread of tenant `t` asks for a core; `ticket` names it if it
    /// has to wait.
    pub fn request(&mut self, t: TenantIx, ticket: u64, now: u64) -> Grant {
        if !self.lanes[t].active() {
            self.advance_floor();
            let leader = self
                .lanes
                .iter()
                .filter(|l| l.active())
                .map(|l| l.vtime)
                .max();
            let lane = &mut self.lanes[t];
            let lag = u128::from(MAX_LAG_NS) * SCALE / u128::from(lane.weight);
            let behind_leader = leader.map_or(0, |v| v.saturating_sub(lag));
            lane.vtime = lane.vtime.max(self.floor).max(behind_leader);
        }
        self.lanes[t].refill(now);
        // Only waiters that could take a core now go first.
        let mut lanes = std::mem::take(&mut self.lanes);
        let others_waiting = lanes.iter_mut().any(|l| {
            l.refill(now);
            !l.waiting.is_empty() && l.eligible()
        });
        self.lanes = lanes;
        if self.free > 0 && !others_waiting && self.lanes[t].eligible() {
            self.free -= 1;
            self.lanes[t].holding += 1;
            return Grant::Now;
        }
        self.lanes[t].waiting.push_back(ticket);
        Grant::Queued
    }

    /// A waiting ticket gives up (its thread stops waiting).
    pub fn withdraw(&mut self, t: TenantIx, ticket: u64) {
        self.lanes[t].waiting.retain(|w| *w != ticket);
    }

    /// Charges `ns` of CPU to a tenant that holds a core.
    pub fn charge(&mut self, t: TenantIx, ns: u64, now: u64) {
        let lane = &mut self.lanes[t];
        lane.refill(now);
        lane.used_ns = lane.used_ns.saturating_add(ns);
        lane.vtime = lane
            .vtime
            .saturating_add(u128::from(ns) * SCALE / u128::from(lane.weight));
        if lane.ceiling.is_some() {
            lane.tokens = lane
                .tokens
                .saturating_sub(i64::try_from(ns).unwrap_or(i64::MAX));
        }
        self.advance_floor();
    }

    /// A thread of `t` gives its core back; returns the tickets granted a
    /// core in its place.
    pub fn release(&mut self, t: TenantIx, now: u64) -> Vec<u64> {
        let lane = &mut self.lanes[t];
        lane.holding = lane.holding.saturating_sub(1);
        self.free += 1;
        self.dispatch(now)
    }

    /// Hands free cores to waiting tickets: the eligible tenant with the
    /// smallest virtual time first, each tenant's tickets in arrival order.
    pub fn dispatch(&mut self, now: u64) -> Vec<u64> {
        let mut granted = Vec::new();
        while self.free > 0 {
            let next = self
                .lanes
                .iter_mut()
                .enumerate()
                .filter(|(_, l)| !l.waiting.is_empty())
                .filter_map(|(i, l)| {
                    l.refill(now);
                    l.eligible().then_some((l.vtime, i))
                })
                .min();
            let Some((_, i)) = next else {
                break;
            };
            let lane = &mut self.lanes[i];
            let ticket = lane
                .waiting
                .pop_front()
                .expect("invariant: the lane has a waiter");
            lane.holding += 1;
            self.free -= 1;
            granted.push(ticket);
        }
        granted
    }

    /// Whether a thread of `t` that has held its core for `held_ns` must
    /// hand it over now: its tenant is over its ceiling, another tenant
    /// waits with a virtual time smaller by more than the granularity, or
    /// one of its own threads waits and this one has had its slice.
    pub fn should_yield(&mut self, t: TenantIx, held_ns: u64, now: u64) -> bool {
        self.lanes[t].refill(now);
        let me = &self.lanes[t];
        if me.ceiling.is_some() && me.tokens <= 0 {
            return true;
        }
        if !me.waiting.is_empty() && held_ns >= SLICE_NS {
            return true;
        }
        let threshold = me
            .vtime
            .saturating_sub(u128::from(GRANULARITY_NS) * SCALE / u128::from(me.weight));
        let mut lanes = std::mem::take(&mut self.lanes);
        let behind = lanes.iter_mut().enumerate().any(|(i, l)| {
            if i == t || l.waiting.is_empty() {
                return false;
            }
            l.refill(now);
            l.eligible() && l.vtime < threshold
        });
        self.lanes = lanes;
        behind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Simulates threads that always want a core: each tenant has some
    /// threads; time advances in steps of `step` ns; at every step each
    /// running thread is charged and asked whether to yield (a yielding
    /// thread queues again at once). Returns each tenant's CPU ns.
    fn simulate(cores: usize, tenants: &[(u32, usize, Option<f64>)], steps: u64) -> Vec<u64> {
        let step = 1_000_000;
        let mut fair = Fair::new(cores);
        let ixs: Vec<TenantIx> = tenants
            .iter()
            .enumerate()
            .map(|(i, (w, _, c))| fair.tenant(&format!("t{i}"), *w, *c))
            .collect();
        // ticket -> (tenant, held since)
        let mut running: Vec<(u64, TenantIx, u64)> = Vec::new();
        let mut owner = std::collections::HashMap::new();
        let mut next_ticket = 0u64;
        for (i, (_, threads, _)) in tenants.iter().enumerate() {
            for _ in 0..*threads {
                next_ticket += 1;
                owner.insert(next_ticket, ixs[i]);
                if fair.request(ixs[i], next_ticket, 0) == Grant::Now {
                    running.push((next_ticket, ixs[i], 0));
                }
            }
        }
        for s in 1..=steps {
            let now = s * step;
            let mut still = Vec::new();
            let mut granted = Vec::new();
            for (ticket, t, since) in std::mem::take(&mut running) {
                fair.charge(t, step, now);
                if fair.should_yield(t, now - since, now) {
                    granted.extend(fair.release(t, now));
                    if fair.request(t, ticket, now) == Grant::Now {
                        still.push((ticket, t, now));
                    }
                } else {
                    still.push((ticket, t, since));
                }
            }
            granted.extend(fair.dispatch(now));
            for g in granted {
                still.push((g, owner[&g], now));
            }
            running = still;
            assert!(running.len() <= cores, "never more threads than cores run");
        }
        ixs.iter().map(|t| fair.used_ns(*t)).collect()
    }

    #[test]
    fn equal_weights_share_equally_whatever_the_thread_counts() {
        let used = simulate(2, &[(100, 1, None), (100, 8, None)], 10_000);
        let total: u64 = used.iter().sum();
        assert_eq!(total, 2 * 10_000 * 1_000_000, "both cores stay busy");
        let share = used[0] as f64 / total as f64;
        assert!(
            (share - 0.5).abs() < 0.02,
            "share of the 1-thread tenant: {share}"
        );
    }

    #[test]
    fn a_tenant_below_its_share_gets_what_it_asks() {
        // One thread of the victim on two cores wants at most half of them,
        // its fair share at equal weights: it runs all the time.
        let used = simulate(2, &[(1, 1, None), (1, 8, None)], 5_000);
        assert_eq!(used[0], 5_000 * 1_000_000);
    }

    #[test]
    fn a_ceiling_caps_even_idle_cores() {
        let used = simulate(2, &[(1, 4, Some(0.5))], 10_000);
        let cores = used[0] as f64 / (10_000.0 * 1_000_000.0);
        assert!((cores - 0.5).abs() < 0.02, "cores used: {cores}");
    }

    #[test]
    fn an_idle_tenant_earns_no_credit() {
        let mut fair = Fair::new(1);
        let a = fair.tenant("a", 1, None);
        let b = fair.tenant("b", 1, None);
        assert_eq!(fair.request(a, 1, 0), Grant::Now);
        fair.charge(a, 60_000_000_000, 60_000_000_000);
        // b arrives after a minute alone for a: it starts level with a,
        // so a yields after a granularity, not after a minute.
        assert_eq!(fair.request(b, 2, 60_000_000_000), Grant::Queued);
        assert!(!fair.should_yield(a, 1_000_000, 60_000_000_000));
        assert_eq!(fair.release(a, 60_000_000_000), vec![2]);
        assert_eq!(fair.request(a, 3, 60_000_000_000), Grant::Queued);
        fair.charge(b, 3_000_000, 60_003_000_000);
        assert!(fair.should_yield(b, 3_000_000, 60_003_000_000));
    }

    #[test]
    fn a_newcomer_starts_at_the_systems_virtual_time_even_after_a_lull() {
        let mut fair = Fair::new(1);
        let a = fair.tenant("a", 1, None);
        assert_eq!(fair.request(a, 1, 0), Grant::Now);
        fair.charge(a, 10_000_000_000, 10_000_000_000);
        fair.release(a, 10_000_000_000);
        // Nobody is busy; then b arrives for the first time, and a again.
        let b = fair.tenant("b", 1, None);
        assert_eq!(fair.request(b, 2, 20_000_000_000), Grant::Now);
        assert_eq!(fair.request(a, 3, 20_000_000_000), Grant::Queued);
        // b has no ten seconds of head start: it yields after a granularity.
        fair.charge(b, 3_000_000, 20_003_000_000);
        assert!(fair.should_yield(b, 3_000_000, 20_003_000_000));
    }

    #[test]
    fn a_newcomer_is_not_pinned_behind_a_tenant_that_cannot_use_its_share() {
        // 4 cores: a has one thread (a quarter of the cores), b saturates
        // the other three for an hour; c arrives and must not take b's
        // cores for long: it starts near b, not at a's virtual time.
        let mut fair = Fair::new(4);
        let a = fair.tenant("a", 1, None);
        let b = fair.tenant("b", 1, None);
        let hour = 3_600_000_000_000u64;
        assert_eq!(fair.request(a, 1, 0), Grant::Now);
        for ticket in 2..5 {
            assert_eq!(fair.request(b, ticket, 0), Grant::Now);
        }
        fair.charge(a, hour, hour);
        for _ in 0..3 {
            fair.charge(b, hour, hour);
        }
        let c = fair.tenant("c", 1, None);
        assert_eq!(fair.request(c, 5, hour), Grant::Queued);
        // One of b's threads yields to c now (c is behind)...
        assert!(fair.should_yield(b, 1_000_000, hour));
        assert_eq!(fair.release(b, hour), vec![5]);
        // ...but once c ran 30 ms, b's threads no longer yield to it.
        assert_eq!(fair.request(b, 6, hour), Grant::Queued);
        fair.charge(c, 30_000_000, hour + 30_000_000);
        assert!(fair.should_yield(c, 30_000_000, hour + 30_000_000));
    }

    proptest! {
        /// Busy tenants share the cores in proportion to their weights
        /// (within a few percent), whatever their thread counts.
        #[test]
        fn busy_tenants_share_by_weight(
            cores in 1usize..4,
            tenants in proptest::collection::vec((1u32..8, 1usize..6), 2..4),
        ) {
            // Every tenant must be able to use its share: a tenant with
            // fewer threads than its proportional cores is capped by them,
            // so give each tenant enough threads.
            let tenants: Vec<(u32, usize, Option<f64>)> = tenants
                .into_iter()
                .map(|(w, n)| (w, n.max(cores), None))
                .collect();
            let used = simulate(cores, &tenants, 20_000);
            let total: u64 = used.iter().sum();
            prop_assert_eq!(total, cores as u64 * 20_000 * 1_000_000);
            let weights: u32 = tenants.iter().map(|t| t.0).sum();
            for (i, (w, _, _)) in tenants.iter().enumerate() {
                let want = f64::from(*w) / f64::from(weights);
                let got = used[i] as f64 / total as f64;
                prop_assert!((got - want).abs() < 0.03, "tenant {i}: {got} vs {want}");
            }
        }
    }
}
