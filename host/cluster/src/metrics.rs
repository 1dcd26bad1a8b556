//! Prometheus metrics through the `metrics` crate, rendered in Prometheus
//! text at `GET /metrics` (the JobManager's REST port, each TaskManager's
//! metrics port).
//!
//! Tasks count into lock-free atomics (`sluice_runtime::TaskCounters`), so
//! the record path pays nothing for metrics; the drivers publish those
//! counts into the recorder on their heartbeat tick, when a task ends and
//! right before a scrape. Series that nobody publishes for
//! [`IDLE_TIMEOUT`] (a finished or cancelled job's) leave the output, so a
//! long-lived cluster does not accumulate them.
//!
//! Labels follow Flink's Prometheus reporter: `job_id`, `job_name`,
//! `task_name`, `operator_name`, `subtask_index`; every job's series also
//! carries the `tenant` that owns the job.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use sluice_runtime::TaskCounters;
use sluice_types::JobId;

/// How long a series stays after its last update.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(IDLE_TIMEOUT))
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics stays empty");
        }
        describe();
        handle
    })
}

/// Installs the recorder now, so that the first scrape already has help texts.
pub(crate) fn install() {
    handle();
}

fn describe() {
    describe_counter!(
        "sluice_operator_records_in_total",
        "Records an operator subtask received."
    );
    describe_counter!(
        "sluice_operator_records_out_total",
        "Records an operator subtask emitted."
    );
    describe_counter!(
        "sluice_task_bytes_in_total",
        "Payload bytes (keys and values) a subtask read from its inputs or host source."
    );
    describe_counter!(
        "sluice_task_bytes_out_total",
        "Payload bytes a subtask sent to its outputs or host sink."
    );
    describe_counter!(
        "sluice_task_backpressured_milliseconds_total",
        "Time a subtask spent blocked because a downstream channel was full."
    );
    describe_counter!(
        "sluice_task_fuel_consumed_total",
        "Wasm fuel burnt by a subtask's guest operators (0 without a fuel limit)."
    );
    describe_counter!(
        "sluice_tenant_fuel_consumed_total",
        "Wasm fuel burnt by a tenant's guest operators on this TaskManager, ended tasks included."
    );
    describe_counter!(
        "sluice_tenant_compilations_total",
        "Components of a tenant this process compiled (outcome: compiled, or refused at a compile limit or as invalid)."
    );
    describe_counter!(
        "sluice_tenant_compile_cpu_milliseconds_total",
        "CPU time this process spent compiling a tenant's components, refused ones included."
    );
    describe_counter!(
        "sluice_tenant_cpu_milliseconds_total",
        "Time a tenant's tasks held one of this TaskManager's cores (its fair gate's)."
    );
    describe_counter!(
        "sluice_tenant_cpu_wait_milliseconds_total",
        "Time a tenant's tasks waited for a core while other tenants' held them, throttled time included."
    );
    describe_counter!(
        "sluice_tenant_cpu_throttled_milliseconds_total",
        "Time a tenant's tasks waited because the tenant was at its cpu_cores ceiling."
    );
    describe_gauge!(
        "sluice_tenant_cpu_shares",
        "A tenant's CPU weight (cpu_shares)."
    );
    describe_gauge!(
        "sluice_tenant_cpu_entitled_cores",
        "Cores a tenant's weight entitles it to beside the tenants busy now (within its ceiling)."
    );
    describe_gauge!(
        "sluice_tenant_cpu_cores_limit",
        "A tenant's cpu_cores ceiling."
    );
    describe_gauge!(
        "sluice_tenant_guest_instances",
        "A tenant's live guest instances on this TaskManager."
    );
    describe_gauge!(
        "sluice_tenant_guest_instances_limit",
        "A tenant's max_instances_per_taskmanager."
    );
    describe_gauge!(
        "sluice_tenant_guest_memory_bytes",
        "Guest linear memory of a tenant's instances on this TaskManager."
    );
    describe_gauge!(
        "sluice_tenant_guest_memory_limit_bytes",
        "A tenant's max_memory_mib_per_taskmanager, in bytes."
    );
    describe_gauge!(
        "sluice_taskmanager_slots_total",
        "Slots this TaskManager offers."
    );
    describe_gauge!(
        "sluice_taskmanager_slots_used",
        "Slots of this TaskManager holding tasks."
    );
    describe_gauge!(
        "sluice_taskmanager_guest_instances",
        "Live guest (wasm) instances on this TaskManager."
    );
    describe_gauge!(
        "sluice_taskmanager_guest_memory_bytes",
        "Linear memory held by this TaskManager's guest instances."
    );
    describe_gauge!(
        "sluice_process_resident_memory_bytes",
        "Resident memory of this process."
    );
    describe_gauge!(
        "sluice_jobmanager_taskmanagers",
        "TaskManagers registered with the JobManager."
    );
    describe_gauge!(
        "sluice_jobmanager_slots_total",
        "Slots offered by all registered TaskManagers."
    );
    describe_gauge!(
        "sluice_jobmanager_slots_available",
        "Slots not holding any task."
    );
    describe_gauge!(
        "sluice_jobmanager_jobs",
        "Jobs known to the JobManager, by status."
    );
    describe_counter!(
        "sluice_job_records_in_total",
        "Records an operator subtask received, as last reported to the JobManager."
    );
    describe_counter!(
        "sluice_job_records_out_total",
        "Records an operator subtask emitted, as last reported to the JobManager."
    );
}

