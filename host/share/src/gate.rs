//! The fair gate: threads of a process take a core from it before running
//! tenant work and hand it back before they block, at yield points, and
//! when a long guest call is interrupted by the epoch ticker. The decision
//! is [`crate::fair::Fair`]'s; this module adds the threads' waiting and
//! the clock.
//!
//! A thread enters its tenant's lane with [`Lane::enter`]; from then on
//! the free functions [`yield_point`] and [`blocking`] act on that
//! thread's turn (held in a thread-local), so the code between — the task
//! loop, the sandbox's epoch callback — needs no handle. On a thread that
//! never entered they do nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::fair::{Fair, Grant, TenantIx};

/// The longest a waiting thread sleeps before it looks again (releases
/// wake waiters directly; this catches stalled holders, below).
const RECHECK: Duration = Duration::from_millis(20);

/// A holder that has not reached a yield point for this long is taken to
/// be blocked outside the gate's knowledge (a guest's WASI sleep or poll,
/// slow host I/O): its core goes to a waiting thread, and the holder takes
/// a core again at its next yield point.
const STALL: Duration = Duration::from_millis(100);

/// A process's cores, shared fairly between tenants.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    origin: Instant,
    cores: usize,
}

struct State {
    fair: Fair,
    next_ticket: u64,
    /// Waiting threads by ticket: their condition variable and whether
    /// they were granted a core.
    waiters: HashMap<u64, Arc<Waiter>>,
    /// Per tenant: ns waited for a core, and of it ns throttled by the
    /// tenant's own ceiling.
    waited: Vec<(u64, u64)>,
    /// Threads holding a core, by the ticket that got it.
    holders: HashMap<u64, Held>,
}

/// A thread's hold on a core.
struct Held {
    ix: TenantIx,
    /// When the core was granted.
    since: Instant,
    /// Until when its use is charged.
    charged: Instant,
    /// When the thread was last at a yield point.
    seen: Instant,
    /// The core was handed on while the thread was stalled.
    stolen: bool,
}

struct Waiter {
    granted: std::sync::atomic::AtomicBool,
    cv: Condvar,
}

/// A tenant's lane through a [`Gate`].
#[derive(Clone)]
pub struct Lane {
    shared: Arc<Shared>,
    ix: TenantIx,
}

