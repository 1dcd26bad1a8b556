//go:build !tinygo

package rt

import "runtime/metrics"

var allocs = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

// allocated is how many bytes were allocated since the program started,
// read without stopping the world (runtime.ReadMemStats would).
func allocated() (uint64, bool) {
	metrics.Read(allocs)
	if allocs[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return allocs[0].Value.Uint64(), true
}
