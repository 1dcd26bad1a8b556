//! Per-instance host state: the locked-down WASI context, the memory
//! limiter, captured output, and the contract's host imports (log, metrics,
//! clock).

use std::collections::BTreeMap;

use sluice_policy::Limits;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capture::Capture;

/// Seed for the guest's random numbers: fixed, so a job is reproducible and
/// a guest cannot use randomness as a covert channel between runs.
const RANDOM_SEED: u64 = 0x5eed_5eed_5eed_5eed;

/// Table elements one instance may have (function tables of large guests
/// stay far below this).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Host log messages kept per call: more are counted and dropped.
const MAX_LOG_MESSAGES_PER_CALL: usize = 1000;

/// The longest metric name, in bytes.
pub(crate) const MAX_METRIC_NAME: usize = 256;

/// Distinct counter names per call, and gauge names per instance.
pub(crate) const MAX_METRIC_NAMES: usize = 1000;

/// Bytes a guest may pass to the `log` and `metrics` imports in one call,
/// each import call counting [`HOST_CALL_COST`] more: the host's work for
/// them is not metered by fuel, so it is bounded here.
pub(crate) const HOST_BYTES_PER_CALL: u64 = 64 << 20;

/// What one host-import call counts against [`HOST_BYTES_PER_CALL`].
const HOST_CALL_COST: u64 = 64;

/// A trap raised by a host import over one of the limits above.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HostLimit(pub String);

/// Enforces the memory limit (the policy's per instance, and the caps of
/// the accounts the instance is claimed from) and remembers that it did,
/// so a trap that follows a refused `memory.grow` is reported as what it is.
pub(crate) struct Limiter {
    memory_limit: usize,
    pub refused_growth: Option<usize>,
    /// A cap of an account that refused a growth.
    pub refused_cap: Option<sluice_share::CapExceeded>,
    /// Bytes of linear memory the instance's memories have grown to.
    pub memory_bytes: usize,
    /// The instance's claim on its accounts (none outside a TaskManager).
    pub claim: sluice_share::Claim,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        // Past the memory's own declared maximum the growth fails anyway:
        // nothing is counted for it.
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        if desired > self.memory_limit {
            self.refused_growth = Some(desired);
            return Ok(false);
        }
        if let Err(cap) = self.claim.grow(desired.saturating_sub(current) as u64) {
            self.refused_cap = Some(cap);
            return Ok(false);
        }
        self.memory_bytes = self
            .memory_bytes
            .saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A message logged by the guest through the contract's `log` import.
#[derive(Clone, Debug)]
pub struct GuestLog {
    /// Level name.
    pub level: &'static str,
    /// Message text.
    pub message: String,
}

pub(crate) struct HostState {
    /// Built on the guest's first WASI call (see [`wasi_ctx`]): most
    /// operators make none, and building it was about a tenth of an
    /// operator's start.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub limiter: Limiter,
    pub stdout: Capture,
    pub stderr: Capture,
    /// Processing time fixed for the current call.
    pub now_ms: i64,
    pub logs: Vec<GuestLog>,
    pub logs_dropped: usize,
    /// Bytes of `log` messages kept in the current call, and the cap
    /// (the policy's `log_bytes_per_call`, as for stdout and stderr).
    log_bytes: usize,
    log_cap: usize,
    /// What the current call passed to host imports (see
    /// [`HOST_BYTES_PER_CALL`]); reset by each call.
    pub host_bytes: u64,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, f64>,
    /// When the current call must end (the policy's `max_call_ms`).
    pub call_deadline: Option<std::time::Instant>,
    /// Whether the task was cancelled: checked on every epoch tick.
    pub cancelled: Option<crate::instance::CancelCheck>,
}

impl HostState {
    pub(crate) fn new(limits: &Limits, claim: sluice_share::Claim) -> Self {
        let stdout = Capture::new(limits.log_bytes_per_call);
        let stderr = Capture::new(limits.log_bytes_per_call);
        HostState {
            wasi: None,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_limit: usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX),
                refused_growth: None,
                refused_cap: None,
                memory_bytes: 0,
                claim,
            },
            stdout,
            stderr,
            now_ms: 0,
            logs: Vec::new(),
            logs_dropped: 0,
            log_bytes: 0,
            log_cap: limits.log_bytes_per_call,
            host_bytes: 0,
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            call_deadline: None,
            cancelled: None,
        }
    }
}

