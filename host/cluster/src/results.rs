//! The job-result store: one small file per job under the JobManager's
//! data directory, written when a job is submitted and when it ends, saying
//! whether its checkpoints have been cleaned up. A JobManager that starts
//! finishes every cleanup a previous one left undone, so no checkpoint file
//! is orphaned by a crash (Flink's JobResultStore plays the same role).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sluice_types::JobId;

/// What the store keeps about one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobResult {
    /// The job id (32 hex characters).
    pub job: String,
    /// The tenant that submitted it (`None` in records from before tenants:
    /// the default tenant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<sluice_policy::TenantId>,
    /// `RUNNING` until the job ends, then its final status.
    pub state: String,
    /// URI of the checkpoint storage its checkpoints are in.
    pub storage: String,
    /// Checkpoints to keep (savepoints).
    pub keep: Vec<u64>,
    /// Its checkpoints are kept on purpose (a failed job, for a manual
    /// restore, or one whose JobManager went away while it ran).
    pub retained: bool,
    /// Nothing is left to delete.
    pub cleaned: bool,
    /// The job's REST views when it ended (`views::archive`), answered
    /// once the job has left the JobManager's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<serde_json::Value>,
    /// What the job cost over all its runs (fuel, CPU, records), for its
    /// tenant's usage to survive a restart of the JobManager: written when
    /// the job ends and again when it leaves memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<crate::table::Spent>,
}

impl JobResult {
    /// Who owns it (records from before tenants belong to the default
    /// tenant).
    pub fn owner(&self) -> sluice_policy::TenantId {
        self.owner.clone().unwrap_or_else(|| {
            sluice_policy::TenantId::new(crate::tenancy::DEFAULT_TENANT).expect("invariant: valid")
        })
    }
}

/// The store: `DIR/JOB.json`, each written atomically; and in memory, the
/// owner of every record, so that whether a caller may see a record is
/// decided without touching the disk (another tenant's job id then costs
/// what an unknown one does).
#[derive(Clone, Debug)]
pub(crate) struct JobResultStore {
    dir: PathBuf,
    owners: Arc<Mutex<HashMap<String, sluice_policy::TenantId>>>,
}

impl JobResultStore {
    /// Opens the store, reading every record once for its owner.
    pub fn new(dir: &Path) -> Self {
        let store = JobResultStore {
            dir: dir.to_owned(),
            owners: Arc::default(),
        };
        let owners = store
            .all()
            .iter()
            .map(|r| (r.job.clone(), r.owner()))
            .collect();
        *store.lock_owners() = owners;
        store
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, sluice_policy::TenantId>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The owner of `job`'s record, if there is one.
    pub fn owner(&self, job: JobId) -> Option<sluice_policy::TenantId> {
        self.lock_owners().get(&job.to_string()).cloned()
    }

    /// Records a job's result, replacing what was there.
    pub fn put(&self, r: &JobResult) -> std::io::Result<()> {
        self.lock_owners().insert(r.job.clone(), r.owner());
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.json", r.job));
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    }

    /// Every readable record; unreadable ones are logged and skipped.
    pub fn all(&self) -> Vec<JobResult> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(file = %path.display(), "skipping a job result: {e}"),
            }
        }
        out
    }

    /// The record of `job`, if there is a readable one.
    pub fn get(&self, job: JobId) -> Option<JobResult> {
        let bytes = std::fs::read(self.dir.join(format!("{job}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Updates the record of `job`, if there is one.
    pub fn update(&self, job: JobId, f: impl FnOnce(&mut JobResult)) -> std::io::Result<()> {
        let path = self.dir.join(format!("{job}.json"));
        let mut r: JobResult =
            serde_json::from_slice(&std::fs::read(&path)?).map_err(std::io::Error::other)?;
        f(&mut r);
        self.put(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_restart_and_updates_replace_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JobResultStore::new(&dir.path().join("job-results"));
        let r = JobResult {
            job: JobId([7; 16]).to_string(),
            owner: Some(sluice_policy::TenantId::new("acme").expect("valid")),
            state: "RUNNING".into(),
            storage: "memory://".into(),
            keep: vec![],
            retained: false,
            cleaned: false,
            archive: None,
            spent: None,
        };
        store.put(&r).expect("put");
        std::fs::write(dir.path().join("job-results/garbage.json"), b"{").expect("write");
        let again = JobResultStore::new(&dir.path().join("job-results"));
        assert_eq!(again.all(), [r]);
        again
            .update(JobId([7; 16]), |r| {
                r.state = "CANCELED".into();
                r.cleaned = true;
            })
            .expect("update");
        let all = store.all();
        assert_eq!((all[0].state.as_str(), all[0].cleaned), ("CANCELED", true));
    }
}
