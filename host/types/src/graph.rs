//! The job graph an application's plan function returns, and its validation.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How records travel along an edge (mirrors the WIT `partitioning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Partitioning {
    /// Subtask i to subtask i.
    Forward,
    /// By key group of the record's key.
    Hash,
    /// Round-robin.
    Rebalance,
    /// To every subtask.
    Broadcast,
}

/// What runs at a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Implementation {
    /// An operator exported by the application, by name; `LINK/OPERATOR`
    /// names an operator of the component linked to the job as `LINK`
    /// (see [`split_operator`]).
    Guest(String),
    /// A host connector, by name.
    Connector(String),
}

impl Implementation {
    /// The link name of the component a guest operator comes from: `None`
    /// for the job's own component and for connectors.
    pub fn link(&self) -> Option<&str> {
        match self {
            Implementation::Guest(op) => split_operator(op).0,
            Implementation::Connector(_) => None,
        }
    }
}

/// Splits a guest operator's name into the link name of its component and
/// its name there: `"agg/count"` is `count` of the component linked as
/// `agg`; `"count"` is the job's own component's. Operators of different
/// components run in different instances, so they are never chained.
pub fn split_operator(op: &str) -> (Option<&str>, &str) {
    match op.split_once('/') {
        Some((link, name)) => (Some(link), name),
        None => (None, op),
    }
}

/// Kinds of guest operator (mirrors the WIT `operator-kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperatorKind {
    /// Produces records.
    Source,
    /// One in, at most one out.
    Map,
    /// Keeps or drops.
    Filter,
    /// One in, many out.
    FlatMap,
    /// Keyed state and timers.
    KeyedProcess,
    /// Two inputs, keyed.
    CoProcess,
    /// Consumes records.
    Sink,
}

impl OperatorKind {
    /// How many inputs an operator of this kind has.
    pub fn inputs(self) -> u32 {
        match self {
            OperatorKind::Source => 0,
            OperatorKind::CoProcess => 2,
            _ => 1,
        }
    }

    /// Whether it may have downstream edges.
    pub fn has_output(self) -> bool {
        self != OperatorKind::Sink
    }

    /// Whether its inputs must be partitioned by hash.
    pub fn keyed(self) -> bool {
        matches!(self, OperatorKind::KeyedProcess | OperatorKind::CoProcess)
    }
}

/// One node of a job graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique name.
    pub name: String,
    /// What runs there.
    pub implementation: Implementation,
    /// Parallelism, or the job's default.
    pub parallelism: Option<u32>,
    /// KEY=VALUE configuration.
    pub config: Vec<(String, String)>,
    /// Bounded out-of-orderness (ms) for host-generated watermarks.
    pub watermarks: Option<u64>,
}

impl NodeSpec {
    /// The last value of config key `key`.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One edge of a job graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSpec {
    /// Upstream node name.
    pub source: String,
    /// Downstream node name.
    pub target: String,
    /// How records are routed.
    pub partitioning: Partitioning,
    /// 0, or 1 for the second input of a two-input operator.
    pub target_input: u32,
}

/// The most key groups a job may have (Flink's limit too).
pub const MAX_KEY_GROUPS: u32 = 1 << 15;

/// A job's dataflow graph as the plan function returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobGraph {
    /// Nodes, in the order the application declared them.
    pub nodes: Vec<NodeSpec>,
    /// Edges.
    pub edges: Vec<EdgeSpec>,
    /// Number of key groups, if the application chose one.
    pub max_parallelism: Option<u32>,
}

