//! What compiling each tenant's components cost this process (the
//! JobManager at upload and submission, a TaskManager at deployment): the
//! figure that bills compilation to the component's owner, a compile bomb
//! refused at its limit included.

use std::collections::BTreeMap;
use std::sync::Mutex;

use metrics::counter;
use sluice_wasm::CompileCost;

/// One tenant's compilations since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompileUse {
    /// Components compiled (cache hits are not counted).
    pub compilations: u64,
    /// Of those, refused: at a compile limit, or as invalid.
    pub refused: u64,
    /// CPU time they took, ns.
    pub cpu_ns: u64,
}

/// Every tenant's [`CompileUse`] in this process.
#[derive(Default)]
pub(crate) struct Compiles(Mutex<BTreeMap<String, CompileUse>>);

impl Compiles {
    /// Counts a load of `tenant`'s component that cost `cost` and
    /// succeeded or not; a load that compiled nothing counts nothing.
    pub(crate) fn record(&self, tenant: &str, cost: &CompileCost, ok: bool) {
        if !cost.compiled {
            return;
        }
        let cpu_ns = u64::try_from(cost.cpu.as_nanos()).unwrap_or(u64::MAX);
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let u = all.entry(tenant.to_owned()).or_default();
        u.compilations += 1;
        u.refused += u64::from(!ok);
        u.cpu_ns = u.cpu_ns.saturating_add(cpu_ns);
        let outcome = if ok { "compiled" } else { "refused" };
        counter!("sluice_tenant_compilations_total", "tenant" => tenant.to_owned(), "outcome" => outcome)
            .increment(1);
        counter!("sluice_tenant_compile_cpu_milliseconds_total", "tenant" => tenant.to_owned())
            .absolute(u.cpu_ns / 1_000_000);
    }

    /// Every tenant's compilations so far.
    pub(crate) fn all(&self) -> Vec<(String, CompileUse)> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().map(|(t, u)| (t.clone(), *u)).collect()
    }

    /// `tenant`'s compilations so far.
    pub(crate) fn of(&self, tenant: &str) -> CompileUse {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.get(tenant).copied().unwrap_or_default()
    }
}
