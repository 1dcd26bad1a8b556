// Package sluice writes Sluice stream-processing operators in Go.
//
// Register operators and the plan function in an init function; build the
// module with `sluice build` into a component the cluster runs:
//
//	func init() {
//		sluice.FlatMap("split", func(r sluice.Record, out *sluice.Collector) error {
//			for _, w := range bytes.Fields(r.Value) {
//				out.EmitKeyed(bytes.ToLower(w), nil)
//			}
//			return nil
//		})
//		sluice.Plan(func(args sluice.Args) (*sluice.Graph, error) { ... })
//	}
//
//	func main() {}
package sluice

import (
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/rt"
	// The component's exports: linked into every application.
	_ "github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/wit_exports"
)

type (
	// Record is one record; Key and Value point into the batch being
	// processed (copy them to keep them).
	Record = rt.Record
	// Collector is where an operator emits records.
	Collector = rt.Collector
	// Config is an operator's configuration.
	Config = rt.Config
	// Args are a job's KEY=VALUE arguments.
	Args = rt.Args
	// Graph is a job's dataflow graph.
	Graph = rt.Graph
	// Node is a node of a graph.
	Node = rt.Node
	// Error is an error that says whether the configuration is at fault.
	Error = rt.Error
	// KeyedContext is the key being processed, its state and timers.
	KeyedContext[S any] = rt.KeyedContext[S]
	// Keyed is a keyed operator's functions.
	Keyed[S any] = rt.Keyed[S]
	// Codec writes and reads state values in snapshots.
	Codec[S any] = rt.Codec[S]
	// Timer is a timer that fired.
	Timer = rt.Timer
	// TimeDomain is the clock a timer follows.
	TimeDomain = rt.TimeDomain
	// Source produces records inside the component.
	Source = rt.Source
	// SourceStatus is what a source's poll says.
	SourceStatus = rt.SourceStatus
)

// The clocks a timer can follow.
const (
	EventTime      = rt.EventTime
	ProcessingTime = rt.ProcessingTime
)

// KeyedProcess registers a keyed operator whose state per key is an S,
// written to snapshots with codec; its input must be partitioned by hash.
func KeyedProcess[S any](name string, codec Codec[S], k Keyed[S]) {
	rt.KeyedProcess(name, codec, k)
}

// KeyedProcessWith is KeyedProcess for an operator made from its node's
// configuration.
func KeyedProcessWith[S any](name string, codec Codec[S], create func(Config) (Keyed[S], error)) {
	rt.KeyedProcessWith(name, codec, create)
}

// CoProcess registers a keyed operator with two inputs.
func CoProcess[S any](name string, codec Codec[S], k Keyed[S]) {
	rt.CoProcess(name, codec, k)
}

// State codecs that write what the Rust SDK writes for the same type, so
// savepoints move between the languages.
var (
	Uint64  = rt.Uint64
	Int64   = rt.Int64
	Float64 = rt.Float64
	Bytes   = rt.Bytes
	String  = rt.String
)

var (
	// Map registers an operator turning each record into one record.
	Map = rt.Map
	// Filter registers an operator keeping the records it accepts.
	Filter = rt.Filter
	// FlatMap registers an operator emitting any number of records per record.
	FlatMap = rt.FlatMap
	// Describe sets an operator's description.
	Describe = rt.Described
	// Plan registers the function that builds a job's graph.
	Plan = rt.Plan
	// NewGraph is an empty graph.
	NewGraph = rt.NewGraph
	// Guest is a node running one of this component's operators, or, named
	// "LINK/OPERATOR", one of the component linked to the job as LINK.
	Guest = rt.Guest
	// Connector is a node running a host connector.
	Connector = rt.Connector
	// InvalidConfig reports wrong arguments or configuration.
	InvalidConfig = rt.InvalidConfig
	// Failed reports that processing failed.
	Failed = rt.Failed
	// RegisterSource registers a source made from its node's configuration.
	RegisterSource = rt.RegisterSource
	// More, Finished and WatermarkAt are what a source's Poll returns.
	More        = rt.More
	Finished    = rt.Finished
	WatermarkAt = rt.WatermarkAt
)
