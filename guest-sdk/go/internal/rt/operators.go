package rt

import (
	"fmt"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_app"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// operator is one instance of a registered operator in a chain.
type operator interface {
	// process handles one record of input `input`.
	process(input uint32, r Record, out *Collector) error
}

// Where an operator instance runs.
type openContext struct {
	subtask, parallelism, maxParallelism uint32
}

// opener is an operator that needs to know where it runs.
type opener interface {
	open(c openContext) error
}

// timed is an operator with timers or buffered output.
type timed interface {
	watermark(w int64, out *Collector) error
	processingTime(now int64, out *Collector) error
	endOfInput(out *Collector) error
	nextProcessingTimer() (int64, bool)
}

// A piece of an operator's state: keyed state belongs to a key group.
type chunk struct {
	keyGroup witTypes.Option[uint32]
	data     []byte
}

// stateful is an operator whose state is snapshotted.
type stateful interface {
	snapshot() ([]chunk, error)
	restore(keyGroup witTypes.Option[uint32], data []byte) error
}

// definition is a registered operator.
type definition struct {
	name        string
	kind        sluice_app_app.OperatorKind
	description string
	create      func(Config) (operator, error)
}

var (
	definitions []definition
	byName      = map[string]int{}
)

// register adds an operator; a second operator of the same name is a
// programming error, reported when the component first runs.
func register(d definition) *definition {
	if _, dup := byName[d.name]; dup {
		panic(fmt.Sprintf("sluice: two operators are named %q", d.name))
	}
	byName[d.name] = len(definitions)
	definitions = append(definitions, d)
	return &definitions[len(definitions)-1]
}

// Described sets the description of the operator registered last, as
// `sluice validate` lists it.
func Described(name, description string) {
	if i, ok := byName[name]; ok {
		definitions[i].description = description
	}
}

type mapOp func(Record) (Record, error)

func (f mapOp) process(_ uint32, r Record, out *Collector) error {
	r2, err := f(r)
	if err != nil {
		return err
	}
	out.EmitRecord(r2)
	return nil
}

type filterOp func(Record) (bool, error)

func (f filterOp) process(_ uint32, r Record, out *Collector) error {
	keep, err := f(r)
	if err == nil && keep {
		out.EmitRecord(r)
	}
	return err
}

type flatMapOp func(Record, *Collector) error

func (f flatMapOp) process(_ uint32, r Record, out *Collector) error { return f(r, out) }

// Map registers an operator that turns each record into one record.
func Map(name string, f func(Record) (Record, error)) {
	register(definition{name: name, kind: sluice_app_app.OperatorKindMap,
		create: func(Config) (operator, error) { return mapOp(f), nil }})
}

// Filter registers an operator that keeps the records f accepts.
func Filter(name string, f func(Record) (bool, error)) {
	register(definition{name: name, kind: sluice_app_app.OperatorKindFilter,
		create: func(Config) (operator, error) { return filterOp(f), nil }})
}

// FlatMap registers an operator that emits any number of records per record.
func FlatMap(name string, f func(Record, *Collector) error) {
	register(definition{name: name, kind: sluice_app_app.OperatorKindFlatMap,
		create: func(Config) (operator, error) { return flatMapOp(f), nil }})
}

// Operators lists the registered operators for the host.
func Operators() []sluice_app_app.OperatorInfo {
	out := make([]sluice_app_app.OperatorInfo, len(definitions))
	for i, d := range definitions {
		out[i] = sluice_app_app.OperatorInfo{Name: d.name, Kind: d.kind, Description: d.description}
	}
	return out
}
