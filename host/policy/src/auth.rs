//! Who is asking: API tokens, the principals they stand for, and what a
//! principal may see.
//!
//! A token is `sluice_<id>_<secret>`: the id (16 hex digits) names its record
//! so it can be listed and revoked without the secret; the secret (256 random
//! bits, 64 hex digits) is shown once, when the token is created. Only the
//! SHA-256 of the whole token is stored, and a presented token is compared
//! with it in constant time. Time is passed in (milliseconds since the Unix
//! epoch), so expiry is testable without a clock.
//!
//! ```
//! use sluice_policy::auth::{TokenStore, AuthError};
//! use sluice_policy::TenantId;
//!
//! let mut store = TokenStore::default();
//! let acme = TenantId::new("acme").unwrap();
//! let issued = store.issue(acme.clone(), false, 1_000, None, [7; 32], [9; 8]);
//! let who = store.authenticate(&issued.token, 2_000).unwrap();
//! assert_eq!(who.tenant, acme);
//! store.revoke(&issued.record.id, 3_000).unwrap();
//! assert_eq!(store.authenticate(&issued.token, 4_000), Err(AuthError::Revoked));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::TenantId;

const PREFIX: &str = "sluice_";

/// A stored token: everything but its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id (16 hex digits), part of the token text.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// Whether it may act on every tenant and manage the cluster.
    pub admin: bool,
    /// SHA-256 of the whole token text, hex.
    pub hash: String,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
    /// When it stops working, if ever.
    pub expires_ms: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
}

/// A token just created: its text, to show once, and its record, to store.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The whole token, as clients send it.
    pub token: String,
    /// What is stored.
    pub record: TokenRecord,
}

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The tenant whose objects it sees and owns.
    pub tenant: TenantId,
    /// Sees every tenant's objects and manages the cluster.
    pub admin: bool,
    /// The id of the token it presented; `None` when authentication is off.
    pub token_id: Option<String>,
}

impl Principal {
    /// May this principal see (and act on) what `owner` owns? Anything else
    /// must look to it exactly like something that does not exist.
    pub fn sees(&self, owner: &TenantId) -> bool {
        self.admin || &self.tenant == owner
    }
}

/// Why a presented token is not accepted. Clients get one answer for all of
/// these (401); the reason is for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no token")]
    Missing,
    /// Not of the form `sluice_<id>_<secret>`.
    #[error("malformed token")]
    Malformed,
    /// No token has this id, or its secret is wrong.
    #[error("unknown token")]
    Unknown,
    /// Past its expiry.
    #[error("expired token")]
    Expired,
    /// Revoked.
    #[error("revoked token")]
    Revoked,
}

