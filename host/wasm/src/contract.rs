//! Every version of the contract the host serves, behind one interface: a
//! component implements one of them (its exports say which), and the rest
//! of the host sees only its own types.
//!
//! 0.2.0 and 0.1.0 differ only in how a batch's metadata crosses (bytes
//! versus a list of records); everything else converts the same way, so
//! one macro writes the calls of both.

use sluice_types::{
    Batch, EdgeSpec, Implementation, JobGraph, NodeSpec, OperatorKind, Partitioning, RecordMeta,
};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, ResourceAny};

use crate::bindings::{v1, v2};
use crate::host::HostState;
use crate::instance::{ChainSpec, OperatorInfo, StateChunk};

/// The versions served, newest first (named in errors).
pub(crate) const VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];

/// An error the application itself reported.
pub(crate) enum AppError {
    /// `error.failed`.
    Failed(String),
    /// `error.invalid-config`.
    InvalidConfig(String),
}

/// What a guest call returns: a trap (outer), the application's error
/// (inner), or the result.
pub(crate) type Call<R> = wasmtime::Result<Result<R, AppError>>;

/// A batch as a guest returned it, not yet checked.
pub(crate) struct RawBatch {
    pub(crate) data: Vec<u8>,
    meta: RawMeta,
}

enum RawMeta {
    /// 0.1.0: already records.
    Records(Vec<RecordMeta>),
    /// 0.2.0: packed, 16 bytes per record.
    Packed(Vec<u8>),
}

impl RawBatch {
    /// How many records the guest says it returned (a partial packed
    /// record counts as one, so that it is not free).
    pub(crate) fn records(&self) -> u64 {
        match &self.meta {
            RawMeta::Records(m) => m.len() as u64,
            RawMeta::Packed(m) => m.len().div_ceil(RecordMeta::PACKED) as u64,
        }
    }

    /// The batch, or why its metadata is malformed (its lengths are
    /// checked against the buffer separately, by `Batch::validate`).
    pub(crate) fn into_batch(self) -> Result<Batch, String> {
        let meta = match self.meta {
            RawMeta::Records(m) => m,
            RawMeta::Packed(m) => RecordMeta::unpack(&m).map_err(|e| e.to_string())?,
        };
        Ok(Batch {
            data: self.data,
            meta,
        })
    }
}

/// What a chain call produced, not yet checked.
pub(crate) struct RawOutput {
    pub(crate) records: RawBatch,
    pub(crate) next_processing_timer: Option<i64>,
}

/// What a source chain's poll produced, not yet checked.
pub(crate) struct RawSourceOutput {
    pub(crate) output: RawOutput,
    pub(crate) watermark: Option<i64>,
    pub(crate) finished: bool,
}

/// A component ready to instantiate, with the version it implements.
#[derive(Clone)]
pub(crate) enum Pre {
    V2(v2::ApplicationPre<HostState>),
    V1(v1::ApplicationPre<HostState>),
}

impl Pre {
    /// Binds `pre` to the version `component` exports (the newest, if it
    /// exports none: the error then names what is missing from it).
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        component: &Component,
        pre: InstancePre<HostState>,
    ) -> wasmtime::Result<Self> {
        let implements_v1 = component
            .component_type()
            .exports(engine)
            .any(|(name, _)| name.starts_with("sluice:app/") && name.ends_with("@0.1.0"));
        if implements_v1 {
            Ok(Pre::V1(v1::ApplicationPre::new(pre)?))
        } else {
            Ok(Pre::V2(v2::ApplicationPre::new(pre)?))
        }
    }

    /// A new instance in `store`.
    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            Pre::V2(p) => Guest::V2(p.instantiate(store)?),
            Pre::V1(p) => Guest::V1(p.instantiate(store)?),
        })
    }
}

/// One instance's exports.
pub(crate) enum Guest {
    V2(v2::Application),
    V1(v1::Application),
}

