//! Building a job's dataflow graph in the plan function.

use crate::bindings::sluice::app::plan;
use crate::{Error, invalid_config};

/// A job's (or an operator's) KEY=VALUE arguments.
#[derive(Clone, Debug, Default)]
pub struct Args(pub(crate) Vec<(String, String)>);

impl Args {
    /// Wraps KEY=VALUE pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Args(pairs)
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an `invalid-config` error naming it.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key).ok_or_else(|| {
            invalid_config(format!("missing argument `{key}` (pass --arg {key}=...)"))
        })
    }

    /// Parses the value of `key`, or returns `default` when it is absent.
    pub fn parse_or<T: core::str::FromStr>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T::Err: core::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| invalid_config(format!("argument `{key}={v}` is invalid: {e}"))),
        }
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A node of the graph being built.
#[derive(Clone, Debug)]
pub struct Node(plan::Node);

impl Node {
    /// A node running the operator this component exports as `operator`;
    /// `LINK/OPERATOR` runs an operator of the component linked to the job
    /// as `LINK` (`sluice run app.wasm --with LINK=other.wasm`), which may
    /// be written in another language.
    pub fn guest(name: &str, operator: &str) -> Self {
        Self::new(name, plan::Implementation::Guest(operator.to_owned()))
    }

    /// A node running a host connector (`file-source`, `file-sink`,
    /// `datagen`, `print`, `blackhole`).
    pub fn connector(name: &str, connector: &str) -> Self {
        Self::new(name, plan::Implementation::Connector(connector.to_owned()))
    }

    fn new(name: &str, implementation: plan::Implementation) -> Self {
        Node(plan::Node {
            name: name.to_owned(),
            implementation,
            parallelism: None,
            config: Vec::new(),
            watermarks: None,
        })
    }

    /// Sets this node's parallelism (default: the job's).
    pub fn parallelism(mut self, n: u32) -> Self {
        self.0.parallelism = Some(n);
        self
    }

    /// Adds a configuration entry.
    pub fn config(mut self, key: &str, value: impl ToString) -> Self {
        self.0.config.push((key.to_owned(), value.to_string()));
        self
    }

    /// Generates watermarks from this node's output timestamps, allowing
    /// records to be up to `max_out_of_orderness_ms` late.
    pub fn watermarks(mut self, max_out_of_orderness_ms: u64) -> Self {
        self.0.watermarks = Some(plan::WatermarkStrategy {
            max_out_of_orderness_ms,
        });
        self
    }
}

/// Refers to a node added to a [`Graph`].
#[derive(Clone, Debug)]
pub struct NodeId(String);

/// A dataflow graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<plan::Node>,
    edges: Vec<plan::Edge>,
    max_parallelism: Option<u32>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node.
    pub fn add(&mut self, node: Node) -> NodeId {
        let id = NodeId(node.0.name.clone());
        self.nodes.push(node.0);
        id
    }

    /// Sets the number of key groups (the upper bound of keyed parallelism).
    pub fn max_parallelism(&mut self, n: u32) -> &mut Self {
        self.max_parallelism = Some(n);
        self
    }

    /// Connects `from` to input `input` of `to`.
    pub fn edge(
        &mut self,
        from: &NodeId,
        to: &NodeId,
        p: plan::Partitioning,
        input: u32,
    ) -> &mut Self {
        self.edges.push(plan::Edge {
            source: from.0.clone(),
            target: to.0.clone(),
            partitioning: p,
            target_input: input,
        });
        self
    }

    /// Subtask i to subtask i (chained when both are operators of this component).
    pub fn forward(&mut self, from: &NodeId, to: &NodeId) -> &mut Self {
        self.edge(from, to, plan::Partitioning::Forward, 0)
    }

    /// By key, to the subtask owning the key's key group.
    pub fn hash(&mut self, from: &NodeId, to: &NodeId) -> &mut Self {
        self.edge(from, to, plan::Partitioning::Hash, 0)
    }

    /// Round-robin.
    pub fn rebalance(&mut self, from: &NodeId, to: &NodeId) -> &mut Self {
        self.edge(from, to, plan::Partitioning::Rebalance, 0)
    }

    /// To every subtask.
    pub fn broadcast(&mut self, from: &NodeId, to: &NodeId) -> &mut Self {
        self.edge(from, to, plan::Partitioning::Broadcast, 0)
    }

    pub(crate) fn into_wit(self) -> plan::Graph {
        plan::Graph {
            nodes: self.nodes,
            edges: self.edges,
            max_parallelism: self.max_parallelism,
        }
    }
}
