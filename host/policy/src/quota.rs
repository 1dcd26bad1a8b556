//! The quota ledger: what each tenant holds (running jobs, their slots and
//! guest memory, stored jars, uploads in flight, checkpoint state) and the
//! pure decision whether a new or grown holding fits its tenant's quotas.
//!
//! Sans-IO: the JobManager feeds it holdings as they start, grow and end and
//! turns a refusal into a 4xx; nothing here reads a clock or a file. Limits
//! are passed in with each request, not stored, so a reloaded policy applies
//! to new requests while what is already held stays held.
//!
//! ```
//! use sluice_policy::quota::{Holder, Ledger, Usage};
//! use sluice_policy::{Policy, TenantId};
//!
//! let mut quotas = Policy::standard().quotas;
//! quotas.max_jobs = Some(1);
//! let acme = TenantId::new("acme").unwrap();
//! let mut ledger = Ledger::default();
//! let job = Usage { jobs: 1, slots: 2, memory_mib: 512, ..Usage::default() };
//! ledger.admit(&acme, "standard", &quotas, Holder::Job("a".into()), job).unwrap();
//! let refused = ledger
//!     .admit(&acme, "standard", &quotas, Holder::Job("b".into()), job)
//!     .unwrap_err();
//! assert_eq!(
//!     refused.to_string(),
//!     "tenant `acme` exceeded quota `max_jobs` of policy `standard`: requested 1, used 1, limited 1"
//! );
//! ledger.release(&acme, &Holder::Job("a".into()));
//! assert_eq!(ledger.usage(&acme), Usage::default());
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Quotas, TenantId};

/// Amounts a holding uses, or a tenant's sum of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Jobs that are not finished, cancelled or failed.
    pub jobs: u64,
    /// Task slots: the sum of the running jobs' parallelism.
    pub slots: u64,
    /// Guest linear memory: live instances × the policy's `memory_mib`.
    pub memory_mib: u64,
    /// Stored jars, counting uploads under way.
    pub jars: u64,
    /// Bytes of stored jars, counting the bytes received by uploads under way.
    pub jar_bytes: u64,
    /// Uploads under way.
    pub uploads: u64,
    /// Bytes of each job's latest completed checkpoint.
    pub checkpoint_bytes: u64,
}

/// One quantity the ledger counts, named as its quota is in a policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// `max_jobs`.
    Jobs,
    /// `max_slots`.
    Slots,
    /// `max_memory_mib`.
    MemoryMib,
    /// `max_jars`.
    Jars,
    /// `max_jar_bytes`.
    JarBytes,
    /// `max_concurrent_uploads`.
    Uploads,
    /// `max_checkpoint_bytes`.
    CheckpointBytes,
}

impl Resource {
    /// Every resource, in the order refusals are checked.
    pub const ALL: [Resource; 7] = [
        Resource::Jobs,
        Resource::Slots,
        Resource::MemoryMib,
        Resource::Jars,
        Resource::JarBytes,
        Resource::Uploads,
        Resource::CheckpointBytes,
    ];

    /// The quota's key in a policy's `[quotas]` table.
    pub fn quota_name(self) -> &'static str {
        match self {
            Resource::Jobs => "max_jobs",
            Resource::Slots => "max_slots",
            Resource::MemoryMib => "max_memory_mib",
            Resource::Jars => "max_jars",
            Resource::JarBytes => "max_jar_bytes",
            Resource::Uploads => "max_concurrent_uploads",
            Resource::CheckpointBytes => "max_checkpoint_bytes",
        }
    }

    /// This resource's amount in `usage`.
    pub fn of(self, usage: &Usage) -> u64 {
        match self {
            Resource::Jobs => usage.jobs,
            Resource::Slots => usage.slots,
            Resource::MemoryMib => usage.memory_mib,
            Resource::Jars => usage.jars,
            Resource::JarBytes => usage.jar_bytes,
            Resource::Uploads => usage.uploads,
            Resource::CheckpointBytes => usage.checkpoint_bytes,
        }
    }

    fn of_mut(self, usage: &mut Usage) -> &mut u64 {
        match self {
            Resource::Jobs => &mut usage.jobs,
            Resource::Slots => &mut usage.slots,
            Resource::MemoryMib => &mut usage.memory_mib,
            Resource::Jars => &mut usage.jars,
            Resource::JarBytes => &mut usage.jar_bytes,
            Resource::Uploads => &mut usage.uploads,
            Resource::CheckpointBytes => &mut usage.checkpoint_bytes,
        }
    }

    /// The tenant-wide limit, `None` when the policy sets none.
    pub fn limit(self, quotas: &Quotas) -> Option<u64> {
        match self {
            Resource::Jobs => quotas.max_jobs,
            Resource::Slots => quotas.max_slots,
            Resource::MemoryMib => quotas.max_memory_mib,
            Resource::Jars => quotas.max_jars,
            Resource::JarBytes => quotas.max_jar_bytes,
            Resource::Uploads => quotas.max_concurrent_uploads,
            Resource::CheckpointBytes => quotas.max_checkpoint_bytes,
        }
    }
}

