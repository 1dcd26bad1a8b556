//! Keyed snapshots as the golden vectors in `guest-sdk/golden` say: a
//! keyed count's chunks, byte for byte, as an independent encoder wrote
//! them, so a job snapshotted by one SDK restores in another.

use crate::bindings::exports::sluice::app::task::StateChunk;
use crate::prelude::*;
use crate::testing::Harness;

/// Adds the record's numbers to the key's count; `eT` and `pT` set an
/// event-time or processing-time timer at `T`.
struct Count;

impl KeyedProcess for Count {
    type State = u64;

    fn process(
        &mut self,
        ctx: &mut KeyedContext<'_, u64>,
        record: Record<'_>,
        _out: &mut Collector,
    ) -> Result<(), Error> {
        let text = std::str::from_utf8(record.value).map_err(|e| failed(e.to_string()))?;
        for word in text.split(' ') {
            let number = |w: &str| w.parse().map_err(|_| failed(format!("not a number: {w}")));
            if let Some(t) = word.strip_prefix('e') {
                ctx.register_event_timer(number(t)?);
            } else if let Some(t) = word.strip_prefix('p') {
                ctx.register_processing_timer(number(t)?);
            } else {
                *ctx.state_or_default() += word
                    .parse::<u64>()
                    .map_err(|_| failed(format!("not a count: {word}")))?;
            }
        }
        Ok(())
    }
}

struct Golden;

impl Application for Golden {
    fn operators() -> Vec<OperatorDef> {
        vec![keyed_process("count", |_| Ok(Count))]
    }

    fn plan(_: &Args) -> Result<Graph, Error> {
        Ok(Graph::new())
    }
}

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../golden/vectors.json"
    ))
    .expect("golden vectors");
    serde_json::from_str(&text).expect("json")
}

/// The golden chunks, in key-group order.
fn golden_chunks(snapshot: &serde_json::Value) -> Vec<StateChunk> {
    snapshot["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| StateChunk {
            operator: 0,
            key_group: c["key_group"].as_u64().map(|kg| kg as u32),
            data: hex::decode(c["data_hex"].as_str().expect("data")).expect("hex"),
        })
        .collect()
}

fn sorted(mut chunks: Vec<StateChunk>) -> Vec<(Option<u32>, Vec<u8>)> {
    chunks.sort_by_key(|c| c.key_group);
    chunks.into_iter().map(|c| (c.key_group, c.data)).collect()
}

#[test]
fn a_keyed_count_snapshots_to_the_golden_bytes() {
    let v = vectors();
    let snapshot = &v["keyed_snapshot"];
    let max = snapshot["max_parallelism"].as_u64().expect("max") as u32;
    let mut h =
        Harness::with_spec::<Golden>(&[("count", vec![])], 0, 1, max, vec![]).expect("chain");
    for k in snapshot["keys"].as_array().expect("keys") {
        let key = hex::decode(k["key_hex"].as_str().expect("key")).expect("hex");
        let mut words = vec![k["count"].as_u64().expect("count").to_string()];
        for (domain, prefix) in [("event_timers", 'e'), ("processing_timers", 'p')] {
            for t in k[domain].as_array().expect("timers") {
                words.push(format!("{prefix}{}", t.as_i64().expect("time")));
            }
        }
        h.process(0, &[(Some(&key), words.join(" ").as_bytes())])
            .expect("process");
    }
    let chunks = golden_chunks(snapshot);
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    assert_eq!(
        sorted(h.snapshot().expect("snapshot")),
        sorted(chunks.clone())
    );
}

#[test]
fn golden_chunks_restore_across_subtasks_and_snapshot_back_unchanged() {
    let v = vectors();
    let snapshot = &v["keyed_snapshot"];
    let max = snapshot["max_parallelism"].as_u64().expect("max") as u32;
    let chunks = golden_chunks(snapshot);
    let mut all = Vec::new();
    for s in 0..3 {
        let mine: Vec<StateChunk> = chunks
            .iter()
            .filter(|c| sluice_keygroup::owner(c.key_group.expect("keyed"), max, 3) == s)
            .cloned()
            .collect();
        let mut h = Harness::with_spec::<Golden>(&[("count", vec![])], s, 3, max, mine.clone())
            .expect("restore");
        let back = h.snapshot().expect("snapshot");
        assert_eq!(sorted(back.clone()), sorted(mine), "subtask {s}");
        all.extend(back);
    }
    assert_eq!(sorted(all), sorted(chunks));
}