/// What one tenant got from a gate.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneUsage {
    /// The tenant.
    pub tenant: String,
    /// Its weight (`cpu_shares`).
    pub weight: u64,
    /// Its ceiling in cores (`cpu_cores`).
    pub ceiling: Option<f64>,
    /// CPU time its threads held a core, ns.
    pub used_ns: u64,
    /// Time its threads waited for a core, ns (including throttled time).
    pub waited_ns: u64,
    /// Of that, time waited because of its own ceiling, ns.
    pub throttled_ns: u64,
    /// Cores it holds now.
    pub holding: usize,
    /// Its threads waiting now.
    pub waiting: usize,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave `Fair` half-updated in a
    // way that matters more than stopping the process's scheduling would.
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wake(state: &State, tickets: Vec<u64>) {
        for t in tickets {
            if let Some(w) = state.waiters.get(&t) {
                w.granted.store(true, Ordering::Release);
                w.cv.notify_one();
            }
        }
    }

    /// Hands on the cores of holders stalled past [`STALL`], charging
    /// their tenants up to now.
    fn steal_stalled(&self, state: &mut State) {
        let now = self.now();
        let stalled: Vec<u64> = state
            .holders
            .iter()
            .filter(|(_, h)| !h.stolen && h.seen.elapsed() > STALL)
            .map(|(t, _)| *t)
            .collect();
        for t in stalled {
            let Some(h) = state.holders.get_mut(&t) else {
                continue;
            };
            h.stolen = true;
            let (ix, used) = (h.ix, elapsed_ns(h.charged));
            state.fair.charge(ix, used, now);
            let granted = state.fair.release(ix, now);
            Self::wake(state, granted);
        }
    }

    /// Blocks until tenant `ix` holds a core; returns the hold's id.
    fn acquire(&self, ix: TenantIx) -> u64 {
        let mut state = lock(self);
        let now = self.now();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        if state.fair.request(ix, ticket, now) == Grant::Queued {
            let waiter = Arc::new(Waiter {
                granted: std::sync::atomic::AtomicBool::new(false),
                cv: Condvar::new(),
            });
            state.waiters.insert(ticket, waiter.clone());
            // A core may be free for someone (this thread included).
            let granted = state.fair.dispatch(now);
            Self::wake(&state, granted);
            let started = Instant::now();
            let mut throttled = Duration::ZERO;
            while !waiter.granted.load(Ordering::Acquire) {
                // Over its ceiling, no release wakes a tenant's waiter:
                // time does. Otherwise a release does; the timeout looks
                // for stalled holders and dispatches again.
                let throttled_now = state.fair.throttled(ix, self.now());
                let wait = match (throttled_now, state.fair.throttled_for(ix)) {
                    (true, Some(ns)) => Duration::from_nanos(ns).min(RECHECK),
                    _ => RECHECK,
                };
                let before = Instant::now();
                state = waiter
                    .cv
                    .wait_timeout(state, wait)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                if throttled_now {
                    throttled += before.elapsed();
                }
                if !waiter.granted.load(Ordering::Acquire) {
                    self.steal_stalled(&mut state);
                    let granted = state.fair.dispatch(self.now());
                    Self::wake(&state, granted);
                }
            }
            state.waiters.remove(&ticket);
            let waited = &mut state.waited[ix];
            waited.0 = waited
                .0
                .saturating_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            waited.1 = waited
                .1
                .saturating_add(u64::try_from(throttled.as_nanos()).unwrap_or(u64::MAX));
        }
        let now = Instant::now();
        state.holders.insert(
            ticket,
            Held {
                ix,
                since: now,
                charged: now,
                seen: now,
                stolen: false,
            },
        );
        ticket
    }

    /// Charges what a hold used and hands its core on (unless it was
    /// handed on already, the thread having stalled).
    fn release(&self, hold: u64) {
        let mut state = lock(self);
        let Some(h) = state.holders.remove(&hold) else {
            return;
        };
        if h.stolen {
            return;
        }
        let now = self.now();
        state.fair.charge(h.ix, elapsed_ns(h.charged), now);
        let granted = state.fair.release(h.ix, now);
        Self::wake(&state, granted);
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Gate {
    /// A gate handing out `cores` cores.
    pub fn new(cores: usize) -> Self {
        Gate {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    fair: Fair::new(cores),
                    next_ticket: 0,
                    waiters: HashMap::new(),
                    waited: Vec::new(),
                    holders: HashMap::new(),
                }),
                origin: Instant::now(),
                cores: cores.max(1),
            }),
        }
    }

    /// Cores this gate hands out.
    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    /// The lane of `tenant`, registering it or updating its weight and
    /// ceiling.
    pub fn lane(&self, tenant: &str, weight: u32, ceiling: Option<f64>) -> Lane {
        let mut state = lock(&self.shared);
        let ix = state.fair.tenant(tenant, weight, ceiling);
        if state.waited.len() <= ix {
            state.waited.resize(ix + 1, (0, 0));
        }
        Lane {
            shared: self.shared.clone(),
            ix,
        }
    }

    /// Every tenant's use of the gate so far.
    pub fn usage(&self) -> Vec<LaneUsage> {
        let state = lock(&self.shared);
        let mut out: Vec<LaneUsage> = (0..state.fair.len())
            .map(|ix| {
                let (holding, waiting) = state.fair.load(ix);
                LaneUsage {
                    tenant: state.fair.name(ix).to_owned(),
                    weight: state.fair.weight(ix),
                    ceiling: state.fair.ceiling(ix),
                    used_ns: state.fair.used_ns(ix),
                    waited_ns: state.waited[ix].0,
                    throttled_ns: state.waited[ix].1,
                    holding,
                    waiting,
                }
            })
            .collect();
        drop(state);
        // Time held right now is not charged yet; what is charged is exact.
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }
}

/// The turn of the thread that entered a lane.
struct Turn {
    lane: Lane,
    /// Its hold on a core (`None` while handed back around a blocking call).
    hold: Option<u64>,
}

thread_local! {
    static TURN: RefCell<Option<Turn>> = const { RefCell::new(None) };
}

/// The thread is in its tenant's lane until this is dropped.
#[must_use = "the thread leaves the lane when this is dropped"]
pub struct Entered {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entered")
    }
}