/// A graph that cannot run; each variant names the offending part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// The graph has no nodes.
    #[error("the plan returned an empty graph")]
    Empty,
    /// Two nodes share a name.
    #[error("two nodes are named `{0}`")]
    DuplicateNode(String),
    /// An edge names a node that does not exist.
    #[error("edge {source_name} -> {target} names unknown node `{missing}`")]
    UnknownNode {
        /// Edge source.
        source_name: String,
        /// Edge target.
        target: String,
        /// The name that does not exist.
        missing: String,
    },
    /// A node names an operator the application does not export.
    #[error("node `{node}` names operator `{operator}`, which the application does not export")]
    UnknownOperator {
        /// Node name.
        node: String,
        /// Operator name.
        operator: String,
    },
    /// A node names an operator of a component not linked to the job.
    #[error("node `{node}` names operator `{operator}`: {problem}")]
    UnknownLink {
        /// Node name.
        node: String,
        /// Operator name, with its link name.
        operator: String,
        /// Which links exist.
        problem: String,
    },
    /// A component is linked to the job, but no node runs its operators.
    #[error("a component is linked to the job as `{0}`, but the plan runs none of its operators")]
    UnusedLink(String),
    /// A node names a connector the host does not have.
    #[error("node `{node}` names connector `{connector}`; available: {available}")]
    UnknownConnector {
        /// Node name.
        node: String,
        /// Connector name.
        connector: String,
        /// What exists.
        available: String,
    },
    /// The plan's number of key groups is out of range.
    #[error(
        "the plan sets max_parallelism to {0}; it must be between 1 and {MAX_KEY_GROUPS} (or unset for {default})",
        default = crate::keygroup::DEFAULT_MAX_PARALLELISM
    )]
    BadMaxParallelism(u32),
    /// Parallelism out of range.
    #[error("node `{node}` has parallelism {parallelism}; it must be between 1 and {max}")]
    BadParallelism {
        /// Node name.
        node: String,
        /// Requested.
        parallelism: u32,
        /// Upper bound (max parallelism or policy).
        max: u32,
    },
    /// Inputs do not match what the node's kind needs.
    #[error("node `{node}` {problem}")]
    BadInputs {
        /// Node name.
        node: String,
        /// What is wrong.
        problem: String,
    },
    /// A forward edge between nodes of different parallelism.
    #[error(
        "forward edge {source_name} -> {target} connects parallelism {source_parallelism} to {target_parallelism}; use rebalance or hash"
    )]
    ForwardParallelism {
        /// Edge source.
        source_name: String,
        /// Edge target.
        target: String,
        /// Its parallelism.
        source_parallelism: u32,
        /// Its parallelism.
        target_parallelism: u32,
    },
    /// The plan is larger than the policy allows.
    #[error(
        "the plan has {count} {what}; the policy allows at most {max} (quota `max_plan_{what}`)"
    )]
    TooLarge {
        /// `nodes` or `edges`.
        what: &'static str,
        /// How many the plan has.
        count: usize,
        /// The quota.
        max: u32,
    },
    /// The graph has a cycle through this node.
    #[error("the graph has a cycle through node `{0}`")]
    Cycle(String),
}

impl JobGraph {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Effective parallelism of `node` under the job's default.
    pub fn parallelism_of(node: &NodeSpec, default: u32) -> u32 {
        node.parallelism.unwrap_or(default)
    }

