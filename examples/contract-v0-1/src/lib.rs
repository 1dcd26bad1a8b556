//! A component built against contract 0.1.0 (`wit/v0.1/sluice.wit`), with
//! wit-bindgen alone, no SDK: the tests run it to show that the cluster
//! still serves components of that version beside the current one.
//!
//! `input=PATH output=DIR`: reads lines from PATH, `upper` turns each into
//! upper case (keeping its key and timestamp), writes them to DIR. With
//! `split=LINK/OP count=LINK/OP` (operators of a component linked to the
//! job, e.g. Rust wordcount's), the upper-cased lines go through `split`
//! and then, partitioned by key, through `count` before being written: one
//! job across components of two contract versions.

wit_bindgen::generate!({
    path: "../../wit/v0.1/sluice.wit",
    world: "sluice:app/application",
});

use exports::sluice::app::app::{self, OperatorInfo, OperatorKind};
use exports::sluice::app::task::{self, ChainSpec, Output, SourceOutput, StateChunk};
use sluice::app::plan::{Edge, Graph, Implementation, Node, Partitioning};
use sluice::app::types::{Batch, Config, Error, RecordMeta, Timestamp};

struct Exports;

impl app::Guest for Exports {
    fn operators() -> Vec<OperatorInfo> {
        vec![OperatorInfo {
            name: "upper".into(),
            kind: OperatorKind::Map,
            description: "a record's value in upper case".into(),
        }]
    }

    fn plan(args: Config) -> Result<Graph, Error> {
        let arg = |name: &str| {
            args.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    Error::InvalidConfig(format!("missing argument `{name}` (pass {name}=...)"))
                })
        };
        let node = |name: &str, implementation, config: Config| Node {
            name: name.into(),
            implementation,
            parallelism: None,
            config,
            watermarks: None,
        };
        let edge = |source: &str, target: &str, partitioning| Edge {
            source: source.into(),
            target: target.into(),
            partitioning,
            target_input: 0,
        };
        let mut nodes = vec![
            node(
                "read",
                Implementation::Connector("file-source".into()),
                vec![("path".into(), arg("input")?)],
            ),
            node("upper", Implementation::Guest("upper".into()), Vec::new()),
            node(
                "write",
                Implementation::Connector("file-sink".into()),
                vec![("path".into(), arg("output")?)],
            ),
        ];
        let mut edges = vec![edge("read", "upper", Partitioning::Forward)];
        if args.iter().any(|(k, _)| k == "split" || k == "count") {
            nodes.push(node(
                "split",
                Implementation::Guest(arg("split")?),
                Vec::new(),
            ));
            nodes.push(node(
                "count",
                Implementation::Guest(arg("count")?),
                Vec::new(),
            ));
            edges.push(edge("upper", "split", Partitioning::Forward));
            edges.push(edge("split", "count", Partitioning::Hash));
            edges.push(edge("count", "write", Partitioning::Forward));
        } else {
            edges.push(edge("upper", "write", Partitioning::Forward));
        }
        Ok(Graph {
            nodes,
            edges,
            max_parallelism: None,
        })
    }
}

/// A chain of `upper` alone (the only operator there is).
struct Upper;

fn nothing() -> Output {
    Output {
        records: Batch {
            data: Vec::new(),
            meta: Vec::new(),
        },
        next_processing_timer: None,
    }
}

impl task::Guest for Exports {
    type Chain = Upper;
}

impl task::GuestChain for Upper {
    fn create(spec: ChainSpec) -> Result<task::Chain, Error> {
        match spec.operators.as_slice() {
            [op] if op.operator == "upper" && spec.restore.is_empty() => {
                Ok(task::Chain::new(Upper))
            }
            _ => Err(Error::InvalidConfig(
                "this application has one stateless operator, `upper`".into(),
            )),
        }
    }

    fn process(&self, _input: u32, records: Batch) -> Result<Output, Error> {
        // Keys are not values: only the value bytes change case.
        let mut data = records.data;
        let mut at = 0usize;
        for RecordMeta {
            key_len, value_len, ..
        } in &records.meta
        {
            if *key_len != u32::MAX {
                at += *key_len as usize;
            }
            let end = at + *value_len as usize;
            let value = data
                .get_mut(at..end)
                .ok_or_else(|| Error::Failed("a record runs past its batch's data".into()))?;
            value.make_ascii_uppercase();
            at = end;
        }
        Ok(Output {
            records: Batch {
                data,
                meta: records.meta,
            },
            next_processing_timer: None,
        })
    }

    fn poll_source(&self, _max_records: u32) -> Result<SourceOutput, Error> {
        Err(Error::Failed("`upper` is not a source".into()))
    }

    fn advance_watermark(&self, _watermark: Timestamp) -> Result<Output, Error> {
        Ok(nothing())
    }

    fn advance_processing_time(&self, _now: Timestamp) -> Result<Output, Error> {
        Ok(nothing())
    }

    fn end_of_input(&self) -> Result<Output, Error> {
        Ok(nothing())
    }

    fn snapshot(&self, _checkpoint_id: u64) -> Result<Vec<StateChunk>, Error> {
        Ok(Vec::new())
    }
}

export!(Exports);