/// The Prometheus text of everything published so far, after refreshing
/// the process gauges.
pub(crate) fn render() -> String {
    let handle = handle();
    if let Some(rss) = resident_memory_bytes() {
        gauge!("sluice_process_resident_memory_bytes").set(rss as f64);
    }
    handle.run_upkeep();
    handle.render()
}

/// The resident set size from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Who a subtask is, for its labels.
pub(crate) struct TaskLabels<'a> {
    pub tenant: &'a str,
    pub job: &'a JobId,
    pub job_name: &'a str,
    pub task_name: &'a str,
    pub subtask: u32,
}

/// Publishes one subtask's counters.
pub(crate) fn publish_task(l: &TaskLabels<'_>, c: &TaskCounters) {
    let job_id = l.job.to_string();
    let subtask = l.subtask.to_string();
    for (operator, n) in &c.nodes {
        let labels = [
            ("tenant", l.tenant.to_owned()),
            ("job_id", job_id.clone()),
            ("job_name", l.job_name.to_owned()),
            ("task_name", l.task_name.to_owned()),
            ("operator_name", operator.clone()),
            ("subtask_index", subtask.clone()),
        ];
        counter!("sluice_operator_records_in_total", &labels)
            .absolute(n.records_in.load(Ordering::Relaxed));
        counter!("sluice_operator_records_out_total", &labels)
            .absolute(n.records_out.load(Ordering::Relaxed));
    }
    let labels = [
        ("tenant", l.tenant.to_owned()),
        ("job_id", job_id),
        ("job_name", l.job_name.to_owned()),
        ("task_name", l.task_name.to_owned()),
        ("subtask_index", subtask),
    ];
    counter!("sluice_task_bytes_in_total", &labels).absolute(c.bytes_in.load(Ordering::Relaxed));
    counter!("sluice_task_bytes_out_total", &labels).absolute(c.bytes_out.load(Ordering::Relaxed));
    counter!("sluice_task_backpressured_milliseconds_total", &labels)
        .absolute(c.backpressured_ns.load(Ordering::Relaxed) / 1_000_000);
    counter!("sluice_task_fuel_consumed_total", &labels)
        .absolute(c.fuel_consumed.load(Ordering::Relaxed));
}

