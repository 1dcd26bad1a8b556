package rt

import (
	"fmt"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_task"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Chain is one subtask's operators, records flowing from the first to the
// last.
type Chain struct {
	ops []operator
	out []Collector
}

// NewChain creates the operators of a chain spec.
func NewChain(spec sluice_app_task.ChainSpec) (*Chain, error) {
	c := &Chain{}
	for _, s := range spec.Operators {
		i, ok := byName[s.Operator]
		if !ok {
			return nil, InvalidConfig(fmt.Sprintf("this component has no operator %q", s.Operator))
		}
		config := Config{}
		for _, kv := range s.Config {
			config[kv.F0] = kv.F1
		}
		op, err := definitions[i].create(config)
		if err != nil {
			return nil, err
		}
		c.ops = append(c.ops, op)
	}
	c.out = make([]Collector, len(c.ops))
	if len(spec.Restore) > 0 {
		return nil, Failed("state to restore for operators that keep none (the savepoint is of another application)")
	}
	return c, nil
}

// Process runs a batch through the chain.
func (c *Chain) Process(input uint32, b sluice_app_types.Batch) (sluice_app_task.Output, error) {
	if err := c.run(0, input, b); err != nil {
		return sluice_app_task.Output{}, err
	}
	return c.output(), nil
}

// run passes batch b to operator i and what it emits down the chain.
func (c *Chain) run(i int, input uint32, b sluice_app_types.Batch) error {
	if i == len(c.ops) {
		// Past the last operator: what reaches here is the chain's output.
		last := &c.out[len(c.out)-1]
		last.data = append(last.data, b.Data...)
		last.meta = append(last.meta, b.Meta...)
		return nil
	}
	out := &Collector{}
	err := eachRecord(b, func(r Record) error {
		out.timestamp = noTimestamp
		if r.HasTimestamp {
			out.timestamp = r.Timestamp
		}
		return c.ops[i].process(input, r, out)
	})
	if err != nil {
		return err
	}
	return c.run(i+1, 0, out.take())
}

func (c *Chain) output() sluice_app_task.Output {
	return sluice_app_task.Output{
		Records:             c.out[len(c.out)-1].take(),
		NextProcessingTimer: witTypes.None[int64](),
	}
}

// PollSource: this SDK's chains do not start with a source yet.
func (c *Chain) PollSource(uint32) (sluice_app_task.SourceOutput, error) {
	return sluice_app_task.SourceOutput{}, Failed("this chain does not start with a source")
}

// AdvanceWatermark: stateless operators have no timers to fire.
func (c *Chain) AdvanceWatermark(int64) (sluice_app_task.Output, error) {
	return c.output(), nil
}

// AdvanceProcessingTime: stateless operators have no timers to fire.
func (c *Chain) AdvanceProcessingTime(int64) (sluice_app_task.Output, error) {
	return c.output(), nil
}

// EndOfInput: stateless operators buffer nothing.
func (c *Chain) EndOfInput() (sluice_app_task.Output, error) {
	return c.output(), nil
}

// Snapshot: stateless operators keep no state.
func (c *Chain) Snapshot(uint64) ([]sluice_app_task.StateChunk, error) {
	return nil, nil
}

// Result wraps a value or error the way the bindings return them.
func Result[T any](v T, err error) witTypes.Result[T, sluice_app_types.Error] {
	if err != nil {
		return witTypes.Err[T, sluice_app_types.Error](toWit(err))
	}
	return witTypes.Ok[T, sluice_app_types.Error](v)
}
