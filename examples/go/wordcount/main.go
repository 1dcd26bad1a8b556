// Word count in Go, the same job as examples/wordcount in Rust and with the
// same output: `input=PATH output=DIR` reads lines from PATH, splits them
// into words (maximal runs of ASCII letters and digits, lowercased), counts
// each word in keyed state and writes `WORD<TAB>COUNT` lines under DIR once
// the input ends.
//
// `count=OPERATOR` counts with another operator: `count=rust/count`, run with
// `--with rust=wordcount.wasm`, feeds this Go splitter into the Rust
// example's counter, one job mixing the two languages.
package main

import (
	"math"
	"strconv"

	"github.com/sluice-streaming/sluice/guest-sdk/go/sluice"
)

// word is split's buffer, reused from line to line.
var word []byte

// split emits every word of a line as a keyed record with an empty value.
func split(line sluice.Record, out *sluice.Collector) error {
	word = word[:0]
	for _, b := range line.Value {
		switch {
		case 'a' <= b && b <= 'z', '0' <= b && b <= '9':
			word = append(word, b)
		case 'A' <= b && b <= 'Z':
			word = append(word, b+'a'-'A')
		case len(word) > 0:
			out.EmitKeyed(word, nil)
			word = word[:0]
		}
	}
	if len(word) > 0 {
		out.EmitKeyed(word, nil)
	}
	return nil
}

// count counts records per key and emits the totals when the input ends.
var count = sluice.Keyed[uint64]{
	Process: func(ctx *sluice.KeyedContext[uint64], _ sluice.Record, _ *sluice.Collector) error {
		n, seen := ctx.State()
		if !seen {
			// Event time ends when a bounded input does: fire then.
			ctx.RegisterEventTimer(math.MaxInt64)
		}
		ctx.SetState(n + 1)
		return nil
	},
	OnTimer: func(ctx *sluice.KeyedContext[uint64], _ sluice.Timer, out *sluice.Collector) error {
		n, _ := ctx.State()
		ctx.ClearState()
		line := append(append([]byte(nil), ctx.Key()...), '\t')
		out.Emit(strconv.AppendUint(line, n, 10))
		return nil
	},
}

func init() {
	sluice.FlatMap("split", split)
	sluice.Describe("split", "lines to lowercase ASCII words")
	sluice.KeyedProcess("count", sluice.Uint64, count)
	sluice.Describe("count", "count per word")
	sluice.Plan(func(args sluice.Args) (*sluice.Graph, error) {
		input, err := args.Require("input")
		if err != nil {
			return nil, err
		}
		output, err := args.Require("output")
		if err != nil {
			return nil, err
		}
		counting, given := args.Get("count")
		if !given {
			counting = "count"
		}
		g := sluice.NewGraph()
		read := g.Add(sluice.Connector("read", "file-source").Config("path", input))
		splitter := g.Add(sluice.Guest("split", "split"))
		counter := g.Add(sluice.Guest("count", counting))
		write := g.Add(sluice.Connector("write", "file-sink").Config("path", output))
		g.Forward(read, splitter).Hash(splitter, counter).Forward(counter, write)
		return g, nil
	})
}

func main() {}