/// Writes the calls into one version's bindings (`crate::bindings::$v`),
/// converting between its types and the host's; `$to_meta` and `$from_meta`
/// convert a batch's metadata.
macro_rules! calls {
    ($calls:ident, $v:ident, $to_meta:path, $from_meta:path) => {
        mod $calls {
            use super::*;
            use crate::bindings::$v::Application;
            use crate::bindings::$v::exports::sluice::app::{app, task};
            use crate::bindings::$v::sluice::app::{plan, types};

            fn app_result<R>(r: Result<R, types::Error>) -> Result<R, AppError> {
                r.map_err(|e| match e {
                    types::Error::Failed(m) => AppError::Failed(m),
                    types::Error::InvalidConfig(m) => AppError::InvalidConfig(m),
                })
            }

            fn output(o: task::Output) -> RawOutput {
                RawOutput {
                    records: RawBatch {
                        data: o.records.data,
                        meta: $from_meta(o.records.meta),
                    },
                    next_processing_timer: o.next_processing_timer,
                }
            }

            fn kind(k: app::OperatorKind) -> OperatorKind {
                use app::OperatorKind as K;
                match k {
                    K::Source => OperatorKind::Source,
                    K::Map => OperatorKind::Map,
                    K::Filter => OperatorKind::Filter,
                    K::FlatMap => OperatorKind::FlatMap,
                    K::KeyedProcess => OperatorKind::KeyedProcess,
                    K::CoProcess => OperatorKind::CoProcess,
                    K::Sink => OperatorKind::Sink,
                }
            }

            fn graph(g: plan::Graph) -> JobGraph {
                JobGraph {
                    nodes: g
                        .nodes
                        .into_iter()
                        .map(|n| NodeSpec {
                            name: n.name,
                            implementation: match n.implementation {
                                plan::Implementation::Guest(s) => Implementation::Guest(s),
                                plan::Implementation::Connector(s) => Implementation::Connector(s),
                            },
                            parallelism: n.parallelism,
                            config: n.config,
                            watermarks: n.watermarks.map(|w| w.max_out_of_orderness_ms),
                        })
                        .collect(),
                    edges: g
                        .edges
                        .into_iter()
                        .map(|e| EdgeSpec {
                            source: e.source,
                            target: e.target,
                            partitioning: match e.partitioning {
                                plan::Partitioning::Forward => Partitioning::Forward,
                                plan::Partitioning::Hash => Partitioning::Hash,
                                plan::Partitioning::Rebalance => Partitioning::Rebalance,
                                plan::Partitioning::Broadcast => Partitioning::Broadcast,
                            },
                            target_input: e.target_input,
                        })
                        .collect(),
                    max_parallelism: g.max_parallelism,
                }
            }

            pub(super) fn operators(
                b: &Application,
                s: &mut Store<HostState>,
            ) -> wasmtime::Result<Vec<OperatorInfo>> {
                Ok(b.sluice_app_app()
                    .call_operators(s)?
                    .into_iter()
                    .map(|o| OperatorInfo {
                        name: o.name,
                        kind: kind(o.kind),
                        description: o.description,
                    })
                    .collect())
            }

            pub(super) fn plan(
                b: &Application,
                s: &mut Store<HostState>,
                args: &[(String, String)],
            ) -> Call<JobGraph> {
                Ok(app_result(b.sluice_app_app().call_plan(s, &args.to_vec())?).map(graph))
            }

            pub(super) fn create(
                b: &Application,
                s: &mut Store<HostState>,
                spec: ChainSpec,
            ) -> Call<ResourceAny> {
                let spec = task::ChainSpec {
                    operators: spec
                        .operators
                        .into_iter()
                        .map(|(operator, node, config)| task::OperatorSpec {
                            operator,
                            node,
                            config,
                        })
                        .collect(),
                    subtask: spec.subtask,
                    parallelism: spec.parallelism,
                    max_parallelism: spec.max_parallelism,
                    restore: spec
                        .restore
                        .into_iter()
                        .map(|c| task::StateChunk {
                            operator: c.operator,
                            key_group: c.key_group,
                            data: c.data,
                        })
                        .collect(),
                };
                Ok(app_result(
                    b.sluice_app_task().chain().call_create(s, &spec)?,
                ))
            }

            pub(super) fn process(
                b: &Application,
                s: &mut Store<HostState>,
                h: ResourceAny,
                input: u32,
                batch: Batch,
            ) -> Call<RawOutput> {
                let batch = types::Batch {
                    data: batch.data,
                    meta: $to_meta(&batch.meta),
                };
                let out = b
                    .sluice_app_task()
                    .chain()
                    .call_process(s, h, input, &batch)?;
                Ok(app_result(out).map(output))
            }

            pub(super) fn poll_source(
                b: &Application,
                s: &mut Store<HostState>,
                h: ResourceAny,
                max: u32,
            ) -> Call<RawSourceOutput> {
                let out = b.sluice_app_task().chain().call_poll_source(s, h, max)?;
                Ok(app_result(out).map(|o| RawSourceOutput {
                    output: output(o.output),
                    watermark: o.watermark,
                    finished: o.finished,
                }))
            }

            pub(super) fn advance_watermark(
                b: &Application,
                s: &mut Store<HostState>,
                h: ResourceAny,
                wm: i64,
            ) -> Call<RawOutput> {
                let out = b
                    .sluice_app_task()
                    .chain()
                    .call_advance_watermark(s, h, wm)?;
                Ok(app_result(out).map(output))
            }

            pub(super) fn advance_processing_time(
                b: &Application,
                s: &mut Store<HostState>,
                h: ResourceAny,
                now: i64,
            ) -> Call<RawOutput> {
                let out = b
                    .sluice_app_task()
                    .chain()
                    .call_advance_processing_time(s, h, now)?;
                Ok(app_result(out).map(output))
            }

            pub(super) fn end_of_input(
                b: &Application,
                s: &mut Store<HostState>,
                h: ResourceAny,
            ) -> Call<RawOutput> {
                let out = b.sluice_app_task().chain().call_end_of_input(s, h)?;
                Ok(app_result(out).map(output))
            }

            pub(super) fn snapshot(
                b: &Application,
                s: &mut Store<HostState>,
                h: ResourceAny,
                checkpoint: u64,
            ) -> Call<Vec<StateChunk>> {
                let out = b
                    .sluice_app_task()
                    .chain()
                    .call_snapshot(s, h, checkpoint)?;
                Ok(app_result(out).map(|chunks| {
                    chunks
                        .into_iter()
                        .map(|c| StateChunk {
                            operator: c.operator,
                            key_group: c.key_group,
                            data: c.data,
                        })
                        .collect()
                }))
            }
        }
    };
}