    /// Checks that the graph can run. `kind_of` gives the kind of a node
    /// (exported operator kinds for guests; connectors report theirs), or an
    /// error naming what is unknown.
    pub fn validate(
        &self,
        default_parallelism: u32,
        max_parallelism: u32,
        kind_of: &dyn Fn(&NodeSpec) -> Result<OperatorKind, GraphError>,
    ) -> Result<(), GraphError> {
        if self.nodes.is_empty() {
            return Err(GraphError::Empty);
        }
        if let Some(m) = self.max_parallelism
            && !(1..=MAX_KEY_GROUPS).contains(&m)
        {
            return Err(GraphError::BadMaxParallelism(m));
        }
        let mut names: HashMap<&str, &NodeSpec> = HashMap::new();
        let mut kinds = HashMap::new();
        for n in &self.nodes {
            if names.insert(n.name.as_str(), n).is_some() {
                return Err(GraphError::DuplicateNode(n.name.clone()));
            }
            let p = Self::parallelism_of(n, default_parallelism);
            if p == 0 || p > max_parallelism {
                return Err(GraphError::BadParallelism {
                    node: n.name.clone(),
                    parallelism: p,
                    max: max_parallelism,
                });
            }
            kinds.insert(n.name.as_str(), kind_of(n)?);
        }
        let mut inputs: HashMap<&str, Vec<&EdgeSpec>> = HashMap::new();
        let mut outputs: HashMap<&str, usize> = HashMap::new();
        for e in &self.edges {
            for end in [&e.source, &e.target] {
                if !names.contains_key(end.as_str()) {
                    return Err(GraphError::UnknownNode {
                        source_name: e.source.clone(),
                        target: e.target.clone(),
                        missing: end.clone(),
                    });
                }
            }
            inputs.entry(e.target.as_str()).or_default().push(e);
            *outputs.entry(e.source.as_str()).or_default() += 1;
            if e.partitioning == Partitioning::Forward {
                let (s, t) = (names[e.source.as_str()], names[e.target.as_str()]);
                let (ps, pt) = (
                    Self::parallelism_of(s, default_parallelism),
                    Self::parallelism_of(t, default_parallelism),
                );
                if ps != pt {
                    return Err(GraphError::ForwardParallelism {
                        source_name: e.source.clone(),
                        target: e.target.clone(),
                        source_parallelism: ps,
                        target_parallelism: pt,
                    });
                }
            }
        }
        for n in &self.nodes {
            let kind = kinds[n.name.as_str()];
            let ins = inputs
                .get(n.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let bad = |problem: String| GraphError::BadInputs {
                node: n.name.clone(),
                problem,
            };
            let wanted = kind.inputs();
            for input in 0..wanted {
                if !ins.iter().any(|e| e.target_input == input) {
                    return Err(bad(format!(
                        "({kind:?}) has nothing connected to input {input}"
                    )));
                }
            }
            if let Some(e) = ins.iter().find(|e| e.target_input >= wanted) {
                return Err(bad(format!(
                    "({kind:?}) has {wanted} input(s) but edge from `{}` targets input {}",
                    e.source, e.target_input
                )));
            }
            if let Some(e) = ins
                .iter()
                .find(|e| kind.keyed() && e.partitioning != Partitioning::Hash)
            {
                return Err(bad(format!(
                    "is keyed, so its input from `{}` must be partitioned by hash, not {:?}",
                    e.source, e.partitioning
                )));
            }
            if !kind.has_output() && outputs.get(n.name.as_str()).copied().unwrap_or(0) > 0 {
                return Err(bad("is a sink but has downstream edges".to_owned()));
            }
        }
        self.topological_order().map(|_| ())
    }

    /// Node indices in an order where every edge goes forward.
    pub fn topological_order(&self) -> Result<Vec<usize>, GraphError> {
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut indegree = vec![0usize; self.nodes.len()];
        let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for e in &self.edges {
            if let (Some(&s), Some(&t)) =
                (index.get(e.source.as_str()), index.get(e.target.as_str()))
            {
                indegree[t] += 1;
                downstream[s].push(t);
            }
        }
        let mut ready: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| indegree[i] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &t in &downstream[i] {
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(t);
                }
            }
        }
        match (0..self.nodes.len()).find(|&i| indegree[i] > 0) {
            Some(i) => Err(GraphError::Cycle(self.nodes[i].name.clone())),
            None => Ok(order),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, connector: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            implementation: Implementation::Connector(connector.into()),
            parallelism: None,
            config: vec![],
            watermarks: None,
        }
    }

    fn kind(n: &NodeSpec) -> Result<OperatorKind, GraphError> {
        Ok(match &n.implementation {
            Implementation::Connector(c) if c == "datagen" => OperatorKind::Source,
            _ => OperatorKind::Sink,
        })
    }

    fn pairs(n: usize) -> JobGraph {
        let mut g = JobGraph {
            nodes: vec![],
            edges: vec![],
            max_parallelism: None,
        };
        for i in 0..n {
            g.nodes.push(node(&format!("gen{i}"), "datagen"));
            g.nodes.push(node(&format!("sink{i}"), "blackhole"));
            g.edges.push(EdgeSpec {
                source: format!("gen{i}"),
                target: format!("sink{i}"),
                partitioning: Partitioning::Forward,
                target_input: 0,
            });
        }
        g
    }

    #[test]
    fn a_max_parallelism_out_of_range_is_refused_naming_the_range() {
        for bad in [0, MAX_KEY_GROUPS + 1] {
            let mut g = pairs(1);
            g.max_parallelism = Some(bad);
            let err = g.validate(1, 1, &kind).expect_err("out of range");
            assert_eq!(err, GraphError::BadMaxParallelism(bad));
            assert!(
                err.to_string()
                    .contains(&format!("between 1 and {MAX_KEY_GROUPS}")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_graph_of_many_nodes_validates_and_orders_every_node() {
        let g = pairs(8_000);
        g.validate(1, 128, &kind).expect("valid");
        let order = g.topological_order().expect("acyclic");
        assert_eq!(order.len(), 16_000);
        let position: HashMap<usize, usize> =
            order.iter().enumerate().map(|(at, n)| (*n, at)).collect();
        for (i, e) in g.edges.iter().enumerate() {
            let (s, t) = (2 * i, 2 * i + 1);
            assert!(position[&s] < position[&t], "{e:?}");
        }
    }
}
