package rt

import (
	"fmt"
	"strconv"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_task"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// CounterAdd adds to a metric of the task; the component's exports set it
// to the host import (a no-op in native tests).
var CounterAdd = func(name string, delta uint64) {}

// Chain is one subtask's operators, records flowing from the first to the
// last inside one call.
type Chain struct {
	ops []operator
	// bufs[i] holds what operator i emitted and the next has not taken.
	bufs []Collector
	// Records each operator emitted during the current call.
	emitted []uint64
}

// NewChain creates the operators of a chain spec and restores their state.
func NewChain(spec sluice_app_task.ChainSpec) (*Chain, error) {
	if len(spec.Operators) == 0 {
		return nil, InvalidConfig("a chain needs at least one operator")
	}
	at := openContext{spec.Subtask, spec.Parallelism, spec.MaxParallelism}
	c := &Chain{}
	for _, s := range spec.Operators {
		i, ok := byName[s.Operator]
		if !ok {
			return nil, InvalidConfig(fmt.Sprintf("node `%s` names operator `%s`, which this application does not export", s.Node, s.Operator))
		}
		config := Config{}
		for _, kv := range s.Config {
			config[kv.F0] = kv.F1
		}
		op, err := definitions[i].create(config)
		if err != nil {
			return nil, err
		}
		if o, ok := op.(opener); ok {
			if err := o.open(at); err != nil {
				return nil, err
			}
		}
		c.ops = append(c.ops, op)
	}
	for _, piece := range spec.Restore {
		if int(piece.Operator) >= len(c.ops) {
			return nil, InvalidConfig(fmt.Sprintf("restored state names operator %d of the chain", piece.Operator))
		}
		s, ok := c.ops[piece.Operator].(stateful)
		if !ok {
			return nil, InvalidConfig(fmt.Sprintf("restored state for operator `%s`, which keeps none (the savepoint is of another application?)", spec.Operators[piece.Operator].Operator))
		}
		if err := s.restore(piece.KeyGroup, piece.Data); err != nil {
			return nil, err
		}
	}
	c.bufs = make([]Collector, len(c.ops))
	c.emitted = make([]uint64, len(c.ops))
	return c, nil
}

// processBatch runs every record of b through op, emitting into out.
func processBatch(op operator, input uint32, b sluice_app_types.Batch, out *Collector) error {
	err := eachRecord(b, func(r Record) error {
		out.ts, out.hasTS = r.Timestamp, r.HasTimestamp
		return op.process(input, r, out)
	})
	out.hasTS = false
	return err
}

// drainFrom feeds what operator i emitted through the operators after it.
func (c *Chain) drainFrom(i int) error {
	for j := i + 1; j < len(c.ops); j++ {
		in := &c.bufs[j-1]
		if in.count() == 0 {
			continue
		}
		c.emitted[j-1] += uint64(in.count())
		if err := processBatch(c.ops[j], 0, in.take(), &c.bufs[j]); err != nil {
			return err
		}
	}
	return nil
}

// output takes the last operator's records and reports what each emitted.
func (c *Chain) output() sluice_app_task.Output {
	next := witTypes.None[int64]()
	for _, op := range c.ops {
		if t, ok := op.(timed); ok {
			if at, ok := t.nextProcessingTimer(); ok && (next.IsNone() || at < next.Some()) {
				next = witTypes.Some(at)
			}
		}
	}
	last := &c.bufs[len(c.bufs)-1]
	c.emitted[len(c.emitted)-1] += uint64(last.count())
	// One host call per operator that emitted anything: the host counts
	// each chained node's records from these.
	for i, n := range c.emitted {
		if n > 0 {
			CounterAdd("sluice.records-out."+strconv.Itoa(i), n)
			c.emitted[i] = 0
		}
	}
	return sluice_app_task.Output{Records: last.take(), NextProcessingTimer: next}
}

// eachOperator runs step on every operator in order, passing what each
// emits downstream.
func (c *Chain) eachOperator(step func(timed, *Collector) error) (sluice_app_task.Output, error) {
	for i, op := range c.ops {
		if t, ok := op.(timed); ok {
			if err := step(t, &c.bufs[i]); err != nil {
				return sluice_app_task.Output{}, err
			}
		}
		if err := c.drainFrom(i); err != nil {
			return sluice_app_task.Output{}, err
		}
	}
	return c.output(), nil
}

// Process runs a batch through the chain.
func (c *Chain) Process(input uint32, b sluice_app_types.Batch) (sluice_app_task.Output, error) {
	if err := processBatch(c.ops[0], input, b, &c.bufs[0]); err != nil {
		return sluice_app_task.Output{}, err
	}
	if err := c.drainFrom(0); err != nil {
		return sluice_app_task.Output{}, err
	}
	return c.output(), nil
}

// PollSource lets a chain that starts with a source produce records.
func (c *Chain) PollSource(max uint32) (sluice_app_task.SourceOutput, error) {
	src, ok := c.ops[0].(*sourceOp)
	if !ok {
		return sluice_app_task.SourceOutput{}, Failed("this chain does not start with a source")
	}
	status, err := src.s.Poll(max, &c.bufs[0])
	if err != nil {
		return sluice_app_task.SourceOutput{}, err
	}
	if err := c.drainFrom(0); err != nil {
		return sluice_app_task.SourceOutput{}, err
	}
	out := sluice_app_task.SourceOutput{
		Output:    c.output(),
		Watermark: witTypes.None[int64](),
		Finished:  status.finished,
	}
	if status.hasWatermark {
		out.Watermark = witTypes.Some(status.watermark)
	}
	return out, nil
}

// AdvanceWatermark fires due event-time timers down the chain.
func (c *Chain) AdvanceWatermark(w int64) (sluice_app_task.Output, error) {
	return c.eachOperator(func(t timed, out *Collector) error { return t.watermark(w, out) })
}

// AdvanceProcessingTime fires due processing-time timers down the chain.
func (c *Chain) AdvanceProcessingTime(now int64) (sluice_app_task.Output, error) {
	return c.eachOperator(func(t timed, out *Collector) error { return t.processingTime(now, out) })
}

// EndOfInput flushes every operator in order.
func (c *Chain) EndOfInput() (sluice_app_task.Output, error) {
	return c.eachOperator(func(t timed, out *Collector) error { return t.endOfInput(out) })
}

// Snapshot returns every operator's state.
func (c *Chain) Snapshot(uint64) ([]sluice_app_task.StateChunk, error) {
	var out []sluice_app_task.StateChunk
	for i, op := range c.ops {
		s, ok := op.(stateful)
		if !ok {
			continue
		}
		pieces, err := s.snapshot()
		if err != nil {
			return nil, err
		}
		for _, p := range pieces {
			out = append(out, sluice_app_task.StateChunk{Operator: uint32(i), KeyGroup: p.keyGroup, Data: p.data})
		}
	}
	return out, nil
}

// Result wraps a value or error the way the bindings return them.
func Result[T any](v T, err error) witTypes.Result[T, sluice_app_types.Error] {
	if err != nil {
		return witTypes.Err[T, sluice_app_types.Error](toWit(err))
	}
	return witTypes.Ok[T, sluice_app_types.Error](v)
}
