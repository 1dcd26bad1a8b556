//! The ownership check: the only way requests reach a job, a job's archive
//! or an uploaded application. Every job and jar is owned by one tenant; a
//! principal sees its own tenant's (an admin sees all), and anything else
//! answers exactly as an id that does not exist, so ids of other tenants
//! cannot be probed.
//!
//! REST handlers and the JobManager's request methods take a [`Principal`]
//! and go through these functions; nothing outside this file indexes
//! `Cluster::jobs` or `Cluster::jars` on a request's behalf.

use sluice_policy::auth::Principal;
use sluice_types::JobId;

use crate::results::{JobResult, JobResultStore};
use crate::table::{Cluster, Jar, JobEntry, SubmitError, Tm};

/// The answer for a job that does not exist or is not the principal's.
pub(crate) fn no_job(id: JobId) -> SubmitError {
    SubmitError::NotFound(format!("Job {id} not found"))
}

/// The answer for an application that does not exist or is not the
/// principal's.
pub(crate) fn no_jar(id: &str) -> SubmitError {
    SubmitError::NotFound(format!("File {id} does not exist"))
}

/// A job the principal may see.
pub(crate) fn job<'a>(
    cluster: &'a Cluster,
    who: &Principal,
    id: JobId,
) -> Result<&'a JobEntry, SubmitError> {
    cluster
        .jobs
        .get(&id)
        .filter(|j| who.sees(&j.owner))
        .ok_or_else(|| no_job(id))
}

/// A job the principal may act on.
pub(crate) fn job_mut<'a>(
    cluster: &'a mut Cluster,
    who: &Principal,
    id: JobId,
) -> Result<&'a mut JobEntry, SubmitError> {
    cluster
        .jobs
        .get_mut(&id)
        .filter(|j| who.sees(&j.owner))
        .ok_or_else(|| no_job(id))
}

/// The jobs in memory the principal may see.
pub(crate) fn jobs<'a>(
    cluster: &'a Cluster,
    who: &'a Principal,
) -> impl DoubleEndedIterator<Item = &'a JobEntry> + 'a {
    cluster.jobs.values().filter(move |j| who.sees(&j.owner))
}

/// A job-result record the principal may see. Whether it may is decided
/// from the store's owner index first: only its own records are read.
pub(crate) fn result(
    store: &JobResultStore,
    who: &Principal,
    id: sluice_types::JobId,
) -> Option<JobResult> {
    if !who.sees(&store.owner(id)?) {
        return None;
    }
    store.get(id).filter(|r| who.sees(&r.owner()))
}

/// An uploaded application the principal may use: its own tenant's first,
/// then (for an admin) the first other tenant's with that id.
pub(crate) fn jar<'a>(
    cluster: &'a Cluster,
    who: &Principal,
    id: &str,
) -> Result<&'a Jar, SubmitError> {
    let key = crate::table::jar_key(id);
    cluster
        .jars
        .get(&(who.tenant.clone(), key.clone()))
        .or_else(|| {
            who.admin
                .then(|| cluster.jars.values().find(|j| j.id == key))
                .flatten()
        })
        .ok_or_else(|| no_jar(id))
}

/// Removes an application the principal may use; the removed record.
pub(crate) fn take_jar(
    cluster: &mut Cluster,
    who: &Principal,
    id: &str,
) -> Result<Jar, SubmitError> {
    let jar = jar(cluster, who, id)?;
    let key = (jar.owner.clone(), jar.id.clone());
    cluster.jars.remove(&key).ok_or_else(|| no_jar(id))
}

/// The applications the principal may see.
pub(crate) fn jars<'a>(
    cluster: &'a Cluster,
    who: &'a Principal,
) -> impl Iterator<Item = &'a Jar> + 'a {
    cluster.jars.values().filter(move |j| who.sees(&j.owner))
}

/// The cluster's size, which every principal may see: it tells nothing of
/// anyone's jobs.
pub(crate) struct Capacity {
    /// TaskManagers registered.
    pub taskmanagers: usize,
    /// Slots they offer.
    pub slots: u32,
    /// Slots holding no task.
    pub free: u32,
}

/// The cluster's size.
pub(crate) fn capacity(cluster: &Cluster) -> Capacity {
    let slots: u32 = cluster.tms.values().map(|t| t.slots).sum();
    let used: u32 = cluster
        .jobs
        .values()
        .map(|j| j.placement.len() as u32)
        .sum();
    Capacity {
        taskmanagers: cluster.tms.len(),
        slots,
        free: slots.saturating_sub(used),
    }
}

/// Every job in memory, whoever owns it: an admin's view of the cluster.
pub(crate) fn all_jobs<'a>(
    cluster: &'a Cluster,
    who: &Principal,
) -> Result<impl Iterator<Item = &'a JobEntry> + 'a, SubmitError> {
    admin(who)?;
    Ok(cluster.jobs.values())
}

/// The registered TaskManagers: an admin's.
pub(crate) fn taskmanagers<'a>(
    cluster: &'a Cluster,
    who: &Principal,
) -> Result<impl Iterator<Item = &'a Tm> + 'a, SubmitError> {
    admin(who)?;
    Ok(cluster.tms.values())
}

/// One registered TaskManager: an admin's.
pub(crate) fn taskmanager<'a>(
    cluster: &'a Cluster,
    who: &Principal,
    id: &str,
) -> Result<&'a Tm, SubmitError> {
    admin(who)?;
    cluster
        .tms
        .get(id)
        .ok_or_else(|| SubmitError::NotFound(format!("TaskManager {id} not found")))
}

/// Refuses a principal that is not an admin (403: the endpoint exists, it
/// is not the caller's).
pub(crate) fn admin(who: &Principal) -> Result<(), SubmitError> {
    if who.admin {
        Ok(())
    } else {
        Err(SubmitError::Forbidden(
            "this needs an admin token (`sluice token create TENANT --admin`)".into(),
        ))
    }
}