/// What holds resources: each is held at most once, by one tenant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// A job that has not ended (its jobs, slots and memory).
    Job(String),
    /// A stored jar, by id.
    Jar(String),
    /// An upload under way, by an id its receiver picks.
    Upload(String),
    /// A job's latest completed checkpoint, by job id.
    Checkpoint(String),
}

impl Holder {
    /// The per-holding quota that bounds this holder alone, if any: one
    /// upload's size and one job's checkpoint.
    fn single_limit(&self, quotas: &Quotas) -> Option<(&'static str, Resource, u64)> {
        match self {
            Holder::Upload(_) => quotas
                .max_upload_bytes
                .map(|l| ("max_upload_bytes", Resource::JarBytes, l)),
            Holder::Checkpoint(_) => quotas
                .max_checkpoint_bytes_per_job
                .map(|l| ("max_checkpoint_bytes_per_job", Resource::CheckpointBytes, l)),
            Holder::Job(_) | Holder::Jar(_) => None,
        }
    }
}

/// A request the tenant's quotas do not allow. Its message follows
/// Kubernetes' "exceeded quota": the quota, what was asked, what is used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant `{tenant}` exceeded quota `{quota}` of policy `{policy}`: requested {requested}, used {used}, limited {limit}"
)]
pub struct Exceeded {
    /// The tenant.
    pub tenant: TenantId,
    /// The policy the limit comes from.
    pub policy: String,
    /// The quota's key in the policy file.
    pub quota: &'static str,
    /// What the request adds (or, for a per-holding quota, its whole size).
    pub requested: u64,
    /// What the tenant already holds (0 for a per-holding quota).
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

/// Every tenant's holdings and their sums. A holder is one tenant's: the same
/// id held by two tenants is two holdings.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    holdings: BTreeMap<(TenantId, Holder), Usage>,
    totals: BTreeMap<TenantId, Usage>,
}

impl Ledger {
    /// A ledger of holdings that already exist (after a JobManager restart:
    /// the jobs it recovers, the jars on disk), admitted without checks so
    /// that a lowered quota never evicts what runs.
    pub fn from_holdings(holdings: impl IntoIterator<Item = (TenantId, Holder, Usage)>) -> Self {
        let mut ledger = Ledger::default();
        for (tenant, holder, usage) in holdings {
            ledger.set((tenant, holder), usage);
        }
        ledger
    }

    /// What `tenant` holds in all.
    pub fn usage(&self, tenant: &TenantId) -> Usage {
        self.totals.get(tenant).copied().unwrap_or_default()
    }

    /// What `tenant`'s `holder` holds.
    pub fn holding(&self, tenant: &TenantId, holder: &Holder) -> Option<Usage> {
        self.holdings
            .get(&(tenant.clone(), holder.clone()))
            .copied()
    }

    /// Sets `holder`'s use to `usage` for `tenant` if the tenant's quotas
    /// allow it: every resource that grows must fit under its limit with
    /// what the tenant holds elsewhere; shrinking is always allowed (even
    /// above a lowered limit). All or nothing: on a refusal nothing changes.
    pub fn admit(
        &mut self,
        tenant: &TenantId,
        policy: &str,
        quotas: &Quotas,
        holder: Holder,
        usage: Usage,
    ) -> Result<(), Exceeded> {
        let exceeded = |quota, requested, used, limit| Exceeded {
            tenant: tenant.clone(),
            policy: policy.to_owned(),
            quota,
            requested,
            used,
            limit,
        };
        if let Some((quota, resource, limit)) = holder.single_limit(quotas) {
            let requested = resource.of(&usage);
            if requested > limit {
                return Err(exceeded(quota, requested, 0, limit));
            }
        }
        let key = (tenant.clone(), holder);
        let before = self.holdings.get(&key).copied().unwrap_or_default();
        let total = self.usage(tenant);
        for resource in Resource::ALL {
            let (old, new) = (resource.of(&before), resource.of(&usage));
            let Some(limit) = resource.limit(quotas) else {
                continue;
            };
            if new <= old {
                continue;
            }
            let used = resource.of(&total);
            let grows = new - old;
            if used.saturating_add(grows) > limit {
                return Err(exceeded(resource.quota_name(), grows, used, limit));
            }
        }
        self.set(key, usage);
        Ok(())
    }

