//! From job graph to execution graph: chaining and channels.

use serde::{Deserialize, Serialize};
use sluice_types::{JobGraph, NodeSpec, Partitioning};

/// One physical channel between two subtasks.
pub type ChannelId = u32;

/// A subtask: vertex index and subtask index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    /// Index into [`ExecutionGraph::vertices`].
    pub vertex: u32,
    /// Subtask index within the vertex.
    pub subtask: u32,
}

/// An edge between two vertices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexEdge {
    /// The other vertex.
    pub vertex: u32,
    /// How records are routed.
    pub partitioning: Partitioning,
    /// Input index at the downstream end.
    pub input: u32,
}

/// A chain of nodes that runs as one task per subtask: records pass between
/// its nodes by function call, never through a channel. Chained guest
/// operators run inside one guest call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// Node names joined by ` -> `, as in Flink's web UI.
    pub name: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// The chained nodes, head first.
    pub nodes: Vec<NodeSpec>,
    /// Upstream vertices.
    pub inputs: Vec<VertexEdge>,
    /// Downstream vertices.
    pub outputs: Vec<VertexEdge>,
}

/// Where one output edge of a subtask sends its records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// How records are routed among `channels`.
    pub partitioning: Partitioning,
    /// One channel per downstream subtask, indexed by subtask (a single one
    /// for forward edges).
    pub channels: Vec<ChannelId>,
    /// Parallelism of the downstream vertex.
    pub target_parallelism: u32,
}

/// Everything a TaskManager needs to run one subtask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDeployment {
    /// Which subtask.
    pub task: TaskId,
    /// The vertex's display name.
    pub name: String,
    /// The vertex's parallelism.
    pub parallelism: u32,
    /// The job's number of key groups.
    pub max_parallelism: u32,
    /// The chained nodes, head first.
    pub nodes: Vec<NodeSpec>,
    /// Input channels with the input index each feeds.
    pub inputs: Vec<(ChannelId, u32)>,
    /// Output edges.
    pub outputs: Vec<OutputSpec>,
}

/// A job graph chained into vertices, with every channel numbered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionGraph {
    /// Vertices in topological order.
    pub vertices: Vec<Vertex>,
    /// Number of key groups.
    pub max_parallelism: u32,
}

