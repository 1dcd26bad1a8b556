//! Tenants and policies: parsing `tenants/*.toml` and `policies/*.toml`, and
//! pure decisions over them (may this job use that connector, that path,
//! that parallelism; does it fit its tenant's quotas, [`quota`]; who presents
//! this token, [`auth`]). No IO beyond reading the files it is pointed at,
//! and no clock: callers pass the time in.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod auth;
pub mod quota;

/// The policy `sluice run` uses when given none (`policies/standard.toml`).
pub const STANDARD_POLICY: &str = include_str!("../../../policies/standard.toml");

/// The tight policy for trial tenants (`policies/small.toml`).
pub const SMALL_POLICY: &str = include_str!("../../../policies/small.toml");

/// Limits enforced where the tenant's code runs: per operator instance
/// and call by the wasm runtime, and per tenant on each TaskManager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory per instance, MiB.
    pub memory_mib: u64,
    /// Fuel per guest call; `None` turns fuel metering off.
    pub fuel_per_call: Option<u64>,
    /// Wall-clock deadline per guest call, ms; `None` turns it off.
    pub max_call_ms: Option<u64>,
    /// Wasm stack size, KiB.
    pub stack_kib: u64,
    /// Guest stdout/stderr bytes kept per call.
    pub log_bytes_per_call: usize,
    /// Bytes of records one call may emit (each record counts its key
    /// and value plus [`RECORD_OVERHEAD`]); a call over it fails its task.
    #[serde(default = "default_output_bytes")]
    pub max_output_bytes_per_call: u64,
    /// The tenant's weight for CPU on each TaskManager: when guests
    /// compete for the cores, each tenant gets CPU in proportion to its
    /// weight, whatever its number of subtasks.
    #[serde(default = "default_cpu_shares")]
    pub cpu_shares: u32,
    /// A hard ceiling on the tenant's CPU on each TaskManager, in cores
    /// (e.g. 1.5), even when cores are idle. Unset: none.
    #[serde(default)]
    pub cpu_cores: Option<Cores>,
    /// Live operator instances of the tenant on one TaskManager.
    #[serde(default)]
    pub max_instances_per_taskmanager: Option<u64>,
    /// Guest linear memory of the tenant's instances on one TaskManager, MiB.
    #[serde(default)]
    pub max_memory_mib_per_taskmanager: Option<u64>,
}

/// What each emitted record counts against `max_output_bytes_per_call`
/// besides its key and value (its metadata, as the host holds it).
pub const RECORD_OVERHEAD: u64 = 32;

fn default_output_bytes() -> u64 {
    64 << 20
}

fn default_cpu_shares() -> u32 {
    100
}

/// A number of cores with millicore precision, written as a number
/// (`cpu_cores = 1.5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cores {
    millis: u32,
}

impl Cores {
    /// From millicores (at least one).
    pub fn from_millis(millis: u32) -> Self {
        Cores {
            millis: millis.max(1),
        }
    }

    /// As a number of cores.
    pub fn get(self) -> f64 {
        f64::from(self.millis) / 1000.0
    }
}

impl Serialize for Cores {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.get())
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let cores = f64::deserialize(d)?;
        if !(0.001..=4096.0).contains(&cores) {
            return Err(serde::de::Error::custom(format!(
                "cpu_cores must be between 0.001 and 4096, not {cores}"
            )));
        }
        Ok(Cores::from_millis((cores * 1000.0).round() as u32))
    }
}

impl Limits {
    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }
}

/// Quotas checked when a job is submitted or a jar uploaded. The `max_*`
/// sums are per tenant (see [`quota::Ledger`]); unset means unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Upper bound of any node's parallelism.
    pub max_parallelism: u32,
    /// Nodes one job's plan may have.
    #[serde(default = "default_plan_nodes")]
    pub max_plan_nodes: u32,
    /// Edges one job's plan may have.
    #[serde(default = "default_plan_edges")]
    pub max_plan_edges: u32,
    /// Connectors the tenant may use.
    pub connectors: Vec<String>,
    /// Path prefixes file connectors may use; empty means anywhere.
    #[serde(default)]
    pub file_roots: Vec<PathBuf>,
    /// Jobs that have not ended.
    #[serde(default)]
    pub max_jobs: Option<u64>,
    /// Task slots: the sum of the parallelism of the tenant's running jobs.
    #[serde(default)]
    pub max_slots: Option<u64>,
    /// Guest memory of all live instances (instances × `limits.memory_mib`).
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// Stored jars.
    #[serde(default)]
    pub max_jars: Option<u64>,
    /// Bytes of all stored jars.
    #[serde(default)]
    pub max_jar_bytes: Option<u64>,
    /// Bytes of one upload.
    #[serde(default)]
    pub max_upload_bytes: Option<u64>,
    /// Uploads under way at once.
    #[serde(default)]
    pub max_concurrent_uploads: Option<u64>,
    /// Bytes of the latest completed checkpoint of all jobs together.
    #[serde(default)]
    pub max_checkpoint_bytes: Option<u64>,
    /// Bytes of one job's checkpoint; a larger one is declined.
    #[serde(default)]
    pub max_checkpoint_bytes_per_job: Option<u64>,
}

