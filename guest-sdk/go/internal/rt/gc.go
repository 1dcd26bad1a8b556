package rt

import (
	"runtime"
	"runtime/debug"
)

// Go's collector reads the clock, and a collection that starts inside
// cabi_realloc (while the host copies arguments into the guest) traps:
// no import may be called there. So automatic collection is off, and the
// exports collect at their start, outside cabi_realloc, once gcEvery bytes
// were allocated since the last collection.
const gcEvery = 32 << 20

var lastGC uint64

func init() {
	debug.SetGCPercent(-1)
}

// Collect runs the collector if enough was allocated since it last ran.
func Collect() {
	now, ok := allocated()
	if ok && now-lastGC >= gcEvery {
		runtime.GC()
		lastGC = now
	}
}