/// What a guest sees of WASI: its output captured, deterministic
/// randomness, and no preopened directories, environment, arguments or
/// network (WasiCtxBuilder grants none of them unless asked).
fn wasi_ctx(stdout: &Capture, stderr: &Capture) -> WasiCtx {
    WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .insecure_random_seed(u128::from(RANDOM_SEED))
        .secure_random(wasmtime_wasi::Deterministic::new(
            RANDOM_SEED.to_le_bytes().to_vec(),
        ))
        .insecure_random(wasmtime_wasi::Deterministic::new(
            RANDOM_SEED.to_be_bytes().to_vec(),
        ))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| wasi_ctx(&self.stdout, &self.stderr)),
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// The current call's waits (see [`crate::waits`]).
    pub(crate) fn waits(&mut self) -> crate::waits::Waits<'_> {
        crate::waits::Waits::new(&mut self.table, self.call_deadline, self.cancelled.as_ref())
    }

    /// Counts a host-import call passing `bytes`; a trap once the call's
    /// budget is spent.
    fn charge(&mut self, what: &str, bytes: usize) -> Result<()> {
        self.host_bytes = self
            .host_bytes
            .saturating_add(HOST_CALL_COST)
            .saturating_add(bytes as u64);
        if self.host_bytes > HOST_BYTES_PER_CALL {
            return Err(HostLimit(format!(
                "passed more than {} MiB to host imports in one call (the last: {what} with {bytes} bytes; each call counts {HOST_CALL_COST} bytes more)",
                HOST_BYTES_PER_CALL >> 20
            ))
            .into());
        }
        Ok(())
    }

    /// Starts a new guest call: its budgets are fresh.
    pub(crate) fn begin_call(&mut self) {
        self.host_bytes = 0;
        self.log_bytes = 0;
    }
}

/// Whether `name` may be set in `names` (the counters of this call, or the
/// gauges of this instance): short enough, and not one name too many.
fn check_metric<V>(names: &BTreeMap<String, V>, name: &str, scope: &str) -> Result<()> {
    if name.len() > MAX_METRIC_NAME {
        return Err(HostLimit(format!(
            "a metric name of {} bytes is over the limit of {MAX_METRIC_NAME}",
            name.len()
        ))
        .into());
    }
    if !names.contains_key(name) && names.len() >= MAX_METRIC_NAMES {
        return Err(HostLimit(format!("more than {MAX_METRIC_NAMES} distinct {scope}")).into());
    }
    Ok(())
}

impl HostState {
    /// `log.log`: `level` named as the log shows it.
    fn guest_log(&mut self, level: &'static str, message: String) -> Result<()> {
        self.charge("log", message.len())?;
        let room = self.log_cap.saturating_sub(self.log_bytes);
        if self.logs.len() >= MAX_LOG_MESSAGES_PER_CALL || room == 0 {
            self.logs_dropped += 1;
            return Ok(());
        }
        let mut message = message;
        if message.len() > room {
            let mut cut = room;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut: over the per-call log cap]");
            self.logs_dropped += 1;
        }
        self.log_bytes += message.len();
        self.logs.push(GuestLog { level, message });
        Ok(())
    }

    /// `metrics.counter-add`.
    fn counter_add(&mut self, name: String, delta: u64) -> Result<()> {
        self.charge("metrics.counter-add", name.len())?;
        check_metric(&self.counters, &name, "counter names in one call")?;
        let c = self.counters.entry(name).or_default();
        *c = c.saturating_add(delta);
        Ok(())
    }

    /// `metrics.gauge-set`.
    fn gauge_set(&mut self, name: String, value: f64) -> Result<()> {
        self.charge("metrics.gauge-set", name.len())?;
        check_metric(&self.gauges, &name, "gauge names in one instance")?;
        self.gauges.insert(name, value);
        Ok(())
    }
}

/// The host imports of one contract version (`crate::bindings::VERSION`),
/// all served by the methods above: the imports did not change between
/// versions, only their generated types are distinct.
macro_rules! host_imports {
    ($v:ident) => {
        impl crate::bindings::$v::sluice::app::log::Host for HostState {
            fn log(
                &mut self,
                level: crate::bindings::$v::sluice::app::log::Level,
                message: String,
            ) -> Result<()> {
                use crate::bindings::$v::sluice::app::log::Level;
                let level = match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                self.guest_log(level, message)
            }
        }

        impl crate::bindings::$v::sluice::app::metrics::Host for HostState {
            fn counter_add(&mut self, name: String, delta: u64) -> Result<()> {
                HostState::counter_add(self, name, delta)
            }

            fn gauge_set(&mut self, name: String, value: f64) -> Result<()> {
                HostState::gauge_set(self, name, value)
            }
        }

        impl crate::bindings::$v::sluice::app::clock::Host for HostState {
            fn processing_time(&mut self) -> i64 {
                self.now_ms
            }
        }

        impl crate::bindings::$v::sluice::app::types::Host for HostState {}
        impl crate::bindings::$v::sluice::app::plan::Host for HostState {}
    };
}

host_imports!(v1);
host_imports!(v2);

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    crate::waits::shadow_poll(linker)?;
    crate::bindings::v1::Application::add_to_linker::<HostState, HasSelf<HostState>>(
        linker,
        |s| s,
    )?;
    crate::bindings::v2::Application::add_to_linker::<HostState, HasSelf<HostState>>(
        linker,
        |s| s,
    )?;
    Ok(())
}