fn default_plan_nodes() -> u32 {
    1_000
}

fn default_plan_edges() -> u32 {
    10_000
}

/// A named policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Its name (referenced by tenants).
    pub name: String,
    /// Runtime limits.
    pub limits: Limits,
    /// Submission quotas.
    pub quotas: Quotas,
}

/// A tenant's name as the API, storage prefixes and metrics use it: 1 to 63
/// of `a-z`, `0-9` and `-`, starting with a letter or digit, so it is safe
/// as a path segment, a URL segment and a label value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// A string that is not a valid [`TenantId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a tenant name: use 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit"
)]
pub struct BadTenantId(pub String);

impl TenantId {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, BadTenantId> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if first_ok && rest_ok && name.len() <= 63 {
            Ok(TenantId(name.to_owned()))
        } else {
            Err(BadTenantId(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = BadTenantId;
    fn try_from(name: String) -> Result<Self, BadTenantId> {
        TenantId::new(&name)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant: a team sharing the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Identifier used in the API, in storage prefixes and in metrics.
    pub name: TenantId,
    /// Human-readable name.
    #[serde(default)]
    pub display_name: String,
    /// The policy applied to its jobs.
    pub policy: String,
    /// Directories its file connectors may use (absolute). Unset: the
    /// policy's `file_roots`, and where those are unset too a directory of
    /// its own under the JobManager's data directory (never the whole host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_roots: Vec<PathBuf>,
}

impl Tenant {
    /// Refuses file roots that are relative or hold `..`, which a prefix
    /// check could not confine.
    pub fn check_roots(&self) -> Result<(), String> {
        check_roots(&self.file_roots)
    }
}

/// Refuses roots that are relative or hold `.` or `..` components.
pub fn check_roots(roots: &[PathBuf]) -> Result<(), String> {
    for r in roots {
        let plain = r.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !r.is_absolute() || !plain {
            return Err(format!(
                "file root `{}` must be an absolute path without `.` or `..`",
                r.display()
            ));
        }
    }
    Ok(())
}

/// A policy or tenant file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/missing fields.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, field).
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A tenant names a policy that does not exist.
    #[error("tenant `{tenant}` uses policy `{policy}`, which is not defined under policies/")]
    UnknownPolicy {
        /// The tenant.
        tenant: String,
        /// The missing policy.
        policy: String,
    },
}

/// A job's use of the outside world that its policy forbids.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    /// A connector not in the policy's list.
    #[error("connector `{connector}` is not allowed by policy `{policy}` (allowed: {allowed})")]
    Connector {
        /// The connector.
        connector: String,
        /// The policy.
        policy: String,
        /// What is allowed.
        allowed: String,
    },
    /// A path outside the policy's file roots.
    #[error(
        "path `{path}` is outside the file roots this job may use ({roots}; policy `{policy}`): \
         use a path under one of them (relative paths resolve against the first), or ask an \
         admin for another root"
    )]
    Path {
        /// The path.
        path: String,
        /// The policy.
        policy: String,
        /// The roots.
        roots: String,
    },
    /// Parallelism above the quota.
    #[error(
        "parallelism {requested} exceeds the limit {max} (quota `max_parallelism`) of policy `{policy}`"
    )]
    Parallelism {
        /// Requested.
        requested: u32,
        /// Allowed.
        max: u32,
        /// The policy.
        policy: String,
    },
}

