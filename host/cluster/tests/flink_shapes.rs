//! The typed REST bodies against answers of a real Flink 2.3 cluster
//! (`tests/flink-rest/`, recorded from its REST API): each parses as the
//! type the JobManager answers with, and what the type writes back keeps
//! every field of Flink's answer but the ones listed as not served, so a
//! Flink client finds what it reads where it reads it.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_cluster::api::flink::{
    CheckpointConfigView, CheckpointsView, ClusterOverview, DashboardConfig, Errors, Exceptions,
    JarList, JobDetail, JobIds, JobsOverview,
};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/flink-rest/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every key path of `v` (`a.b`, arrays as `[]`), to `depth`.
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// Parses Flink's answer as `T`, writes it back, and returns the key paths
/// of Flink's answer the written one lacks.
fn missing<T: DeserializeOwned + Serialize>(name: &str) -> BTreeSet<String> {
    let flink = fixture(name);
    let typed: T = serde_json::from_value(flink.clone())
        .unwrap_or_else(|e| panic!("Flink's {name} does not parse as Sluice's type: {e}"));
    let ours = serde_json::to_value(&typed).expect("serialises");
    let (mut theirs, mut written) = (BTreeSet::new(), BTreeSet::new());
    paths(&flink, "", &mut theirs);
    paths(&ours, "", &mut written);
    theirs.difference(&written).cloned().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn flinks_answers_parse_as_sluices_types_and_keep_their_fields() {
    assert_eq!(missing::<DashboardConfig>("config.json"), set(&[]));
    assert_eq!(missing::<Errors>("err_nonexistent.json"), set(&[]));
    assert_eq!(missing::<JobIds>("jobs.json"), set(&[]));
    assert_eq!(missing::<Exceptions>("job_exceptions.json"), set(&[]));
    assert_eq!(missing::<JarList>("jars.json"), set(&[]));
    assert_eq!(missing::<ClusterOverview>("overview.json"), set(&[]));
    assert_eq!(
        missing::<JobsOverview>("jobs_overview_running.json"),
        set(&[])
    );
    // Not served: the optimizer's plan, bytes and busy/idle times per
    // vertex (Sluice counts records, and CPU per tenant in /tenants/me/usage).
    assert_eq!(
        missing::<JobDetail>("job.json"),
        set(&[
            "plan",
            "plan.jid",
            "plan.name",
            "plan.nodes",
            "plan.nodes[].description",
            "plan.nodes[].id",
            "plan.nodes[].inputs",
            "plan.nodes[].inputs[].exchange",
            "plan.nodes[].inputs[].id",
            "plan.nodes[].inputs[].num",
            "plan.nodes[].inputs[].ship_strategy",
            "plan.nodes[].operator",
            "plan.nodes[].operator_strategy",
            "plan.nodes[].optimizer_properties",
            "plan.nodes[].parallelism",
            "plan.type",
            "vertices[].metrics.accumulated-backpressured-time",
            "vertices[].metrics.accumulated-busy-time",
            "vertices[].metrics.accumulated-idle-time",
            "vertices[].metrics.read-bytes",
            "vertices[].metrics.read-bytes-complete",
            "vertices[].metrics.write-bytes",
            "vertices[].metrics.write-bytes-complete",
        ])
    );
    // Not served: statistics of the history, per-task details, and the
    // in-flight data figures of unaligned checkpoints (Sluice has none).
    let checkpoints = missing::<CheckpointsView>("job_checkpoints.json");
    let unserved = |k: &String| {
        k.starts_with("summary")
            || k.ends_with(".tasks")
            || k.ends_with(".alignment_buffered")
            || k.ends_with(".persisted_data")
            || k.ends_with(".processed_data")
    };
    assert!(checkpoints.iter().all(unserved), "{checkpoints:?}");
    assert!(checkpoints.contains("summary"));
    // Not served: the changelog state backend's settings.
    assert_eq!(
        missing::<CheckpointConfigView>("job_checkpoints_config.json"),
        set(&[
            "changelog_periodic_materialization_interval",
            "changelog_storage"
        ])
    );
}