    /// Frees what `tenant`'s `holder` holds; returns it, `None` if it held
    /// nothing.
    pub fn release(&mut self, tenant: &TenantId, holder: &Holder) -> Option<Usage> {
        let usage = self.holdings.remove(&(tenant.clone(), holder.clone()))?;
        self.subtract(tenant, &usage);
        Some(usage)
    }

    /// Every holding, for a usage report.
    pub fn holdings(&self) -> impl Iterator<Item = (&TenantId, &Holder, Usage)> {
        self.holdings.iter().map(|((t, h), u)| (t, h, *u))
    }

    fn set(&mut self, key: (TenantId, Holder), usage: Usage) {
        if let Some(old) = self.holdings.remove(&key) {
            self.subtract(&key.0, &old);
        }
        let total = self.totals.entry(key.0.clone()).or_default();
        for resource in Resource::ALL {
            let slot = resource.of_mut(total);
            *slot = slot.saturating_add(resource.of(&usage));
        }
        self.holdings.insert(key, usage);
    }

    fn subtract(&mut self, tenant: &TenantId, usage: &Usage) {
        let Some(total) = self.totals.get_mut(tenant) else {
            return;
        };
        for resource in Resource::ALL {
            let slot = resource.of_mut(total);
            *slot = slot.saturating_sub(resource.of(usage));
        }
        if *total == Usage::default() {
            self.totals.remove(tenant);
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Job(id) => write!(f, "job {id}"),
            Holder::Jar(id) => write!(f, "jar {id}"),
            Holder::Upload(id) => write!(f, "upload {id}"),
            Holder::Checkpoint(id) => write!(f, "checkpoint state of job {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use proptest::prelude::*;

    fn quotas() -> Quotas {
        let mut q = Policy::standard().quotas;
        q.max_jobs = Some(3);
        q.max_slots = Some(8);
        q.max_memory_mib = Some(2048);
        q.max_jars = Some(2);
        q.max_jar_bytes = Some(1000);
        q.max_upload_bytes = Some(600);
        q.max_concurrent_uploads = Some(1);
        q.max_checkpoint_bytes = Some(5000);
        q.max_checkpoint_bytes_per_job = Some(3000);
        q
    }

    fn tenant(i: u8) -> TenantId {
        TenantId::new(&format!("t{i}")).expect("valid")
    }

    #[derive(Clone, Debug)]
    enum Op {
        Admit {
            tenant: u8,
            holder: Holder,
            usage: Usage,
        },
        Release {
            tenant: u8,
            holder: Holder,
        },
        Restart,
    }

    fn holder() -> impl Strategy<Value = Holder> {
        let id = (0u8..4).prop_map(|i| i.to_string());
        prop_oneof![
            id.clone().prop_map(Holder::Job),
            id.clone().prop_map(Holder::Jar),
            id.clone().prop_map(Holder::Upload),
            id.prop_map(Holder::Checkpoint),
        ]
    }

    /// What each kind of holder holds, as the JobManager fills it in.
    fn usage_for(holder: &Holder, a: u64, b: u64) -> Usage {
        match holder {
            Holder::Job(_) => Usage {
                jobs: 1,
                slots: a % 6,
                memory_mib: (a % 6) * 256,
                ..Usage::default()
            },
            Holder::Jar(_) => Usage {
                jars: 1,
                jar_bytes: b % 800,
                ..Usage::default()
            },
            Holder::Upload(_) => Usage {
                jars: 1,
                uploads: 1,
                jar_bytes: b % 800,
                ..Usage::default()
            },
            Holder::Checkpoint(_) => Usage {
                checkpoint_bytes: b % 4000,
                ..Usage::default()
            },
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..2, holder(), any::<u64>(), any::<u64>()).prop_map(|(tenant, holder, a, b)| {
                let usage = usage_for(&holder, a, b);
                Op::Admit { tenant, holder, usage }
            }),
            3 => (0u8..2, holder()).prop_map(|(tenant, holder)| Op::Release { tenant, holder }),
            1 => Just(Op::Restart),
        ]
    }

    fn sums(ledger: &Ledger, t: &TenantId) -> Usage {
        let mut sum = Usage::default();
        for (owner, _, u) in ledger.holdings() {
            if owner == t {
                for r in Resource::ALL {
                    *r.of_mut(&mut sum) += r.of(&u);
                }
            }
        }
        sum
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Totals are always the sums of the holdings (so never negative); an
        /// admitted growth never leaves a total above its limit; a refusal
        /// changes nothing; releasing frees exactly what was held; a ledger
        /// rebuilt from the holdings (a JobManager restart) has the same
        /// totals.
        #[test]
        fn the_ledger_accounts_exactly(ops in proptest::collection::vec(op(), 1..80)) {
            let q = quotas();
            let mut ledger = Ledger::default();
            for op in ops {
                match op {
                    Op::Admit { tenant: i, holder, usage } => {
                        let t = tenant(i);
                        let before_total = ledger.usage(&t);
                        let before = ledger.holding(&t, &holder).unwrap_or_default();
                        let other = ledger.usage(&tenant(1 - i));
                        match ledger.admit(&t, "p", &q, holder.clone(), usage) {
                            Ok(()) => {
                                let after = ledger.usage(&t);
                                for r in Resource::ALL {
                                    if r.of(&usage) > r.of(&before) {
                                        let limit = r.limit(&q).expect("all set");
                                        prop_assert!(r.of(&after) <= limit, "{r:?} {after:?}");
                                    }
                                }
                                prop_assert_eq!(ledger.holding(&t, &holder), Some(usage));
                            }
                            Err(e) => {
                                prop_assert_eq!(ledger.usage(&t), before_total);
                                prop_assert_eq!(ledger.holding(&t, &holder).unwrap_or_default(), before);
                                prop_assert!(e.requested > 0);
                                prop_assert!(e.used + e.requested > e.limit, "{e}");
                            }
                        }
                        prop_assert_eq!(ledger.usage(&tenant(1 - i)), other);
                    }
                    Op::Release { tenant: i, holder } => {
                        let t = tenant(i);
                        let before_total = ledger.usage(&t);
                        let held = ledger.holding(&t, &holder);
                        prop_assert_eq!(ledger.release(&t, &holder), held);
                        let freed = held.unwrap_or_default();
                        let after = ledger.usage(&t);
                        for r in Resource::ALL {
                            prop_assert_eq!(r.of(&after), r.of(&before_total) - r.of(&freed));
                        }
                        prop_assert_eq!(ledger.holding(&t, &holder), None);
                    }
                    Op::Restart => {
                        let holdings: Vec<_> = ledger
                            .holdings()
                            .map(|(t, h, u)| (t.clone(), h.clone(), u))
                            .collect();
                        let rebuilt = Ledger::from_holdings(holdings);
                        for i in 0..2 {
                            prop_assert_eq!(rebuilt.usage(&tenant(i)), ledger.usage(&tenant(i)));
                        }
                        ledger = rebuilt;
                    }
                }
                for i in 0..2 {
                    prop_assert_eq!(ledger.usage(&tenant(i)), sums(&ledger, &tenant(i)));
                }
            }
        }
    }

    #[test]
    fn shrinking_is_allowed_above_a_lowered_limit() {
        let mut q = quotas();
        let t = tenant(0);
        let mut ledger = Ledger::default();
        let big = Usage {
            checkpoint_bytes: 2500,
            ..Usage::default()
        };
        ledger
            .admit(&t, "p", &q, Holder::Checkpoint("a".into()), big)
            .expect("fits");
        q.max_checkpoint_bytes = Some(1000);
        let smaller = Usage {
            checkpoint_bytes: 2000,
            ..Usage::default()
        };
        ledger
            .admit(&t, "p", &q, Holder::Checkpoint("a".into()), smaller)
            .expect("shrinks");
        let err = ledger
            .admit(
                &t,
                "p",
                &q,
                Holder::Checkpoint("b".into()),
                Usage {
                    checkpoint_bytes: 1,
                    ..Usage::default()
                },
            )
            .expect_err("over the lowered limit");
        assert_eq!(err.quota, "max_checkpoint_bytes");
        assert_eq!((err.requested, err.used, err.limit), (1, 2000, 1000));
    }

    #[test]
    fn a_per_holding_limit_names_its_quota() {
        let q = quotas();
        let mut ledger = Ledger::default();
        let err = ledger
            .admit(
                &tenant(0),
                "small",
                &q,
                Holder::Upload("u".into()),
                Usage {
                    uploads: 1,
                    jars: 1,
                    jar_bytes: 601,
                    ..Usage::default()
                },
            )
            .expect_err("too big");
        assert_eq!(
            err.to_string(),
            "tenant `t0` exceeded quota `max_upload_bytes` of policy `small`: requested 601, used 0, limited 600"
        );
    }
}