impl Lane {
    /// Takes a core for the calling thread (waiting for it if need be)
    /// and keeps it in this lane until the guard is dropped.
    ///
    /// # Panics
    ///
    /// If the thread is already in a lane.
    pub fn enter(&self) -> Entered {
        TURN.with(|t| {
            let mut t = t.borrow_mut();
            assert!(t.is_none(), "invariant: a thread enters one lane at a time");
            let hold = self.shared.acquire(self.ix);
            *t = Some(Turn {
                lane: self.clone(),
                hold: Some(hold),
            });
        });
        Entered {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let turn = TURN.with(|t| t.borrow_mut().take());
        if let Some(Turn {
            lane,
            hold: Some(hold),
        }) = turn
        {
            lane.shared.release(hold);
        }
    }
}

/// Hands the thread's core over if another thread should run now (see
/// [`Fair::should_yield`]), and waits for it back; charges the time used
/// so far either way. Does nothing on a thread outside a lane, and is
/// cheap: call it between units of work and from long computations.
pub fn yield_point() {
    TURN.with(|t| {
        let mut t = t.borrow_mut();
        let Some(turn) = t.as_mut() else {
            return;
        };
        let Some(hold) = turn.hold else {
            return;
        };
        let shared = &turn.lane.shared;
        let ix = turn.lane.ix;
        let mut state = lock(shared);
        let now = shared.now();
        let Some(h) = state.holders.get_mut(&hold) else {
            return;
        };
        if h.stolen {
            // Its core went to another thread while it stalled.
            state.holders.remove(&hold);
            drop(state);
            turn.hold = Some(shared.acquire(ix));
            return;
        }
        let used = elapsed_ns(h.charged);
        let held = elapsed_ns(h.since);
        let at = Instant::now();
        h.charged = at;
        h.seen = at;
        state.fair.charge(ix, used, now);
        if !state.fair.should_yield(ix, held, now) {
            return;
        }
        state.holders.remove(&hold);
        let granted = state.fair.release(ix, now);
        Shared::wake(&state, granted);
        drop(state);
        turn.hold = Some(shared.acquire(ix));
    });
}

/// Runs `f` — something that blocks: waiting on a channel, sleeping —
/// with the thread's core handed back, and takes a core again after.
/// Outside a lane it only runs `f`.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let lane = TURN.with(|t| {
        let mut t = t.borrow_mut();
        let turn = t.as_mut()?;
        let hold = turn.hold.take()?;
        turn.lane.shared.release(hold);
        Some(turn.lane.clone())
    });
    let result = f();
    if let Some(lane) = lane {
        let hold = lane.shared.acquire(lane.ix);
        TURN.with(|t| {
            if let Some(turn) = t.borrow_mut().as_mut() {
                turn.hold = Some(hold);
            }
        });
    }
    result
}

impl Lane {
    /// ns charged to this lane's tenant so far.
    pub fn used_ns(&self) -> u64 {
        lock(&self.shared).fair.used_ns(self.ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn one_core_is_held_by_one_thread_at_a_time() {
        let gate = Gate::new(1);
        let lanes = [gate.lane("a", 1, None), gate.lane("b", 1, None)];
        let inside = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let lane = lanes[i % 2].clone();
                let (inside, most) = (inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _in = lane.enter();
                    for _ in 0..200 {
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::hint::black_box((0..1000u64).sum::<u64>());
                        inside.fetch_sub(1, Ordering::SeqCst);
                        yield_point();
                        blocking(std::thread::yield_now);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        let usage = gate.usage();
        assert_eq!(usage.len(), 2);
        assert!(
            usage
                .iter()
                .all(|u| u.used_ns > 0 && u.holding == 0 && u.waiting == 0)
        );
    }

    #[test]
    fn a_tenant_over_its_ceiling_waits_throttled_and_goes_on() {
        // A ceiling of a tenth of a core: its budget starts empty, so its
        // first core comes only once the budget refills, however idle the
        // cores are; then it runs to its end.
        let gate = Gate::new(2);
        let lane = gate.lane("capped", 1, Some(0.1));
        let _in = lane.enter();
        for _ in 0..5 {
            std::hint::black_box((0..10_000u64).sum::<u64>());
            yield_point();
        }
        drop(_in);
        let usage = gate.usage();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].throttled_ns > 0, "{usage:?}");
        assert!(usage[0].waited_ns >= usage[0].throttled_ns, "{usage:?}");
        assert_eq!((usage[0].holding, usage[0].waiting), (0, 0));
    }

    #[test]
    fn a_holder_stalled_outside_the_gate_does_not_keep_its_core() {
        // One core. A thread of `a` blocks without telling the gate (as a
        // guest's WASI sleep would) until `b` has run: `b` gets the core.
        let gate = Gate::new(1);
        let (a, b) = (gate.lane("a", 1, None), gate.lane("b", 1, None));
        let (ran_tx, ran_rx) = std::sync::mpsc::channel::<()>();
        let (holding_tx, holding_rx) = std::sync::mpsc::channel::<()>();
        let stalled = std::thread::spawn(move || {
            let _in = a.enter();
            holding_tx.send(()).expect("send");
            ran_rx.recv().expect("b ran");
            yield_point();
        });
        holding_rx.recv().expect("a holds the only core");
        let other = std::thread::spawn(move || {
            let _in = b.enter();
            ran_tx.send(()).expect("send");
        });
        other.join().expect("b");
        stalled.join().expect("a");
        let usage = gate.usage();
        assert!(
            usage.iter().all(|u| u.holding == 0 && u.waiting == 0),
            "{usage:?}"
        );
    }

    #[test]
    fn outside_a_lane_the_helpers_only_run_the_work() {
        yield_point();
        assert_eq!(blocking(|| 7), 7);
    }
}
