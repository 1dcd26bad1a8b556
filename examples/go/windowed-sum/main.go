// Per-key sums over tumbling event-time windows, fed by a generator inside
// the component: the Go twin of examples/windowed-sum, with the same output.
//
// `keys=K events=N window_ms=W output=DIR`: subtask s of the generator emits
// events i = s, s+p, s+2p, ... below N with key `k{i % K}`, value i (8 bytes,
// little-endian) and event time i*10 ms. A keyed operator sums the values
// per key and window [t - t%W, +W) and writes `KEY<TAB>WINDOW_START<TAB>SUM`
// when the watermark passes the window's end.
package main

import (
	"encoding/binary"
	"errors"
	"strconv"

	"github.com/sluice-streaming/sluice/guest-sdk/go/keygroup"
	"github.com/sluice-streaming/sluice/guest-sdk/go/sluice"
)

// events generates the events; its position is the next sequence number.
type events struct {
	keys, count, next, step uint64
}

func (e *events) Open(subtask, parallelism uint32) error {
	e.next, e.step = uint64(subtask), uint64(parallelism)
	return nil
}

func (e *events) Poll(max uint32, out *sluice.Collector) (sluice.SourceStatus, error) {
	for n := uint32(0); n < max; n++ {
		if e.next >= e.count {
			return sluice.Finished, nil
		}
		i := e.next
		key := "k" + strconv.FormatUint(i%e.keys, 10)
		out.EmitAt([]byte(key), true, binary.LittleEndian.AppendUint64(nil, i), int64(i*10))
		e.next += e.step
	}
	// Everything this subtask emits later is newer than its last event.
	return sluice.WatermarkAt(int64((e.next - e.step) * 10)), nil
}

func (e *events) Snapshot() []byte { return binary.LittleEndian.AppendUint64(nil, e.next) }

func (e *events) Restore(position []byte) error {
	if len(position) != 8 {
		return sluice.Failed("corrupt generator position")
	}
	e.next = binary.LittleEndian.Uint64(position)
	return nil
}

// window is one open window of a key.
type window struct {
	start int64
	sum   uint64
}

// windowsCodec writes a key's open windows as the Rust example's state
// (a Vec<(i64, u64)>) is written, so savepoints move between the two.
type windowsCodec struct{}

func (windowsCodec) Append(b []byte, ws []window) []byte {
	b = keygroup.AppendUvarint(b, uint64(len(ws)))
	for _, w := range ws {
		b = keygroup.AppendZigzag(b, w.start)
		b = keygroup.AppendUvarint(b, w.sum)
	}
	return b
}

func (windowsCodec) Decode(b []byte) ([]window, int, error) {
	n, used, err := keygroup.Uvarint(b)
	if err != nil {
		return nil, 0, err
	}
	if n > uint64(len(b)) {
		return nil, 0, errors.New("corrupt windows")
	}
	ws := make([]window, 0, n)
	for ; n > 0; n-- {
		start, k, err := sluice.Int64.Decode(b[used:])
		if err != nil {
			return nil, 0, err
		}
		used += k
		sum, k, err := keygroup.Uvarint(b[used:])
		if err != nil {
			return nil, 0, err
		}
		used += k
		ws = append(ws, window{start, sum})
	}
	return ws, used, nil
}

func sum(windowMs int64) sluice.Keyed[[]window] {
	return sluice.Keyed[[]window]{
		Process: func(ctx *sluice.KeyedContext[[]window], r sluice.Record, _ *sluice.Collector) error {
			if !r.HasTimestamp {
				return sluice.Failed("event without a timestamp")
			}
			if len(r.Value) != 8 {
				return sluice.Failed("value is not a u64")
			}
			value := binary.LittleEndian.Uint64(r.Value)
			start := r.Timestamp - ((r.Timestamp%windowMs)+windowMs)%windowMs
			if start+windowMs <= ctx.Watermark() {
				return nil // late: its window already fired
			}
			ws, _ := ctx.State()
			found := false
			for i := range ws {
				if ws[i].start == start {
					ws[i].sum += value
					found = true
				}
			}
			if !found {
				ws = append(ws, window{start, value})
			}
			ctx.SetState(ws)
			ctx.RegisterEventTimer(start + windowMs - 1)
			return nil
		},
		OnTimer: func(ctx *sluice.KeyedContext[[]window], t sluice.Timer, out *sluice.Collector) error {
			ws, ok := ctx.State()
			if !ok {
				return nil
			}
			open := ws[:0]
			for _, w := range ws {
				if w.start+windowMs-1 <= t.Time {
					line := string(ctx.Key()) + "\t" + strconv.FormatInt(w.start, 10) + "\t" + strconv.FormatUint(w.sum, 10)
					out.Emit([]byte(line))
				} else {
					open = append(open, w)
				}
			}
			if len(open) == 0 {
				ctx.ClearState()
			} else {
				ctx.SetState(open)
			}
			return nil
		},
	}
}

func init() {
	sluice.RegisterSource("events", func(c sluice.Config) (sluice.Source, error) {
		keys, err := c.Int("keys", 10)
		if err != nil {
			return nil, err
		}
		count, err := c.Int("events", 100_000)
		if err != nil {
			return nil, err
		}
		if keys <= 0 || count < 0 {
			return nil, sluice.InvalidConfig("keys must be positive and events not negative")
		}
		return &events{keys: uint64(keys), count: uint64(count), step: 1}, nil
	})
	sluice.Describe("events", "keyed events with event time")
	sluice.KeyedProcessWith("sum", sluice.Codec[[]window](windowsCodec{}), func(c sluice.Config) (sluice.Keyed[[]window], error) {
		w, err := c.Int("window_ms", 1000)
		if err != nil {
			return sluice.Keyed[[]window]{}, err
		}
		return sum(w), nil
	})
	sluice.Describe("sum", "per-key sums over tumbling event-time windows")
	sluice.Plan(func(args sluice.Args) (*sluice.Graph, error) {
		windowMs, err := args.Int("window_ms", 1000)
		if err != nil {
			return nil, err
		}
		if windowMs <= 0 {
			return nil, sluice.InvalidConfig("window_ms must be positive")
		}
		keys, err := args.Int("keys", 10)
		if err != nil {
			return nil, err
		}
		count, err := args.Int("events", 100_000)
		if err != nil {
			return nil, err
		}
		output, err := args.Require("output")
		if err != nil {
			return nil, err
		}
		g := sluice.NewGraph()
		ev := g.Add(sluice.Guest("events", "events").
			Config("keys", strconv.FormatInt(keys, 10)).
			Config("events", strconv.FormatInt(count, 10)))
		s := g.Add(sluice.Guest("sum", "sum").Config("window_ms", strconv.FormatInt(windowMs, 10)))
		write := g.Add(sluice.Connector("write", "file-sink").Config("path", output))
		g.Hash(ev, s).Forward(s, write)
		return g, nil
	})
}

func main() {}
