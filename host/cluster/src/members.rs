//! Cluster membership: the join tokens a TaskManager trades once for a
//! certificate, and the certificates issued with them. Join tokens expire
//! and can be revoked; certificates can be removed, and a TaskManager whose
//! certificate was removed is refused when it next registers (and the
//! connection it holds is closed).
//!
//! [`MemberBook`] holds the records and makes the decisions, with time
//! passed in; `JobManager` persists it (`DATA_DIR/tls/members.json`,
//! written atomically, owner-only) and applies its answers. Only hashes of
//! join secrets are kept, except for the first start's token, whose text
//! `DATA_DIR/tls/join-token` holds for the operator (as before).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The id under which the first start's join token is recorded.
pub(crate) const INITIAL_TOKEN: &str = "tm-initial";

/// A join token's record; never its secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct JoinRecord {
    /// `tm-` and 8 hex digits (`tm-initial` for the first start's).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Creation, ms since the epoch.
    pub created_ms: u64,
    /// Expiry, ms since the epoch; `None`: until revoked.
    pub expires_ms: Option<u64>,
    /// Revocation, ms since the epoch.
    pub revoked_ms: Option<u64>,
    /// Certificates issued with it.
    pub joins: u64,
}

/// A TaskManager certificate's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CertRecord {
    /// The first 16 hex digits of its fingerprint.
    pub id: String,
    /// SHA-256 of the certificate (DER), hex.
    pub fingerprint: String,
    /// The name the TaskManager gave when it joined.
    pub name: String,
    /// The join token it was issued with (`adopted` for a certificate
    /// issued before the book existed, recorded when it first registered).
    pub token: String,
    /// Issue (or adoption), ms since the epoch.
    pub issued_ms: u64,
    /// Removal, ms since the epoch.
    pub removed_ms: Option<u64>,
}

impl From<&CertRecord> for crate::api::flink::CertificateView {
    fn from(c: &CertRecord) -> Self {
        crate::api::flink::CertificateView {
            id: c.id.clone(),
            fingerprint: c.fingerprint.clone(),
            name: c.name.clone(),
            token: c.token.clone(),
            issued_ms: c.issued_ms,
            removed_ms: c.removed_ms,
        }
    }
}

impl From<&JoinRecord> for crate::api::TokenView {
    fn from(t: &JoinRecord) -> Self {
        crate::api::TokenView {
            id: t.id.clone(),
            kind: crate::api::TokenKind::Taskmanager,
            tenant: None,
            admin: false,
            created: t.created_ms,
            expires: t.expires_ms,
            revoked: t.revoked_ms,
            joins: Some(t.joins),
        }
    }
}

/// Why a join token was not accepted. The joiner learns only that it was
/// refused and which of these it was: a token is a secret either way.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinRefusal {
    /// No token of this cluster has this secret.
    #[error("the join token is not this cluster's")]
    Unknown,
    /// The token expired.
    #[error(
        "the join token `{0}` expired; ask an admin for a new one (`sluice token create --taskmanager`)"
    )]
    Expired(String),
    /// The token was revoked.
    #[error(
        "the join token `{0}` was revoked; ask an admin for a new one (`sluice token create --taskmanager`)"
    )]
    Revoked(String),
}

