//! Where a job's run goes and how it gets there: counting the slots jobs
//! hold on each TaskManager, spreading a run's slots over the TaskManagers
//! with the most free ones (pure, unit-tested), and turning the core's
//! deploy commands into one `Deployment` per TaskManager with where each
//! channel's other end is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_coord::{TaskDeployment, TaskFailure, TaskId, TaskStatus};
use sluice_types::JobId;

use crate::protocol::{Deployment, Peer, ToTaskManager};
use crate::table::{JobEntry, Tm};

/// Slots each TaskManager's current runs hold, by TaskManager id.
pub(crate) fn used_slots(jobs: &BTreeMap<JobId, JobEntry>) -> HashMap<String, u32> {
    let mut used = HashMap::new();
    for j in jobs.values() {
        for tm in &j.placement {
            *used.entry(tm.clone()).or_insert(0) += 1;
        }
    }
    used
}

/// Each TaskManager with free slots, and how many.
pub(crate) fn free_slots(
    tms: &BTreeMap<String, Tm>,
    used: &HashMap<String, u32>,
) -> Vec<(String, u32)> {
    tms.values()
        .map(|t| {
            let held = used.get(&t.id).copied().unwrap_or(0);
            (t.id.clone(), t.slots.saturating_sub(held))
        })
        .filter(|(_, f)| *f > 0)
        .collect()
}

/// Spreads `needed` slots over TaskManagers with `free` slots: each goes
/// to the one with the most free slots left (ties: the smaller id), so a
/// run's load spreads evenly. `None` if they do not have enough.
pub(crate) fn spread(mut free: Vec<(String, u32)>, needed: u32) -> Option<Vec<String>> {
    let total: u64 = free.iter().map(|(_, f)| u64::from(*f)).sum();
    if total < u64::from(needed) {
        return None;
    }
    let mut placement = Vec::with_capacity(needed as usize);
    for _ in 0..needed {
        let best = free
            .iter_mut()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))?;
        best.1 -= 1;
        placement.push(best.0.clone());
    }
    Some(placement)
}

/// Turns the core's deploy commands into one message per TaskManager,
/// with where each channel's other end is.
pub(crate) fn send_deployments(
    job: &mut JobEntry,
    tms: &BTreeMap<String, Tm>,
    deploys: Vec<(u32, TaskDeployment)>,
    now: u64,
) {
    let mut producer: HashMap<u32, String> = HashMap::new();
    let mut consumer: HashMap<u32, String> = HashMap::new();
    for (slot, d) in &deploys {
        let tm = job.placement[*slot as usize].clone();
        for ch in d.outputs.iter().flat_map(|o| o.channels.iter()) {
            producer.insert(*ch, tm.clone());
        }
        for (ch, _) in &d.inputs {
            consumer.insert(*ch, tm.clone());
        }
        job.locations.insert(d.task, tm);
    }
    let peer = |id: &str| {
        tms.get(id).map(|t| Peer {
            id: id.to_owned(),
            addr: t.addr,
        })
    };
    let involved: BTreeSet<&String> = job.placement.iter().collect();
    // A new run continues from the newest completed checkpoint, if any.
    let restore_point = job.checkpoints.restore_point(now);
    if let Some(meta) = &restore_point {
        tracing::info!(job = %job.id, checkpoint = meta.checkpoint, "restoring from checkpoint");
    }
    let mut per_tm: BTreeMap<String, Vec<(u32, TaskDeployment)>> = BTreeMap::new();
    for (slot, d) in deploys {
        per_tm
            .entry(job.placement[slot as usize].clone())
            .or_default()
            .push((slot, d));
    }
    for (tm_id, tasks) in per_tm {
        let restore = restore_point.as_ref().map(|meta| {
            let ids: Vec<TaskId> = tasks.iter().map(|(_, t)| t.task).collect();
            meta.restore_for(&job.execution, &ids)
        });
        let remote_consumers = producer
            .iter()
            .filter(|(ch, p)| **p == tm_id && consumer.get(*ch).is_some_and(|c| *c != tm_id))
            .filter_map(|(ch, _)| Some((*ch, peer(&consumer[ch])?)))
            .collect();
        let remote_producers = consumer
            .iter()
            .filter(|(ch, c)| **c == tm_id && producer.get(*ch).is_some_and(|p| *p != tm_id))
            .map(|(ch, _)| *ch)
            .collect();
        let connect_to = involved
            .iter()
            .filter(|other| ***other < tm_id)
            .filter_map(|other| peer(other))
            .collect();
        let deployment = Deployment {
            job: job.id,
            attempt: job.core.attempt(),
            name: job.name.clone(),
            tenant: job.owner.to_string(),
            policy: job.policy.clone(),
            component_hash: job.hash.clone(),
            component: job.component.as_ref().clone(),
            linked: job
                .linked
                .iter()
                .map(|l| crate::protocol::LinkedComponent {
                    link: l.link.clone(),
                    hash: l.hash.clone(),
                    component: l.component.as_ref().clone(),
                })
                .collect(),
            tasks,
            remote_consumers,
            remote_producers,
            connect_to,
            checkpoints: Some(job.checkpoints.settings.clone()),
            restore,
        };
        match tms.get(&tm_id) {
            Some(tm) => {
                let _ = tm.tx.send(ToTaskManager::Deploy(Box::new(deployment)));
            }
            None => {
                // Placement only uses registered TaskManagers, and losing
                // one removes it under the same lock: unreachable, but a
                // task that cannot be deployed must still fail visibly.
                for (_, t) in &deployment.tasks {
                    job.core.handle_task_status(
                        t.task,
                        TaskStatus::Failed(TaskFailure::recoverable(format!(
                            "TaskManager {tm_id} is gone"
                        ))),
                        now,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn free(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(id, f)| ((*id).to_owned(), *f)).collect()
    }

    #[test]
    fn slots_spread_over_the_emptiest_taskmanagers_first() {
        assert_eq!(
            spread(free(&[("a", 4), ("b", 4)]), 4),
            Some(vec!["a".into(), "b".into(), "a".into(), "b".into()])
        );
        assert_eq!(
            spread(free(&[("a", 1), ("b", 3)]), 3),
            Some(vec!["b".into(), "b".into(), "a".into()])
        );
        assert_eq!(spread(free(&[("a", 1), ("b", 1)]), 3), None);
        assert_eq!(spread(Vec::new(), 0), Some(Vec::new()));
    }

    proptest! {
        #[test]
        fn a_placement_uses_only_free_slots_and_keeps_them_even(
            slots in proptest::collection::vec(0u32..8, 0..6),
            needed in 0u32..40,
        ) {
            let offered: Vec<(String, u32)> = slots
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("tm{i}"), *f))
                .collect();
            let total: u32 = slots.iter().sum();
            let placed = spread(offered.clone(), needed);
            prop_assert_eq!(placed.is_some(), total >= needed);
            if let Some(placed) = placed {
                prop_assert_eq!(placed.len() as u32, needed);
                let mut left: HashMap<String, i64> =
                    offered.iter().map(|(id, f)| (id.clone(), i64::from(*f))).collect();
                for id in &placed {
                    *left.get_mut(id).expect("placed on an offered TaskManager") -= 1;
                }
                prop_assert!(left.values().all(|l| *l >= 0));
                // Even: a TaskManager that got a slot has at least as many
                // left as the fullest other one had, minus one.
                let most_left = left.values().copied().max().unwrap_or(0);
                for id in &placed {
                    prop_assert!(left[id] + 1 >= most_left);
                }
            }
        }
    }
}