impl ExecutionGraph {
    /// Chains a *validated* job graph (see [`JobGraph::validate`]): node B
    /// joins A's chain when a forward edge connects them, it is A's only output
    /// and B's only input, and their parallelism is equal.
    pub fn build(graph: &JobGraph, default_parallelism: u32, max_parallelism: u32) -> Self {
        let order = graph
            .topological_order()
            .expect("invariant: graph was validated");
        let n = graph.nodes.len();
        let outs = |i: usize| {
            graph
                .edges
                .iter()
                .filter(move |e| e.source == graph.nodes[i].name)
        };
        let ins = |i: usize| {
            graph
                .edges
                .iter()
                .filter(move |e| e.target == graph.nodes[i].name)
        };
        let index = |name: &str| {
            graph
                .nodes
                .iter()
                .position(|x| x.name == name)
                .expect("validated")
        };
        let par = |i: usize| JobGraph::parallelism_of(&graph.nodes[i], default_parallelism);

        // chained_to[b] = Some(a) when b continues a's chain.
        let mut chained_to = vec![None; n];
        for i in 0..n {
            let o: Vec<_> = outs(i).collect();
            if let [e] = o.as_slice() {
                let t = index(&e.target);
                if e.partitioning == Partitioning::Forward
                    && ins(t).count() == 1
                    && par(i) == par(t)
                {
                    chained_to[t] = Some(i);
                }
            }
        }
        let mut vertex_of = vec![usize::MAX; n];
        let mut vertices: Vec<Vertex> = Vec::new();
        for &i in &order {
            if chained_to[i].is_some() {
                continue;
            }
            let v = vertices.len();
            let mut chain = vec![i];
            let mut cur = i;
            while let Some(next) = (0..n).find(|&t| chained_to[t] == Some(cur)) {
                chain.push(next);
                cur = next;
            }
            for &c in &chain {
                vertex_of[c] = v;
            }
            vertices.push(Vertex {
                name: chain
                    .iter()
                    .map(|&c| graph.nodes[c].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> "),
                parallelism: par(i),
                nodes: chain.iter().map(|&c| graph.nodes[c].clone()).collect(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            });
        }
        for e in &graph.edges {
            let (s, t) = (index(&e.source), index(&e.target));
            if chained_to[t] == Some(s) {
                continue;
            }
            let (vs, vt) = (vertex_of[s], vertex_of[t]);
            vertices[vs].outputs.push(VertexEdge {
                vertex: vt as u32,
                partitioning: e.partitioning,
                input: e.target_input,
            });
            vertices[vt].inputs.push(VertexEdge {
                vertex: vs as u32,
                partitioning: e.partitioning,
                input: e.target_input,
            });
        }
        // Heads were visited in topological order, so edges point forward.
        ExecutionGraph {
            vertices,
            max_parallelism,
        }
    }

    /// Slots needed with slot sharing: one slot holds one subtask of every vertex.
    pub fn slots_needed(&self) -> u32 {
        self.vertices
            .iter()
            .map(|v| v.parallelism)
            .max()
            .unwrap_or(0)
    }

    /// All subtasks.
    pub fn tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.vertices.iter().enumerate().flat_map(|(v, vx)| {
            (0..vx.parallelism).map(move |s| TaskId {
                vertex: v as u32,
                subtask: s,
            })
        })
    }

    /// The channels of every (vertex output edge, source subtask, target
    /// subtask) triple, numbered densely in a fixed order.
    fn channel_id(&self, from: u32, out_edge: usize, s: u32, t: u32) -> ChannelId {
        let mut id = 0u32;
        for (v, vx) in self.vertices.iter().enumerate() {
            for (k, e) in vx.outputs.iter().enumerate() {
                let tp = self.vertices[e.vertex as usize].parallelism;
                let per_source = if e.partitioning == Partitioning::Forward {
                    1
                } else {
                    tp
                };
                if v as u32 == from && k == out_edge {
                    let within = if e.partitioning == Partitioning::Forward {
                        0
                    } else {
                        t
                    };
                    return id + s * per_source + within;
                }
                id += vx.parallelism * per_source;
            }
        }
        unreachable!("invariant: edge {from}/{out_edge} exists")
    }

    /// Total number of channels.
    pub fn channel_count(&self) -> u32 {
        self.vertices
            .iter()
            .flat_map(|vx| {
                vx.outputs.iter().map(|e| {
                    let tp = self.vertices[e.vertex as usize].parallelism;
                    vx.parallelism
                        * if e.partitioning == Partitioning::Forward {
                            1
                        } else {
                            tp
                        }
                })
            })
            .sum()
    }

    /// The deployment descriptor of one subtask.
    pub fn deployment(&self, task: TaskId) -> TaskDeployment {
        let vx = &self.vertices[task.vertex as usize];
        let mut inputs = Vec::new();
        for (u, ux) in self.vertices.iter().enumerate() {
            for (k, e) in ux.outputs.iter().enumerate() {
                if e.vertex != task.vertex {
                    continue;
                }
                if e.partitioning == Partitioning::Forward {
                    inputs.push((
                        self.channel_id(u as u32, k, task.subtask, task.subtask),
                        e.input,
                    ));
                } else {
                    for s in 0..ux.parallelism {
                        inputs.push((self.channel_id(u as u32, k, s, task.subtask), e.input));
                    }
                }
            }
        }
        let outputs = vx
            .outputs
            .iter()
            .enumerate()
            .map(|(k, e)| {
                let tp = self.vertices[e.vertex as usize].parallelism;
                let channels = if e.partitioning == Partitioning::Forward {
                    vec![self.channel_id(task.vertex, k, task.subtask, task.subtask)]
                } else {
                    (0..tp)
                        .map(|t| self.channel_id(task.vertex, k, task.subtask, t))
                        .collect()
                };
                OutputSpec {
                    partitioning: e.partitioning,
                    channels,
                    target_parallelism: tp,
                }
            })
            .collect();
        TaskDeployment {
            task,
            name: vx.name.clone(),
            parallelism: vx.parallelism,
            max_parallelism: self.max_parallelism,
            nodes: vx.nodes.clone(),
            inputs,
            outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::{EdgeSpec, Implementation};
    use std::collections::HashMap;

    fn node(name: &str, imp: Implementation, p: Option<u32>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            implementation: imp,
            parallelism: p,
            config: vec![],
            watermarks: None,
        }
    }

    fn edge(s: &str, t: &str, p: Partitioning) -> EdgeSpec {
        EdgeSpec {
            source: s.into(),
            target: t.into(),
            partitioning: p,
            target_input: 0,
        }
    }

    fn wordcount() -> JobGraph {
        use Implementation::*;
        JobGraph {
            nodes: vec![
                node("read", Connector("file-source".into()), None),
                node("split", Guest("split".into()), None),
                node("count", Guest("count".into()), None),
                node("write", Connector("file-sink".into()), None),
            ],
            edges: vec![
                edge("read", "split", Partitioning::Forward),
                edge("split", "count", Partitioning::Hash),
                edge("count", "write", Partitioning::Forward),
            ],
            max_parallelism: None,
        }
    }

    #[test]
    fn wordcount_chains_into_two_vertices_split_by_the_hash_edge() {
        let g = ExecutionGraph::build(&wordcount(), 4, 128);
        let names: Vec<_> = g.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["read -> split", "count -> write"]);
        assert_eq!(g.channel_count(), 16);
    }

    #[test]
    fn every_channel_has_exactly_one_sender_and_one_receiver() {
        let mut graph = wordcount();
        graph.nodes[2].parallelism = Some(3);
        graph.nodes[3].parallelism = Some(3);
        for p in 1..=5 {
            let g = ExecutionGraph::build(&graph, p, 128);
            let mut senders: HashMap<ChannelId, usize> = HashMap::new();
            let mut receivers: HashMap<ChannelId, usize> = HashMap::new();
            for t in g.tasks() {
                let d = g.deployment(t);
                for o in &d.outputs {
                    for &c in &o.channels {
                        *senders.entry(c).or_default() += 1;
                    }
                }
                for &(c, _) in &d.inputs {
                    *receivers.entry(c).or_default() += 1;
                }
            }
            assert_eq!(senders.len() as u32, g.channel_count(), "p={p}");
            assert!(senders.values().all(|&n| n == 1));
            assert_eq!(
                senders.keys().collect::<std::collections::BTreeSet<_>>(),
                receivers.keys().collect()
            );
            assert!(receivers.values().all(|&n| n == 1));
        }
    }

    #[test]
    fn a_node_with_two_inputs_is_never_chained() {
        use Implementation::*;
        let graph = JobGraph {
            nodes: vec![
                node("a", Connector("datagen".into()), None),
                node("b", Connector("datagen".into()), None),
                node("join", Guest("join".into()), None),
            ],
            edges: vec![
                edge("a", "join", Partitioning::Forward),
                edge("b", "join", Partitioning::Forward),
            ],
            max_parallelism: None,
        };
        let g = ExecutionGraph::build(&graph, 2, 128);
        assert_eq!(g.vertices.len(), 3);
        assert_eq!(g.vertices[2].inputs.len(), 2);
    }
}
