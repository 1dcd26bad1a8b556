package export_sluice_app_task

import (
	"runtime"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/rt"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_metrics"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_task"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

type errorT = sluice_app_types.Error

func init() {
	rt.CounterAdd = sluice_app_metrics.CounterAdd
}

// Chain is the contract's `chain` resource: one subtask's operators.
type Chain struct {
	handle int32
	pinner runtime.Pinner
	chain  *rt.Chain
}

// OnDrop runs when the host drops the chain.
func (c *Chain) OnDrop() {
	c.chain = nil
}

// ChainCreate creates a subtask's chain.
func ChainCreate(spec sluice_app_task.ChainSpec) (res witTypes.Result[*Chain, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result((*Chain)(nil), err) })
	rt.Collect()
	chain, err := rt.NewChain(spec)
	if err != nil {
		return rt.Result[*Chain](nil, err)
	}
	c := &Chain{chain: chain}
	c.TakeHandle()
	return rt.Result(c, nil)
}

// Process runs a batch through the chain.
func (c *Chain) Process(input uint32, b sluice_app_types.Batch) (res witTypes.Result[sluice_app_task.Output, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result(sluice_app_task.Output{}, err) })
	rt.Collect()
	return rt.Result(c.chain.Process(input, b))
}

// PollSource produces records of a source chain.
func (c *Chain) PollSource(max uint32) (res witTypes.Result[sluice_app_task.SourceOutput, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result(sluice_app_task.SourceOutput{}, err) })
	rt.Collect()
	return rt.Result(c.chain.PollSource(max))
}

// AdvanceWatermark fires due event-time timers.
func (c *Chain) AdvanceWatermark(w int64) (res witTypes.Result[sluice_app_task.Output, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result(sluice_app_task.Output{}, err) })
	rt.Collect()
	return rt.Result(c.chain.AdvanceWatermark(w))
}

// AdvanceProcessingTime fires due processing-time timers.
func (c *Chain) AdvanceProcessingTime(now int64) (res witTypes.Result[sluice_app_task.Output, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result(sluice_app_task.Output{}, err) })
	rt.Collect()
	return rt.Result(c.chain.AdvanceProcessingTime(now))
}

// EndOfInput flushes what the chain buffers.
func (c *Chain) EndOfInput() (res witTypes.Result[sluice_app_task.Output, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result(sluice_app_task.Output{}, err) })
	rt.Collect()
	return rt.Result(c.chain.EndOfInput())
}

// Snapshot returns the chain's state.
func (c *Chain) Snapshot(id uint64) (res witTypes.Result[[]sluice_app_task.StateChunk, errorT]) {
	defer rt.OnPanic(func(err error) { res = rt.Result([]sluice_app_task.StateChunk(nil), err) })
	rt.Collect()
	return rt.Result(c.chain.Snapshot(id))
}
