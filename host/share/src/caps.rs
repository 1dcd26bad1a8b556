//! Caps on what a tenant (or one job's slots) holds in a process: live
//! component instances and guest linear memory. An instance is claimed
//! from every account it counts against before it is created; its memory
//! is added as it grows; both are given back when the claim is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A claim over a cap, naming the cap.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{holder} reached {cap}: {limit} {unit} on this process, {used} in use, {requested} more requested"
)]
pub struct CapExceeded {
    /// Who holds the account, e.g. "tenant `acme`".
    pub holder: String,
    /// The cap's name, e.g. "`max_instances_per_taskmanager` of policy `small`".
    pub cap: String,
    /// What is counted.
    pub unit: &'static str,
    /// The cap.
    pub limit: u64,
    /// In use before the request.
    pub used: u64,
    /// Requested.
    pub requested: u64,
}

/// Limits of one account; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Live instances, with the cap's name for errors.
    pub instances: Option<(u64, String)>,
    /// Bytes of guest linear memory, with the cap's name for errors.
    pub memory_bytes: Option<(u64, String)>,
}

/// What one holder may have and has: cheap to clone, shared by every
/// instance counted against it.
#[derive(Clone, Debug)]
pub struct Account {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    holder: String,
    caps: Mutex<Caps>,
    instances: AtomicU64,
    memory: AtomicU64,
}

impl Account {
    /// An account of `holder` (as errors name it) with `caps`.
    pub fn new(holder: impl Into<String>, caps: Caps) -> Self {
        Account {
            inner: Arc::new(Inner {
                holder: holder.into(),
                caps: Mutex::new(caps),
                instances: AtomicU64::new(0),
                memory: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the caps (what is held stays held).
    pub fn set_caps(&self, caps: Caps) {
        *self
            .inner
            .caps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = caps;
    }

    /// The current caps.
    pub fn caps(&self) -> Caps {
        self.inner
            .caps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Live instances counted against this account.
    pub fn instances(&self) -> u64 {
        self.inner.instances.load(Ordering::Relaxed)
    }

    /// Guest memory bytes counted against this account.
    pub fn memory_bytes(&self) -> u64 {
        self.inner.memory.load(Ordering::Relaxed)
    }

    /// Adds `n` to `counter` unless that passes `limit`.
    fn take(
        &self,
        counter: &AtomicU64,
        cap: Option<&(u64, String)>,
        unit: &'static str,
        n: u64,
    ) -> Result<(), CapExceeded> {
        let mut used = counter.load(Ordering::Relaxed);
        loop {
            if let Some((limit, name)) = cap
                && used.saturating_add(n) > *limit
            {
                return Err(CapExceeded {
                    holder: self.inner.holder.clone(),
                    cap: name.clone(),
                    unit,
                    limit: *limit,
                    used,
                    requested: n,
                });
            }
            match counter.compare_exchange_weak(
                used,
                used.saturating_add(n),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }
}

/// One live instance counted against some accounts, and the memory it
/// grew to. Dropping it gives both back.
#[derive(Debug, Default)]
pub struct Claim {
    accounts: Vec<Account>,
    memory: u64,
}

impl Claim {
    /// Claims one instance from every account, or none if any is full.
    pub fn instance(accounts: &[Account]) -> Result<Claim, CapExceeded> {
        let mut claim = Claim::default();
        for a in accounts {
            let caps = a.caps();
            a.take(&a.inner.instances, caps.instances.as_ref(), "instances", 1)?;
            claim.accounts.push(a.clone());
        }
        Ok(claim)
    }

    /// Counts `bytes` more guest memory against every account, or none
    /// if any would pass its cap.
    pub fn grow(&mut self, bytes: u64) -> Result<(), CapExceeded> {
        for (i, a) in self.accounts.iter().enumerate() {
            let caps = a.caps();
            if let Err(e) = a.take(&a.inner.memory, caps.memory_bytes.as_ref(), "bytes", bytes) {
                for done in &self.accounts[..i] {
                    done.inner.memory.fetch_sub(bytes, Ordering::AcqRel);
                }
                return Err(e);
            }
        }
        self.memory = self.memory.saturating_add(bytes);
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        for a in &self.accounts {
            a.inner.instances.fetch_sub(1, Ordering::AcqRel);
            a.inner.memory.fetch_sub(self.memory, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(instances: u64, memory: u64) -> Account {
        Account::new(
            "tenant `t`",
            Caps {
                instances: Some((instances, "`max_instances_per_taskmanager`".into())),
                memory_bytes: Some((memory, "`max_memory_mib_per_taskmanager`".into())),
            },
        )
    }

    #[test]
    fn instances_are_refused_past_the_cap_and_given_back_on_drop() {
        let tenant = capped(2, 100);
        let job = Account::new("the job", Caps::default());
        let a = Claim::instance(&[tenant.clone(), job.clone()]).expect("first");
        let _b = Claim::instance(&[tenant.clone(), job.clone()]).expect("second");
        let refused = Claim::instance(&[tenant.clone(), job.clone()]).expect_err("third");
        assert_eq!(
            refused.to_string(),
            "tenant `t` reached `max_instances_per_taskmanager`: 2 instances on this process, 2 in use, 1 more requested"
        );
        assert_eq!(job.instances(), 2, "a refused claim takes nothing");
        drop(a);
        assert_eq!(tenant.instances(), 1);
        Claim::instance(&[tenant, job]).expect("room again");
    }

    #[test]
    fn memory_is_counted_across_instances_and_refused_whole() {
        let tenant = capped(10, 100);
        let job = Account::new("the job", Caps::default());
        let mut a = Claim::instance(&[job.clone(), tenant.clone()]).expect("a");
        let mut b = Claim::instance(&[job.clone(), tenant.clone()]).expect("b");
        a.grow(60).expect("fits");
        let e = b.grow(50).expect_err("over");
        assert_eq!((e.used, e.requested, e.limit), (60, 50, 100));
        assert_eq!(
            job.memory_bytes(),
            60,
            "the refused growth is not left counted"
        );
        b.grow(40).expect("fits");
        drop(a);
        assert_eq!(tenant.memory_bytes(), 40);
        drop(b);
        assert_eq!((tenant.memory_bytes(), tenant.instances()), (0, 0));
    }
}
