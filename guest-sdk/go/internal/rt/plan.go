package rt

import (
	"fmt"
	"strconv"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_plan"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Args are a job's KEY=VALUE arguments.
type Args struct {
	values map[string]string
}

// Get returns an argument and whether it was given.
func (a Args) Get(key string) (string, bool) {
	v, ok := a.values[key]
	return v, ok
}

// Require returns an argument, or an invalid-config error naming it.
func (a Args) Require(key string) (string, error) {
	if v, ok := a.values[key]; ok {
		return v, nil
	}
	return "", InvalidConfig(fmt.Sprintf("missing argument `%s` (pass %s=...)", key, key))
}

// Int returns an integer argument, or def when it was not given.
func (a Args) Int(key string, def int64) (int64, error) {
	v, ok := a.values[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, InvalidConfig(fmt.Sprintf("argument `%s` is not an integer: %q", key, v))
	}
	return n, nil
}

// Node is one node of a job's graph, built with Guest or Connector.
type Node struct {
	node sluice_app_plan.Node
}

// Guest is a node running an operator of this component; "LINK/OPERATOR"
// runs an operator of the component linked to the job as LINK
// (`sluice run app.wasm --with LINK=other.wasm`), which may be written in
// another language.
func Guest(name, operator string) *Node {
	return &Node{node: sluice_app_plan.Node{
		Name:           name,
		Implementation: sluice_app_plan.MakeImplementationGuest(operator),
		Parallelism:    witTypes.None[uint32](),
		Watermarks:     witTypes.None[sluice_app_plan.WatermarkStrategy](),
	}}
}

// Connector is a node running a host connector (`file-source`,
// `file-sink`, `datagen`, `print`, `blackhole`).
func Connector(name, kind string) *Node {
	n := Guest(name, "")
	n.node.Implementation = sluice_app_plan.MakeImplementationConnector(kind)
	return n
}

// Config adds a KEY=VALUE pair to the node's configuration.
func (n *Node) Config(key, value string) *Node {
	n.node.Config = append(n.node.Config, witTypes.Tuple2[string, string]{F0: key, F1: value})
	return n
}

// Parallelism sets the node's number of subtasks.
func (n *Node) Parallelism(p uint32) *Node {
	n.node.Parallelism = witTypes.Some(p)
	return n
}

// Watermarks makes the host generate watermarks from the node's output:
// the largest timestamp seen minus maxOutOfOrdernessMs.
func (n *Node) Watermarks(maxOutOfOrdernessMs uint64) *Node {
	n.node.Watermarks = witTypes.Some(sluice_app_plan.WatermarkStrategy{MaxOutOfOrdernessMs: maxOutOfOrdernessMs})
	return n
}

// Graph is a job's dataflow graph.
type Graph struct {
	g sluice_app_plan.Graph
}

// NewGraph is an empty graph.
func NewGraph() *Graph {
	return &Graph{g: sluice_app_plan.Graph{MaxParallelism: witTypes.None[uint32]()}}
}

// Add adds a node; the name it returns connects it.
func (g *Graph) Add(n *Node) string {
	g.g.Nodes = append(g.g.Nodes, n.node)
	return n.node.Name
}

func (g *Graph) edge(from, to string, p sluice_app_plan.Partitioning, input uint32) *Graph {
	g.g.Edges = append(g.g.Edges, sluice_app_plan.Edge{Source: from, Target: to, Partitioning: p, TargetInput: input})
	return g
}

// Forward connects subtask i to subtask i (chained when both are operators of this component).
func (g *Graph) Forward(from, to string) *Graph {
	return g.edge(from, to, sluice_app_plan.PartitioningForward, 0)
}

// Hash sends each record to the subtask owning its key's key group.
func (g *Graph) Hash(from, to string) *Graph {
	return g.edge(from, to, sluice_app_plan.PartitioningHash, 0)
}

// Rebalance spreads records round-robin.
func (g *Graph) Rebalance(from, to string) *Graph {
	return g.edge(from, to, sluice_app_plan.PartitioningRebalance, 0)
}

// Broadcast sends every record to every subtask.
func (g *Graph) Broadcast(from, to string) *Graph {
	return g.edge(from, to, sluice_app_plan.PartitioningBroadcast, 0)
}

// MaxParallelism sets the job's number of key groups.
func (g *Graph) MaxParallelism(n uint32) *Graph {
	g.g.MaxParallelism = witTypes.Some(n)
	return g
}

var planFunc func(Args) (*Graph, error)

// Plan registers the function that builds a job's graph from its arguments.
func Plan(f func(Args) (*Graph, error)) {
	planFunc = f
}

// RunPlan runs the registered plan function for the host.
func RunPlan(args []witTypes.Tuple2[string, string]) (sluice_app_plan.Graph, error) {
	if planFunc == nil {
		return sluice_app_plan.Graph{}, InvalidConfig("this component registers no plan (call sluice.Plan in an init function)")
	}
	a := Args{values: map[string]string{}}
	for _, kv := range args {
		a.values[kv.F0] = kv.F1
	}
	g, err := planFunc(a)
	if err != nil {
		return sluice_app_plan.Graph{}, err
	}
	if g == nil {
		return sluice_app_plan.Graph{}, Failed("the plan function returned no graph")
	}
	return g.g, nil
}
