//! Who may use the JobManager, and under which policy: the tenant registry
//! (`tenants/` and `policies/` files, reloadable), the API tokens, the
//! authentication of each REST request and the audit log.
//!
//! Identity is established here and only here: [`Tenancy::authenticate`]
//! turns a request's `Authorization: Bearer` header into a [`Principal`]
//! (or a refusal), and the REST layer hands that principal to everything
//! else. The decisions themselves (token checks, throttling, quota sums)
//! are the sans-IO ones of `sluice_policy`; this module owns their files
//! and their locks.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

use anyhow::Context;
use serde::Serialize;
use sluice_policy::auth::{AuthError, Principal, Throttle, TokenRecord, TokenStore};
use sluice_policy::{Policy, PolicyError, Registry, Tenant, TenantId};

use crate::api::{TokenKind, TokenView};

/// The tenant every open (`--auth none`) request acts for, and the one the
/// first start creates.
pub const DEFAULT_TENANT: &str = "default";

/// Failed authentications answered per address before throttling, and the
/// refill: one more every second.
const FAILURE_BURST: u64 = 20;
const FAILURE_REFILL_MS: u64 = 1000;

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request needs a token.
    Token,
    /// No authentication: every request acts as an admin of `default`
    /// (for a laptop; the JobManager warns at start).
    None,
}

/// Where the tenant registry lives and how requests authenticate.
#[derive(Clone, Debug)]
pub struct TenancyConfig {
    /// Authentication.
    pub auth: AuthMode,
    /// `*.toml` tenant files.
    pub tenants_dir: PathBuf,
    /// `*.toml` policy files.
    pub policies_dir: PathBuf,
}

/// A request that did not authenticate.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// 401, with why (for the audit log, not the client).
    Unauthenticated(AuthError),
    /// 429: too many failures from this address; retry after this many ms.
    Throttled(u64),
}

/// What the JobManager knows about tenants and tokens.
pub(crate) struct Tenancy {
    auth: AuthMode,
    config: TenancyConfig,
    registry: RwLock<Registry>,
    tokens: Mutex<TokenStore>,
    tokens_path: PathBuf,
    throttle: Mutex<Throttle<IpAddr>>,
    audit: Mutex<std::fs::File>,
}

