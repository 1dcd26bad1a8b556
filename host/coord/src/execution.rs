//! From job graph to execution graph: chaining and channels.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sluice_types::{EdgeSpec, Implementation, JobGraph, NodeSpec, Partitioning};

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
    /// and B's only input, their parallelism is equal, and, both being guest
    /// operators, they come from the same component (a chain's operators run
    /// in one instance).
    pub fn build(graph: &JobGraph, default_parallelism: u32, max_parallelism: u32) -> Self {
        let order = graph
            .topological_order()
            .expect("invariant: graph was validated");
        let n = graph.nodes.len();
        // Linear in nodes + edges: a plan's size is the tenant's to choose.
        let index: HashMap<&str, usize> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, x)| (x.name.as_str(), i))
            .collect();
        let index = |name: &str| *index.get(name).expect("validated");
        let mut outs: Vec<Vec<&EdgeSpec>> = vec![Vec::new(); n];
        let mut in_count = vec![0usize; n];
        for e in &graph.edges {
            outs[index(&e.source)].push(e);
            in_count[index(&e.target)] += 1;
        }
        let par = |i: usize| JobGraph::parallelism_of(&graph.nodes[i], default_parallelism);
        let one_instance = |a: usize, b: usize| {
            let (a, b) = (
                &graph.nodes[a].implementation,
                &graph.nodes[b].implementation,
            );
            match (a, b) {
                (Implementation::Guest(_), Implementation::Guest(_)) => a.link() == b.link(),
                _ => true,
            }
        };

        // chained_to[b] = Some(a) when b continues a's chain (then b is a's
        // only output: next[a] = Some(b)).
        let mut chained_to = vec![None; n];
        let mut next = vec![None; n];
        for i in 0..n {
            if let [e] = outs[i].as_slice() {
                let t = index(&e.target);
                if e.partitioning == Partitioning::Forward
                    && in_count[t] == 1
                    && par(i) == par(t)
                    && one_instance(i, t)
                {
                    chained_to[t] = Some(i);
                    next[i] = Some(t);
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
            while let Some(t) = next[cur] {
                chain.push(t);
                cur = t;
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
    use proptest::prelude::*;

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
    fn operators_of_two_components_are_chained_only_to_their_own() {
        use Implementation::*;
        let graph = JobGraph {
            nodes: vec![
                node("read", Connector("file-source".into()), None),
                node("parse", Guest("parse".into()), None),
                node("enrich", Guest("lib/enrich".into()), None),
                node("tag", Guest("lib/tag".into()), None),
                node("write", Connector("file-sink".into()), None),
            ],
            edges: vec![
                edge("read", "parse", Partitioning::Forward),
                edge("parse", "enrich", Partitioning::Forward),
                edge("enrich", "tag", Partitioning::Forward),
                edge("tag", "write", Partitioning::Forward),
            ],
            max_parallelism: None,
        };
        let g = ExecutionGraph::build(&graph, 2, 128);
        let names: Vec<_> = g.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["read -> parse", "enrich -> tag -> write"]);
        // The forward edge between them stays one channel per subtask.
        assert_eq!(g.channel_count(), 2);
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

    /// A random DAG: edges only from lower to higher node indices.
    fn dag() -> impl Strategy<Value = JobGraph> {
        (1usize..12).prop_flat_map(|n| {
            let edges = proptest::collection::vec((0..n, 0..n, 0u8..3), 0..(n * 3));
            let pars = proptest::collection::vec(1u32..3, n);
            (Just(n), edges, pars).prop_map(|(n, edges, pars)| {
                let nodes = (0..n)
                    .map(|i| {
                        node(
                            &format!("n{i}"),
                            Implementation::Guest("op".into()),
                            Some(pars[i]),
                        )
                    })
                    .collect();
                let edges = edges
                    .into_iter()
                    .filter(|(a, b, _)| a < b)
                    .map(|(a, b, p)| {
                        let p = [
                            Partitioning::Forward,
                            Partitioning::Rebalance,
                            Partitioning::Hash,
                        ][p as usize];
                        edge(&format!("n{a}"), &format!("n{b}"), p)
                    })
                    .collect();
                JobGraph {
                    nodes,
                    edges,
                    max_parallelism: None,
                }
            })
        })
    }

    proptest! {
        #[test]
        fn chains_follow_the_rule_and_vertices_cover_the_graph_in_order(graph in dag()) {
            let g = ExecutionGraph::build(&graph, 1, 128);
            let outs = |name: &str| graph.edges.iter().filter(|e| e.source == name).count();
            let ins = |name: &str| graph.edges.iter().filter(|e| e.target == name).count();
            let par = |name: &str| graph.node(name).and_then(|n| n.parallelism);
            let chainable = |a: &str, b: &str| {
                outs(a) == 1
                    && ins(b) == 1
                    && par(a) == par(b)
                    && graph.edges.iter().any(|e| {
                        e.source == a && e.target == b && e.partitioning == Partitioning::Forward
                    })
            };
            // Every node in exactly one vertex; inside one, each link obeys the rule.
            let mut seen: Vec<&str> = Vec::new();
            let mut chained = 0;
            for v in &g.vertices {
                for pair in v.nodes.windows(2) {
                    prop_assert!(chainable(&pair[0].name, &pair[1].name));
                    chained += 1;
                }
                seen.extend(v.nodes.iter().map(|x| x.name.as_str()));
            }
            seen.sort_unstable();
            let mut all: Vec<&str> = graph.nodes.iter().map(|x| x.name.as_str()).collect();
            all.sort_unstable();
            prop_assert_eq!(seen, all);
            // A head is never chainable to a predecessor.
            for v in &g.vertices {
                let head = &v.nodes[0].name;
                prop_assert!(!graph.nodes.iter().any(|a| chainable(&a.name, head)));
            }
            // The other edges join vertices, always forward in the order.
            let links: usize = g.vertices.iter().map(|v| v.outputs.len()).sum();
            prop_assert_eq!(links, graph.edges.len() - chained);
            for (i, v) in g.vertices.iter().enumerate() {
                prop_assert!(v.outputs.iter().all(|o| o.vertex as usize > i));
            }
        }
    }
}