impl Policy {
    /// Parses a policy from TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: &str| PolicyError::Invalid {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if p.limits.memory_mib == 0 || p.limits.memory_mib > 4096 {
            return Err(invalid("limits.memory_mib must be between 1 and 4096"));
        }
        // Guests run on the host's threads, whose own stacks are 2 MiB: a
        // larger wasm stack could overflow the host's instead of trapping.
        if p.limits.stack_kib < 64 || p.limits.stack_kib > 1024 {
            return Err(invalid("limits.stack_kib must be between 64 and 1024"));
        }
        if p.limits.fuel_per_call == Some(0) || p.limits.max_call_ms == Some(0) {
            return Err(invalid(
                "limits.fuel_per_call and limits.max_call_ms must be positive; omit them to turn them off",
            ));
        }
        if p.quotas.max_parallelism == 0 {
            return Err(invalid("quotas.max_parallelism must be at least 1"));
        }
        check_roots(&p.quotas.file_roots).map_err(|m| invalid(&format!("quotas.{m}")))?;
        Ok(p)
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// The built-in standard policy.
    pub fn standard() -> Self {
        Self::parse(STANDARD_POLICY, Path::new("policies/standard.toml"))
            .expect("invariant: the bundled standard policy is valid")
    }

    /// May a job use this connector?
    pub fn check_connector(&self, connector: &str) -> Result<(), Denied> {
        if self.quotas.connectors.iter().any(|c| c == connector) {
            return Ok(());
        }
        Err(Denied::Connector {
            connector: connector.to_owned(),
            policy: self.name.clone(),
            allowed: self.quotas.connectors.join(", "),
        })
    }

    /// May a file connector use `path`? Paths with `..` components are refused
    /// when roots are set, so a prefix check cannot be escaped.
    pub fn check_path(&self, path: &Path) -> Result<(), Denied> {
        if self.quotas.file_roots.is_empty() {
            return Ok(());
        }
        let escapes = path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !escapes && self.quotas.file_roots.iter().any(|r| path.starts_with(r)) {
            return Ok(());
        }
        Err(Denied::Path {
            path: path.display().to_string(),
            policy: self.name.clone(),
            roots: self
                .quotas
                .file_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// May a node run at this parallelism?
    pub fn check_parallelism(&self, requested: u32) -> Result<(), Denied> {
        if requested <= self.quotas.max_parallelism {
            return Ok(());
        }
        Err(Denied::Parallelism {
            requested,
            max: self.quotas.max_parallelism,
            policy: self.name.clone(),
        })
    }
}

/// Every tenant and policy of a cluster, loaded from two directories.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// Policies by name.
    pub policies: BTreeMap<String, Policy>,
    /// Tenants by name.
    pub tenants: BTreeMap<TenantId, Tenant>,
}

impl Registry {
    /// Loads `*.toml` from `policies_dir` and `tenants_dir`; every tenant must
    /// name an existing policy.
    pub fn load(policies_dir: &Path, tenants_dir: &Path) -> Result<Self, PolicyError> {
        let mut reg = Registry::default();
        for path in toml_files(policies_dir)? {
            let p = Policy::load(&path)?;
            if reg.policies.contains_key(&p.name) {
                return Err(PolicyError::Invalid {
                    path,
                    message: format!("policy `{}` is defined twice", p.name),
                });
            }
            reg.policies.insert(p.name.clone(), p);
        }
        for path in toml_files(tenants_dir)? {
            let text = std::fs::read_to_string(&path).map_err(|error| PolicyError::Read {
                path: path.clone(),
                error,
            })?;
            let t: Tenant = toml::from_str(&text).map_err(|e| PolicyError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
            if let Err(message) = t.check_roots() {
                return Err(PolicyError::Invalid { path, message });
            }
            if !reg.policies.contains_key(&t.policy) {
                return Err(PolicyError::UnknownPolicy {
                    tenant: t.name.to_string(),
                    policy: t.policy,
                });
            }
            if reg.tenants.contains_key(&t.name) {
                return Err(PolicyError::Invalid {
                    path,
                    message: format!("tenant `{}` is defined twice", t.name),
                });
            }
            reg.tenants.insert(t.name.clone(), t);
        }
        Ok(reg)
    }
}

impl Registry {
    /// A tenant and its policy.
    pub fn policy_of(&self, tenant: &str) -> Option<(&Tenant, &Policy)> {
        let t = self.tenants.get(tenant)?;
        Some((t, self.policies.get(&t.policy)?))
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|error| PolicyError::Read {
        path: dir.to_owned(),
        error,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn policies_cross_the_wire_unchanged() {
        // Deployments carry the policy in postcard, which is not
        // self-describing: a field skipped when empty would shift the rest.
        for text in [STANDARD_POLICY, SMALL_POLICY] {
            let policy: Policy = toml::from_str(text).expect("parses");
            let bytes = postcard::to_stdvec(&policy).expect("encodes");
            let back: Policy = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(back, policy);
        }
        let small: Policy = toml::from_str(SMALL_POLICY).expect("parses");
        assert_eq!(small.limits.cpu_cores, Some(Cores::from_millis(1000)));
        assert_eq!(small.limits.cpu_shares, 50);
    }

    #[test]
    fn the_repository_policies_and_tenants_load() {
        let reg =
            Registry::load(&repo().join("policies"), &repo().join("tenants")).expect("valid files");
        assert_eq!(reg.tenants["acme"].policy, "standard");
        assert_eq!(reg.policies["small"].limits.memory_mib, 32);
        assert_eq!(Policy::standard(), reg.policies["standard"]);
        assert_eq!(reg.policies["small"].quotas.max_jobs, Some(2));
        let (tenant, policy) = reg.policy_of("trial").expect("defined");
        assert_eq!(
            (tenant.name.as_str(), policy.name.as_str()),
            ("trial", "small")
        );
        assert!(reg.policy_of("nobody").is_none());
    }

    #[test]
    fn tenant_names_are_safe_as_path_url_and_label() {
        for good in ["a", "acme", "team-7", "0x", &"a".repeat(63)] {
            assert!(TenantId::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "Acme",
            "a_b",
            "a/b",
            "..",
            "a.b",
            "é",
            &"a".repeat(64),
        ] {
            let err = TenantId::new(bad).expect_err(bad);
            assert!(err.to_string().contains("not a tenant name"), "{err}");
        }
    }

    #[test]
    fn a_bad_tenant_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, t) = (dir.path().join("p"), dir.path().join("t"));
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::create_dir_all(&t).expect("mkdir");
        std::fs::write(p.join("standard.toml"), STANDARD_POLICY).expect("write");
        std::fs::write(
            t.join("x.toml"),
            "name = \"x\"\npolicy = \"standard\"\nquota = 3\n",
        )
        .expect("write");
        let err = Registry::load(&p, &t).expect_err("unknown field");
        let text = err.to_string();
        assert!(
            text.contains("x.toml") && text.contains("line 3") && text.contains("quota"),
            "{text}"
        );
        std::fs::write(
            t.join("x.toml"),
            "name = \"Bad Name\"\npolicy = \"standard\"\n",
        )
        .expect("write");
        let err = Registry::load(&p, &t).expect_err("bad name");
        assert!(err.to_string().contains("not a tenant name"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_named_in_the_error() {
        let text = STANDARD_POLICY.replace("stack_kib", "stack_kb");
        let err = Policy::parse(&text, Path::new("p.toml")).expect_err("unknown field");
        assert!(err.to_string().contains("stack_kb"), "{err}");
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        let text = STANDARD_POLICY.replace("memory_mib = 256", "memory_mib = 0");
        let err = Policy::parse(&text, Path::new("p.toml")).expect_err("zero memory");
        assert!(err.to_string().contains("memory_mib"), "{err}");
    }

    #[test]
    fn a_tenant_naming_a_missing_policy_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, t) = (dir.path().join("p"), dir.path().join("t"));
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::create_dir_all(&t).expect("mkdir");
        std::fs::write(p.join("standard.toml"), STANDARD_POLICY).expect("write");
        std::fs::write(t.join("x.toml"), "name = \"x\"\npolicy = \"gold\"\n").expect("write");
        let err = Registry::load(&p, &t).expect_err("gold is missing");
        assert!(
            matches!(err, PolicyError::UnknownPolicy { ref policy, .. } if policy == "gold"),
            "{err}"
        );
    }

    #[test]
    fn connectors_paths_and_parallelism_are_checked() {
        let mut p = Policy::standard();
        assert!(p.check_connector("datagen").is_ok());
        let denied = p.check_connector("http").expect_err("not listed");
        assert!(denied.to_string().contains("http"));
        assert!(p.check_path(Path::new("/anything")).is_ok());
        p.quotas.file_roots = vec![PathBuf::from("/data/acme")];
        assert!(p.check_path(Path::new("/data/acme/in.txt")).is_ok());
        assert!(p.check_path(Path::new("/data/acme/../other/x")).is_err());
        assert!(p.check_path(Path::new("/data/acmeevil")).is_err());
        assert!(p.check_parallelism(64).is_ok());
        assert!(p.check_parallelism(65).is_err());
    }

    #[test]
    fn file_roots_must_be_absolute_and_plain() {
        let roots = |r: &[&str]| r.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert!(check_roots(&roots(&["/data/acme", "/srv/in"])).is_ok());
        for bad in ["data/acme", "/data/../etc", "./data", ""] {
            let e = check_roots(&roots(&[bad])).expect_err(bad);
            assert!(e.contains("must be an absolute path"), "{e}");
        }
        let text = STANDARD_POLICY.replace("file_roots = []", "file_roots = [\"in\"]");
        assert_ne!(text, STANDARD_POLICY, "the bundled policy names its roots");
        let e = Policy::parse(&text, Path::new("p.toml")).expect_err("relative root");
        assert!(e.to_string().contains("quotas.file root `in`"), "{e}");
    }
}