/// One line of the audit log.
#[derive(Serialize)]
pub(crate) struct AuditLine<'a> {
    pub time: String,
    pub tenant: &'a str,
    pub admin: bool,
    pub source: String,
    pub action: &'a str,
    pub object: &'a str,
    pub result: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(r: &TokenRecord) -> Self {
        TokenView {
            id: r.id.clone(),
            kind: TokenKind::Api,
            tenant: Some(r.tenant.to_string()),
            admin: r.admin,
            created: r.created_ms,
            expires: r.expires_ms,
            revoked: r.revoked_ms,
            joins: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` to `path` atomically, readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    sluice_transport::write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn has_toml(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
    })
}

impl Tenancy {
    /// Opens the registry and tokens of `data_dir`. The first start creates
    /// the `standard` and `small` policies and the tenant `default` where
    /// the directories hold none, and an admin token; the admin token's
    /// text is returned that once (it is also written to
    /// `DATA_DIR/credentials`, readable by its owner only).
    /// `now` (ms since the epoch) dates the admin token it may create.
    pub fn open(
        data_dir: &Path,
        config: TenancyConfig,
        now: u64,
    ) -> anyhow::Result<(Self, Option<String>)> {
        for dir in [&config.policies_dir, &config.tenants_dir] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if !has_toml(&config.policies_dir) {
            for (name, text) in [
                ("standard.toml", sluice_policy::STANDARD_POLICY),
                ("small.toml", sluice_policy::SMALL_POLICY),
            ] {
                let path = config.policies_dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        if !has_toml(&config.tenants_dir) {
            let path = config.tenants_dir.join(format!("{DEFAULT_TENANT}.toml"));
            let text = format!(
                "# Created at the JobManager's first start: the tenant of `--auth none`\n\
                 # and of the first admin token.\nname = \"{DEFAULT_TENANT}\"\n\
                 display_name = \"Default tenant\"\npolicy = \"standard\"\n"
            );
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let registry = Registry::load(&config.policies_dir, &config.tenants_dir)?;
        let tokens_path = data_dir.join("tokens.json");
        let (tokens, admin) = if tokens_path.exists() {
            let bytes = std::fs::read(&tokens_path)
                .with_context(|| format!("cannot read {}", tokens_path.display()))?;
            let store: TokenStore = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; restore it from a backup, or delete it to create a new admin token",
                    tokens_path.display()
                )
            })?;
            (store, None)
        } else {
            let tenant = registry
                .tenants
                .keys()
                .find(|t| t.as_str() == DEFAULT_TENANT)
                .or_else(|| registry.tenants.keys().next())
                .cloned()
                .context("no tenant is defined: add one under the tenants directory")?;
            let mut store = TokenStore::default();
            let issued = store.issue(tenant, true, now, None, rand::random(), rand::random());
            write_secret(&tokens_path, &serde_json::to_vec_pretty(&store)?)?;
            let credentials = data_dir.join("credentials");
            write_secret(
                &credentials,
                format!(
                    "# The admin token this JobManager made at its first start.\ntoken = \"{}\"\n",
                    issued.token
                )
                .as_bytes(),
            )?;
            (store, Some(issued.token))
        };
        let audit_path = data_dir.join("audit.log");
        let audit = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&audit_path)
            .with_context(|| format!("cannot open {}", audit_path.display()))?;
        Ok((
            Tenancy {
                auth: config.auth,
                config,
                registry: RwLock::new(registry),
                tokens: Mutex::new(tokens),
                tokens_path,
                throttle: Mutex::new(Throttle::new(FAILURE_BURST, FAILURE_REFILL_MS, 10_000)),
                audit: Mutex::new(audit),
            },
            admin,
        ))
    }

    /// Whether requests need a token.
    pub fn auth(&self) -> AuthMode {
        self.auth
    }

    /// The principal a request with this `Authorization` header from `peer`
    /// acts for.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<Principal, Refusal> {
        if self.auth == AuthMode::None {
            return Ok(Principal {
                tenant: TenantId::new(DEFAULT_TENANT).expect("invariant: a valid tenant name"),
                admin: true,
                token_id: None,
            });
        }
        let result = match authorization {
            None => Err(AuthError::Missing),
            Some(h) => match h.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    lock(&self.tokens).authenticate(token.trim(), now_ms)
                }
                _ => Err(AuthError::Malformed),
            },
        };
        let error = match result {
            Ok(p) if self.tenant(&p.tenant).is_some() => return Ok(p),
            // The tenant's file was removed: its tokens stop working.
            Ok(_) => AuthError::Unknown,
            Err(e) => e,
        };
        match lock(&self.throttle).failure(&peer, now_ms) {
            Ok(()) => Err(Refusal::Unauthenticated(error)),
            Err(wait) => Err(Refusal::Throttled(wait)),
        }
    }

    /// A tenant and its policy as currently configured.
    pub fn tenant(&self, id: &TenantId) -> Option<(Tenant, Policy)> {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry
            .policy_of(id.as_str())
            .map(|(t, p)| (t.clone(), p.clone()))
    }

    /// Every tenant with its policy's name.
    pub fn tenants(&self) -> Vec<Tenant> {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.tenants.values().cloned().collect()
    }

    /// Reads the tenant and policy files again; on any error the previous
    /// configuration stays in force and the error names the file and line.
    pub fn reload(&self) -> Result<(usize, usize), PolicyError> {
        let fresh = Registry::load(&self.config.policies_dir, &self.config.tenants_dir)?;
        let counts = (fresh.tenants.len(), fresh.policies.len());
        *self
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(counts)
    }

    /// Creates a tenant file and loads it.
    pub fn create_tenant(
        &self,
        name: &TenantId,
        policy: &str,
        display_name: &str,
        file_roots: &[PathBuf],
    ) -> Result<(), TenantChangeError> {
        {
            let registry = self
                .registry
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if registry.tenants.contains_key(name.as_str()) {
                return Err(TenantChangeError::Exists(name.to_string()));
            }
            if !registry.policies.contains_key(policy) {
                return Err(TenantChangeError::UnknownPolicy {
                    policy: policy.to_owned(),
                    known: registry
                        .policies
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let tenant = Tenant {
            name: name.clone(),
            display_name: display_name.to_owned(),
            policy: policy.to_owned(),
            file_roots: file_roots.to_vec(),
        };
        tenant.check_roots().map_err(TenantChangeError::BadRoots)?;
        let text = toml::to_string(&tenant).map_err(|e| TenantChangeError::Io(e.to_string()))?;
        let path = self.config.tenants_dir.join(format!("{name}.toml"));
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| TenantChangeError::Io(format!("cannot write {}: {e}", path.display())))?;
        self.reload()
            .map(|_| ())
            .map_err(|e| TenantChangeError::Io(e.to_string()))
    }

    /// Creates a token; its text, shown once.
    pub fn create_token(
        &self,
        tenant: &TenantId,
        admin: bool,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(String, TokenView), TenantChangeError> {
        if self.tenant(tenant).is_none() {
            return Err(TenantChangeError::UnknownTenant(tenant.to_string()));
        }
        let mut store = lock(&self.tokens);
        let mut next = store.clone();
        let issued = next.issue(
            tenant.clone(),
            admin,
            now_ms,
            ttl_ms,
            rand::random(),
            rand::random(),
        );
        self.save_tokens(&next)?;
        *store = next;
        Ok((issued.token, TokenView::from(&issued.record)))
    }

    /// Revokes a token by id.
    pub fn revoke_token(&self, id: &str, now_ms: u64) -> Result<TokenView, TenantChangeError> {
        let mut store = lock(&self.tokens);
        let mut next = store.clone();
        let view = next
            .revoke(id, now_ms)
            .map(TokenView::from)
            .map_err(|_| TenantChangeError::UnknownToken(id.to_owned()))?;
        self.save_tokens(&next)?;
        *store = next;
        Ok(view)
    }

    /// Every token, without secrets.
    pub fn token_views(&self) -> Vec<TokenView> {
        lock(&self.tokens)
            .tokens
            .values()
            .map(TokenView::from)
            .collect()
    }

    fn save_tokens(&self, store: &TokenStore) -> Result<(), TenantChangeError> {
        let bytes =
            serde_json::to_vec_pretty(store).map_err(|e| TenantChangeError::Io(e.to_string()))?;
        write_secret(&self.tokens_path, &bytes)
            .map_err(|e| TenantChangeError::Io(crate::error_chain(&e)))
    }

    /// Appends one line to the audit log. Losing a line is logged, never
    /// fatal to the request.
    pub fn audit(&self, line: &AuditLine<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        if let Err(e) = lock(&self.audit).write_all(text.as_bytes()) {
            tracing::error!("cannot append to the audit log: {e}");
        }
    }
}

/// A refused change to tenants or tokens.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TenantChangeError {
    /// The tenant exists already (409).
    #[error("tenant `{0}` exists already")]
    Exists(String),
    /// No such policy (400).
    #[error("there is no policy `{policy}` (defined: {known})")]
    UnknownPolicy {
        /// Asked for.
        policy: String,
        /// Defined.
        known: String,
    },
    /// A file root that cannot confine anything (400).
    #[error("{0}")]
    BadRoots(String),
    /// No such tenant (404).
    #[error("there is no tenant `{0}`")]
    UnknownTenant(String),
    /// No such token (404).
    #[error("there is no token `{0}`")]
    UnknownToken(String),
    /// A file could not be written (500).
    #[error("{0}")]
    Io(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, auth: AuthMode) -> (Tenancy, Option<String>) {
        Tenancy::open(
            dir,
            TenancyConfig {
                auth,
                tenants_dir: dir.join("tenants"),
                policies_dir: dir.join("policies"),
            },
            1_000,
        )
        .expect("open")
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_first_start_creates_a_default_tenant_and_an_admin_token_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, admin) = open(dir.path(), AuthMode::Token);
        let admin = admin.expect("a new admin token");
        let credentials = std::fs::read_to_string(dir.path().join("credentials")).expect("file");
        assert!(credentials.contains(&admin));
        let who = t
            .authenticate(Some(&format!("Bearer {admin}")), PEER, 1)
            .expect("admin");
        assert!(who.admin);
        assert_eq!(who.tenant.as_str(), DEFAULT_TENANT);
        let tokens = std::fs::read_to_string(dir.path().join("tokens.json")).expect("file");
        assert!(!tokens.contains(&admin), "only the hash is stored");
        drop(t);
        let (t, again) = open(dir.path(), AuthMode::Token);
        assert!(again.is_none(), "a restart makes no new admin token");
        assert!(
            t.authenticate(Some(&format!("Bearer {admin}")), PEER, 2)
                .is_ok()
        );
    }

    #[test]
    fn a_reload_with_a_broken_file_keeps_the_previous_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, _) = open(dir.path(), AuthMode::Token);
        let acme = TenantId::new("acme").expect("valid");
        t.create_tenant(&acme, "small", "ACME", &[])
            .expect("created");
        assert_eq!(t.tenant(&acme).expect("acme").1.name, "small");
        std::fs::write(
            dir.path().join("tenants/acme.toml"),
            "name = \"acme\"\npolicy = 7\n",
        )
        .expect("write");
        let err = t.reload().expect_err("broken");
        let text = err.to_string();
        assert!(
            text.contains("acme.toml") && text.contains("line 2"),
            "{text}"
        );
        assert_eq!(t.tenant(&acme).expect("still acme").1.name, "small");
    }

    #[test]
    fn bad_tokens_are_refused_and_a_burst_is_throttled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, _) = open(dir.path(), AuthMode::Token);
        let mut throttled = false;
        for i in 0..(FAILURE_BURST + 1) {
            match t.authenticate(Some("Bearer sluice_nope"), PEER, 0) {
                Err(Refusal::Unauthenticated(AuthError::Malformed)) => assert!(i < FAILURE_BURST),
                Err(Refusal::Throttled(ms)) => {
                    assert!(ms > 0);
                    throttled = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(throttled);
        assert!(matches!(
            t.authenticate(None, IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 0),
            Err(Refusal::Unauthenticated(AuthError::Missing))
        ));
    }

    #[test]
    fn a_revoked_token_and_a_removed_tenant_stop_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, _) = open(dir.path(), AuthMode::Token);
        let acme = TenantId::new("acme").expect("valid");
        t.create_tenant(&acme, "standard", "", &[])
            .expect("created");
        let (token, view) = t.create_token(&acme, false, None, 0).expect("token");
        let header = format!("Bearer {token}");
        assert_eq!(
            t.authenticate(Some(&header), PEER, 1).expect("ok").tenant,
            acme
        );
        std::fs::remove_file(dir.path().join("tenants/acme.toml")).expect("rm");
        t.reload().expect("reload");
        assert!(t.authenticate(Some(&header), PEER, 2).is_err());
        t.create_tenant(&acme, "standard", "", &[]).expect("again");
        assert!(t.authenticate(Some(&header), PEER, 3).is_ok());
        t.revoke_token(&view.id, 4).expect("revoked");
        assert!(matches!(
            t.authenticate(Some(&header), PEER, 5),
            Err(Refusal::Unauthenticated(AuthError::Revoked))
        ));
    }
}
