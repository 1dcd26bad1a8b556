// Words: the lines of a file as lowercase words, one per line, dropping
// words made only of digits. `input=PATH output=DIR`.
package main

import "github.com/sluice-streaming/sluice/guest-sdk/go/sluice"

func init() {
	sluice.FlatMap("split", func(r sluice.Record, out *sluice.Collector) error {
		var word []byte
		for _, b := range append(r.Value, ' ') {
			switch {
			case 'a' <= b && b <= 'z', '0' <= b && b <= '9':
				word = append(word, b)
			case 'A' <= b && b <= 'Z':
				word = append(word, b+'a'-'A')
			case len(word) > 0:
				out.Emit(word)
				word = word[:0]
			}
		}
		return nil
	})
	sluice.Filter("no-numbers", func(r sluice.Record) (bool, error) {
		for _, b := range r.Value {
			if b < '0' || b > '9' {
				return true, nil
			}
		}
		return false, nil
	})
	sluice.Plan(func(args sluice.Args) (*sluice.Graph, error) {
		input, err := args.Require("input")
		if err != nil {
			return nil, err
		}
		output, err := args.Require("output")
		if err != nil {
			return nil, err
		}
		g := sluice.NewGraph()
		read := g.Add(sluice.Connector("read", "file-source").Config("path", input))
		split := g.Add(sluice.Guest("split", "split"))
		keep := g.Add(sluice.Guest("no-numbers", "no-numbers"))
		write := g.Add(sluice.Connector("write", "file-sink").Config("path", output))
		g.Forward(read, split).Forward(split, keep).Forward(keep, write)
		return g, nil
	})
}

func main() {}