fn meta_to_v1(meta: &[RecordMeta]) -> Vec<v1::sluice::app::types::RecordMeta> {
    meta.iter()
        .map(|m| v1::sluice::app::types::RecordMeta {
            key_len: m.key_len,
            value_len: m.value_len,
            timestamp: m.timestamp,
        })
        .collect()
}

fn meta_from_v1(meta: Vec<v1::sluice::app::types::RecordMeta>) -> RawMeta {
    RawMeta::Records(
        meta.into_iter()
            .map(|m| RecordMeta {
                key_len: m.key_len,
                value_len: m.value_len,
                timestamp: m.timestamp,
            })
            .collect(),
    )
}

fn meta_from_v2(meta: Vec<u8>) -> RawMeta {
    RawMeta::Packed(meta)
}

calls!(calls_v1, v1, meta_to_v1, meta_from_v1);
calls!(calls_v2, v2, RecordMeta::pack, meta_from_v2);

/// Dispatches a call to the version's bindings.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        match $self {
            Guest::V2(b) => calls_v2::$f(b, $($arg),*),
            Guest::V1(b) => calls_v1::$f(b, $($arg),*),
        }
    };
}

impl Guest {
    pub(crate) fn operators(&self, s: &mut Store<HostState>) -> Call<Vec<OperatorInfo>> {
        dispatch!(self, operators(s)).map(Ok)
    }

    pub(crate) fn plan(
        &self,
        s: &mut Store<HostState>,
        args: &[(String, String)],
    ) -> Call<JobGraph> {
        dispatch!(self, plan(s, args))
    }

    pub(crate) fn create(&self, s: &mut Store<HostState>, spec: ChainSpec) -> Call<ResourceAny> {
        dispatch!(self, create(s, spec))
    }

    pub(crate) fn process(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        input: u32,
        batch: Batch,
    ) -> Call<RawOutput> {
        dispatch!(self, process(s, h, input, batch))
    }

    pub(crate) fn poll_source(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        max: u32,
    ) -> Call<RawSourceOutput> {
        dispatch!(self, poll_source(s, h, max))
    }

    pub(crate) fn advance_watermark(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        wm: i64,
    ) -> Call<RawOutput> {
        dispatch!(self, advance_watermark(s, h, wm))
    }

    pub(crate) fn advance_processing_time(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: i64,
    ) -> Call<RawOutput> {
        dispatch!(self, advance_processing_time(s, h, now))
    }

    pub(crate) fn end_of_input(&self, s: &mut Store<HostState>, h: ResourceAny) -> Call<RawOutput> {
        dispatch!(self, end_of_input(s, h))
    }

    pub(crate) fn snapshot(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        checkpoint: u64,
    ) -> Call<Vec<StateChunk>> {
        dispatch!(self, snapshot(s, h, checkpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_metadata_of_a_partial_record_is_malformed_and_still_counted() {
        let raw = RawBatch {
            data: vec![7; 3],
            meta: RawMeta::Packed(vec![0; 20]),
        };
        assert_eq!(
            raw.records(),
            2,
            "a partial record counts against the output cap"
        );
        let err = raw.into_batch().expect_err("20 bytes are no whole record");
        assert!(err.contains("its metadata has 20 bytes"), "{err}");
    }

    #[test]
    fn both_versions_carry_the_same_batch() {
        let meta = [
            RecordMeta {
                key_len: 1,
                value_len: 2,
                timestamp: -5,
            },
            RecordMeta {
                key_len: sluice_types::NO_KEY,
                value_len: 0,
                timestamp: sluice_types::NO_TIMESTAMP,
            },
        ];
        let v1 = RawBatch {
            data: vec![1, 2, 3],
            meta: meta_from_v1(meta_to_v1(&meta)),
        };
        let v2 = RawBatch {
            data: vec![1, 2, 3],
            meta: meta_from_v2(RecordMeta::pack(&meta)),
        };
        assert_eq!((v1.records(), v2.records()), (2, 2));
        let (v1, v2) = (v1.into_batch(), v2.into_batch());
        assert_eq!(v1, v2);
        assert_eq!(v1.map(|b| b.meta), Ok(meta.to_vec()));
    }
}
