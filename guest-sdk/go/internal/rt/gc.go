package rt

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// Go's collector reads the clock, and a collection that starts inside
// cabi_realloc (while the host copies arguments into the guest) traps:
// no import may be called there. So automatic collection is off, and the
// exports collect at their start, outside cabi_realloc, once gcEvery bytes
// were allocated since the last collection.
const gcEvery = 32 << 20

var (
	allocs = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	lastGC uint64
)

func init() {
	debug.SetGCPercent(-1)
}

// Collect runs the collector if enough was allocated since it last ran.
func Collect() {
	metrics.Read(allocs)
	if allocs[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	now := allocs[0].Value.Uint64()
	if now-lastGC >= gcEvery {
		runtime.GC()
		lastGC = now
	}
}