/// Join tokens and certificates.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MemberBook {
    /// Every join token made, newest last.
    pub tokens: Vec<JoinRecord>,
    /// Every certificate issued or adopted, newest last.
    pub certificates: Vec<CertRecord>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl MemberBook {
    /// Records a join token's secret under `id`.
    pub fn add_token(
        &mut self,
        id: &str,
        secret: &[u8],
        now: u64,
        ttl_ms: Option<u64>,
    ) -> JoinRecord {
        let record = JoinRecord {
            id: id.to_owned(),
            secret_sha256: sha256_hex(secret),
            created_ms: now,
            expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
            revoked_ms: None,
            joins: 0,
        };
        self.tokens.push(record.clone());
        record
    }

    /// The token a joiner's secret belongs to, if it may still be used.
    /// Every record is compared, in constant time each.
    pub fn check_join(&self, secret: &[u8], now: u64) -> Result<&JoinRecord, JoinRefusal> {
        let hash = sha256_hex(secret);
        let found = self.tokens.iter().fold(None, |found, t| {
            if bool::from(t.secret_sha256.as_bytes().ct_eq(hash.as_bytes())) {
                Some(t)
            } else {
                found
            }
        });
        let t = found.ok_or(JoinRefusal::Unknown)?;
        if t.revoked_ms.is_some() {
            return Err(JoinRefusal::Revoked(t.id.clone()));
        }
        if t.expires_ms.is_some_and(|e| now >= e) {
            return Err(JoinRefusal::Expired(t.id.clone()));
        }
        Ok(t)
    }

    /// Records a certificate issued with token `token`.
    pub fn issued(&mut self, fingerprint: &[u8], name: &str, token: &str, now: u64) -> CertRecord {
        if let Some(t) = self.tokens.iter_mut().find(|t| t.id == token) {
            t.joins += 1;
        }
        let fingerprint = hex::encode(fingerprint);
        let record = CertRecord {
            id: fingerprint[..16].to_owned(),
            fingerprint,
            name: name.to_owned(),
            token: token.to_owned(),
            issued_ms: now,
            removed_ms: None,
        };
        self.certificates.push(record.clone());
        record
    }

    /// May a TaskManager presenting this (CA-signed) certificate register?
    /// Its record, or a refusal naming the removed certificate. A
    /// certificate the book does not know (issued before it existed) is
    /// adopted: `Ok` with `true` says the book changed.
    pub fn admit(&mut self, fingerprint: &[u8], name: &str, now: u64) -> Result<bool, String> {
        let hex = hex::encode(fingerprint);
        match self.certificates.iter().find(|c| c.fingerprint == hex) {
            Some(c) if c.removed_ms.is_some() => Err(format!(
                "this TaskManager's certificate `{}` was removed from the cluster by an admin; \
                 delete the TaskManager's data directory's tls/ and join again with a new token",
                c.id
            )),
            Some(_) => Ok(false),
            None => {
                self.issued(fingerprint, name, "adopted", now);
                Ok(true)
            }
        }
    }

    /// Revokes a join token; its record, or `None` if there is no such id.
    pub fn revoke_token(&mut self, id: &str, now: u64) -> Option<JoinRecord> {
        let t = self.tokens.iter_mut().find(|t| t.id == id)?;
        t.revoked_ms.get_or_insert(now);
        Some(t.clone())
    }

    /// Removes a certificate; its record, or `None` if there is no such id.
    pub fn remove_certificate(&mut self, id: &str, now: u64) -> Option<CertRecord> {
        let c = self.certificates.iter_mut().find(|c| c.id == id)?;
        c.removed_ms.get_or_insert(now);
        Some(c.clone())
    }

    /// The fingerprints (hex) of every removed certificate: TaskManagers
    /// refuse peers that present one.
    pub fn removed_fingerprints(&self) -> Vec<String> {
        self.certificates
            .iter()
            .filter(|c| c.removed_ms.is_some())
            .map(|c| c.fingerprint.clone())
            .collect()
    }

    /// The certificate record of a fingerprint.
    pub fn certificate(&self, fingerprint: &[u8]) -> Option<&CertRecord> {
        let hex = hex::encode(fingerprint);
        self.certificates.iter().find(|c| c.fingerprint == hex)
    }

    /// Reads a book; a missing file is an empty book.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; restore it from a backup (deleting it forgets which \
                     certificates were removed)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the book atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let tmp = path.with_extension("json.tmp");
        sluice_transport::write_private(&tmp, &serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_expire_and_can_be_revoked() {
        let mut book = MemberBook::default();
        book.add_token("tm-1", b"one", 1_000, Some(500));
        book.add_token("tm-2", b"two", 1_000, None);
        assert_eq!(
            book.check_join(b"one", 1_499).map(|t| t.id.as_str()),
            Ok("tm-1")
        );
        assert_eq!(
            book.check_join(b"one", 1_500),
            Err(JoinRefusal::Expired("tm-1".into()))
        );
        assert_eq!(book.check_join(b"three", 0), Err(JoinRefusal::Unknown));
        assert!(book.check_join(b"two", u64::MAX).is_ok());
        let revoked = book.revoke_token("tm-2", 2_000).expect("known");
        assert_eq!(revoked.revoked_ms, Some(2_000));
        // A second revocation keeps the first time.
        book.revoke_token("tm-2", 3_000);
        assert_eq!(book.tokens[1].revoked_ms, Some(2_000));
        assert_eq!(
            book.check_join(b"two", 2_001),
            Err(JoinRefusal::Revoked("tm-2".into()))
        );
        assert!(book.revoke_token("tm-9", 0).is_none());
        // Only hashes are kept.
        let text = serde_json::to_string(&book).expect("json");
        assert!(!text.contains("\"one\"") && text.contains(&sha256_hex(b"one")));
    }

    #[test]
    fn a_removed_certificate_is_refused_and_unknown_ones_are_adopted() {
        let mut book = MemberBook::default();
        book.add_token("tm-1", b"one", 0, None);
        let fp = [7u8; 32];
        let c = book.issued(&fp, "tm a", "tm-1", 10);
        assert_eq!(c.id, "0707070707070707");
        assert_eq!(book.tokens[0].joins, 1);
        assert_eq!(book.admit(&fp, "tm a", 20), Ok(false));
        let other = [9u8; 32];
        assert_eq!(book.admit(&other, "tm b", 30), Ok(true));
        assert_eq!(
            book.certificate(&other).map(|c| c.token.as_str()),
            Some("adopted")
        );
        book.remove_certificate(&c.id, 40).expect("known");
        let refused = book.admit(&fp, "tm a", 50).expect_err("removed");
        assert!(
            refused.contains("0707070707070707") && refused.contains("removed"),
            "{refused}"
        );
        assert!(book.remove_certificate("nope", 0).is_none());
    }

    #[test]
    fn the_book_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("members.json");
        assert_eq!(
            MemberBook::load(&path).expect("empty"),
            MemberBook::default()
        );
        let mut book = MemberBook::default();
        book.add_token("tm-1", b"one", 0, Some(5));
        book.issued(&[1; 32], "a", "tm-1", 1);
        book.save(&path).expect("save");
        assert_eq!(MemberBook::load(&path).expect("load"), book);
        std::fs::write(&path, b"{").expect("corrupt");
        let e = MemberBook::load(&path).expect_err("corrupt");
        assert!(e.to_string().contains("is corrupt"), "{e}");
    }
}