/// Every token of a cluster, by id. Serialised as the JobManager's token
/// file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenStore {
    /// Records by id.
    pub tokens: BTreeMap<String, TokenRecord>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl TokenStore {
    /// Creates a token for `tenant` from random bytes the caller draws
    /// (`secret` for the secret, `id` for the public id).
    pub fn issue(
        &mut self,
        tenant: TenantId,
        admin: bool,
        now_ms: u64,
        ttl_ms: Option<u64>,
        secret: [u8; 32],
        id: [u8; 8],
    ) -> Issued {
        let id = hex::encode(id);
        let token = format!("{PREFIX}{id}_{}", hex::encode(secret));
        let record = TokenRecord {
            id: id.clone(),
            tenant,
            admin,
            hash: hex::encode(digest(&token)),
            created_ms: now_ms,
            expires_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
            revoked_ms: None,
        };
        self.tokens.insert(id, record.clone());
        Issued { token, record }
    }

    /// The principal `presented` stands for at `now_ms`.
    pub fn authenticate(&self, presented: &str, now_ms: u64) -> Result<Principal, AuthError> {
        let rest = presented.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
        if !is_hex(id, 16) || !is_hex(secret, 64) {
            return Err(AuthError::Malformed);
        }
        let presented_hash = digest(presented);
        // An unknown id still costs one comparison, so timing does not tell
        // a known id with a wrong secret from an unknown one.
        let unknown = [0u8; 32];
        let record = self.tokens.get(id);
        let stored = record
            .and_then(|r| hex::decode(&r.hash).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .unwrap_or(unknown);
        let matches: bool = presented_hash.ct_eq(&stored).into();
        let record = match record {
            Some(r) if matches => r,
            _ => return Err(AuthError::Unknown),
        };
        if record.revoked_ms.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_ms.is_some_and(|e| now_ms >= e) {
            return Err(AuthError::Expired);
        }
        Ok(Principal {
            tenant: record.tenant.clone(),
            admin: record.admin,
            token_id: Some(record.id.clone()),
        })
    }

    /// Revokes token `id`; revoking twice keeps the first time.
    pub fn revoke(&mut self, id: &str, now_ms: u64) -> Result<&TokenRecord, AuthError> {
        let record = self.tokens.get_mut(id).ok_or(AuthError::Unknown)?;
        record.revoked_ms.get_or_insert(now_ms);
        Ok(record)
    }

    /// Revokes every token of `tenant` (when the tenant is deleted).
    pub fn revoke_tenant(&mut self, tenant: &TenantId, now_ms: u64) -> usize {
        let mut n = 0;
        for record in self.tokens.values_mut() {
            if &record.tenant == tenant && record.revoked_ms.is_none() {
                record.revoked_ms = Some(now_ms);
                n += 1;
            }
        }
        n
    }
}

/// Slows down a burst of failed authentications from one address: each
/// address has a bucket of `burst` failures that refills at one per
/// `refill_ms`; a failure with the bucket empty is throttled (429 with a
/// retry time) instead of answered. Successes never consume. Only
/// addresses with a partly empty bucket are remembered, at most
/// `max_addresses` of them (the fullest are forgotten first).
#[derive(Clone, Debug)]
pub struct Throttle<A> {
    burst: u64,
    refill_ms: u64,
    max_addresses: usize,
    /// Per address: failures held in the bucket (scaled by `refill_ms`),
    /// as of a time.
    spent: std::collections::HashMap<A, (u64, u64)>,
}

impl<A: std::hash::Hash + Eq + Clone> Throttle<A> {
    /// A throttle allowing `burst` failures at once, then one per `refill_ms`.
    pub fn new(burst: u64, refill_ms: u64, max_addresses: usize) -> Self {
        Throttle {
            burst: burst.max(1),
            refill_ms: refill_ms.max(1),
            max_addresses: max_addresses.max(1),
            spent: std::collections::HashMap::new(),
        }
    }

    /// Records a failed attempt from `addr` at `now_ms`: `Ok` if it may be
    /// answered, or `Err(ms)` to wait before the next one is.
    pub fn failure(&mut self, addr: &A, now_ms: u64) -> Result<(), u64> {
        let cap = self.burst * self.refill_ms;
        let (spent, _) = self.refilled(addr, now_ms);
        if spent + self.refill_ms > cap {
            let wait = spent + self.refill_ms - cap;
            self.spent.insert(addr.clone(), (spent, now_ms));
            return Err(wait);
        }
        if !self.spent.contains_key(addr) && self.spent.len() >= self.max_addresses {
            self.forget_fullest(now_ms);
        }
        self.spent
            .insert(addr.clone(), (spent + self.refill_ms, now_ms));
        Ok(())
    }

    /// Addresses remembered, for tests and metrics.
    pub fn tracked(&self) -> usize {
        self.spent.len()
    }

    fn refilled(&self, addr: &A, now_ms: u64) -> (u64, u64) {
        match self.spent.get(addr) {
            Some(&(spent, at)) => (spent.saturating_sub(now_ms.saturating_sub(at)), at),
            None => (0, now_ms),
        }
    }

    fn forget_fullest(&mut self, now_ms: u64) {
        self.spent
            .retain(|_, (spent, at)| spent.saturating_sub(now_ms.saturating_sub(*at)) > 0);
        if self.spent.len() >= self.max_addresses {
            let least = self
                .spent
                .iter()
                .min_by_key(|(_, (spent, at))| spent.saturating_sub(now_ms.saturating_sub(*at)))
                .map(|(a, _)| a.clone());
            if let Some(a) = least {
                self.spent.remove(&a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_is_throttled_then_refills() {
        let mut t = Throttle::new(3, 1000, 100);
        for _ in 0..3 {
            assert_eq!(t.failure(&"a", 0), Ok(()));
        }
        assert_eq!(t.failure(&"a", 0), Err(1000));
        assert_eq!(t.failure(&"a", 400), Err(600));
        assert_eq!(
            t.failure(&"b", 400),
            Ok(()),
            "another address is not affected"
        );
        assert_eq!(t.failure(&"a", 1000), Ok(()), "one failure refilled");
        assert_eq!(t.failure(&"a", 1000), Err(1000));
        assert_eq!(t.failure(&"a", 10_000), Ok(()));
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_addresses() {
        let mut t = Throttle::new(2, 1000, 10);
        for i in 0..1000u32 {
            let _ = t.failure(&i, u64::from(i));
            assert!(t.tracked() <= 10);
        }
        assert_eq!(t.failure(&999, 999), Ok(()));
        assert_eq!(t.failure(&999, 999), Err(1000));
    }

    fn acme() -> TenantId {
        TenantId::new("acme").expect("valid")
    }

    #[test]
    fn an_issued_token_authenticates_as_its_tenant_and_is_stored_only_as_a_hash() {
        let mut store = TokenStore::default();
        let issued = store.issue(acme(), true, 10, None, [1; 32], [2; 8]);
        let who = store.authenticate(&issued.token, 20).expect("valid");
        assert_eq!(who.tenant, acme());
        assert!(who.admin);
        assert_eq!(who.token_id.as_deref(), Some("0202020202020202"));
        let stored = serde_json::to_string(&store).expect("json");
        let secret = issued.token.rsplit('_').next().expect("secret");
        assert!(!stored.contains(secret), "{stored}");
        assert!(stored.contains(&issued.record.hash));
    }

    #[test]
    fn wrong_malformed_expired_and_revoked_tokens_are_refused() {
        let mut store = TokenStore::default();
        let issued = store.issue(acme(), false, 0, Some(100), [1; 32], [2; 8]);
        let mut wrong = issued.token.clone();
        wrong.pop();
        wrong.push(if issued.token.ends_with('0') {
            '1'
        } else {
            '0'
        });
        assert_eq!(store.authenticate(&wrong, 1), Err(AuthError::Unknown));
        let other_id = format!("sluice_{}_{}", "f".repeat(16), "0".repeat(64));
        assert_eq!(store.authenticate(&other_id, 1), Err(AuthError::Unknown));
        for bad in ["", "sluice_", "Bearer x", &issued.token.to_uppercase()] {
            assert_eq!(
                store.authenticate(bad, 1),
                Err(AuthError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            store.authenticate(&issued.token, 100),
            Err(AuthError::Expired)
        );
        assert!(store.authenticate(&issued.token, 99).is_ok());
        store.revoke(&issued.record.id, 50).expect("known");
        store.revoke(&issued.record.id, 60).expect("known");
        assert_eq!(store.tokens[&issued.record.id].revoked_ms, Some(50));
        assert_eq!(
            store.authenticate(&issued.token, 51),
            Err(AuthError::Revoked)
        );
        assert_eq!(store.revoke("nope", 1).err(), Some(AuthError::Unknown));
    }

    #[test]
    fn revoking_a_tenant_revokes_only_its_tokens() {
        let mut store = TokenStore::default();
        let a = store.issue(acme(), false, 0, None, [1; 32], [1; 8]);
        let b = store.issue(
            TenantId::new("beta").expect("valid"),
            false,
            0,
            None,
            [2; 32],
            [2; 8],
        );
        assert_eq!(store.revoke_tenant(&acme(), 5), 1);
        assert_eq!(store.authenticate(&a.token, 6), Err(AuthError::Revoked));
        assert!(store.authenticate(&b.token, 6).is_ok());
    }

    #[test]
    fn a_principal_sees_its_own_tenant_and_an_admin_sees_all() {
        let beta = TenantId::new("beta").expect("valid");
        let user = Principal {
            tenant: acme(),
            admin: false,
            token_id: None,
        };
        assert!(user.sees(&acme()));
        assert!(!user.sees(&beta));
        let admin = Principal {
            admin: true,
            ..user
        };
        assert!(admin.sees(&beta));
    }
}