/// Publishes the fuel a tenant's tasks burnt on this TaskManager since it
/// started (ended tasks included): the figure to bill by.
pub(crate) fn publish_tenant_fuel(tenant: &str, fuel: u64) {
    counter!("sluice_tenant_fuel_consumed_total", "tenant" => tenant.to_owned()).absolute(fuel);
}

/// Publishes one tenant's share of this TaskManager.
pub(crate) fn publish_tenant_share(s: &crate::protocol::TenantShare) {
    let t = || [("tenant", s.tenant.clone())];
    counter!("sluice_tenant_cpu_milliseconds_total", &t()).absolute(s.cpu_ns / 1_000_000);
    counter!("sluice_tenant_cpu_wait_milliseconds_total", &t()).absolute(s.wait_ns / 1_000_000);
    counter!("sluice_tenant_cpu_throttled_milliseconds_total", &t())
        .absolute(s.throttled_ns / 1_000_000);
    gauge!("sluice_tenant_cpu_shares", &t()).set(s.cpu_shares as f64);
    gauge!("sluice_tenant_cpu_entitled_cores", &t()).set(s.entitled_cores);
    if let Some(c) = s.cpu_cores_limit {
        gauge!("sluice_tenant_cpu_cores_limit", &t()).set(c);
    }
    gauge!("sluice_tenant_guest_instances", &t()).set(s.instances as f64);
    if let Some(n) = s.instances_limit {
        gauge!("sluice_tenant_guest_instances_limit", &t()).set(n as f64);
    }
    gauge!("sluice_tenant_guest_memory_bytes", &t()).set(s.memory_bytes as f64);
    if let Some(n) = s.memory_limit_bytes {
        gauge!("sluice_tenant_guest_memory_limit_bytes", &t()).set(n as f64);
    }
}

/// Publishes a TaskManager's own gauges.
pub(crate) fn publish_taskmanager(slots_total: u32, slots_used: u32) {
    gauge!("sluice_taskmanager_slots_total").set(f64::from(slots_total));
    gauge!("sluice_taskmanager_slots_used").set(f64::from(slots_used));
    gauge!("sluice_taskmanager_guest_instances").set(sluice_runtime::guest_instances() as f64);
    gauge!("sluice_taskmanager_guest_memory_bytes")
        .set(sluice_runtime::guest_memory_bytes() as f64);
}

/// What the JobManager publishes about the cluster.
pub(crate) struct ClusterFigures {
    pub taskmanagers: usize,
    pub slots_total: u32,
    pub slots_available: u32,
    /// Number of jobs per status name.
    pub jobs: Vec<(&'static str, usize)>,
}

/// Publishes the JobManager's view of the cluster.
pub(crate) fn publish_cluster(f: &ClusterFigures) {
    gauge!("sluice_jobmanager_taskmanagers").set(f.taskmanagers as f64);
    gauge!("sluice_jobmanager_slots_total").set(f64::from(f.slots_total));
    gauge!("sluice_jobmanager_slots_available").set(f64::from(f.slots_available));
    for (status, n) in &f.jobs {
        gauge!("sluice_jobmanager_jobs", "status" => *status).set(*n as f64);
    }
}

/// Publishes the counts a TaskManager last reported for one subtask.
pub(crate) fn publish_job_counts(
    tenant: &str,
    job: &JobId,
    job_name: &str,
    operators: &[String],
    subtask: u32,
    counts: &[(u64, u64)],
) {
    let job_id = job.to_string();
    let subtask = subtask.to_string();
    for (operator, &(records_in, records_out)) in operators.iter().zip(counts) {
        let labels = [
            ("tenant", tenant.to_owned()),
            ("job_id", job_id.clone()),
            ("job_name", job_name.to_owned()),
            ("operator_name", operator.clone()),
            ("subtask_index", subtask.clone()),
        ];
        counter!("sluice_job_records_in_total", &labels).absolute(records_in);
        counter!("sluice_job_records_out_total", &labels).absolute(records_out);
    }
}
