//go:build tinygo

package rt

import "runtime"

// allocated is how many bytes were allocated since the program started.
// TinyGo has no runtime/metrics; its ReadMemStats is cheap (one thread,
// no world to stop). Untested: TinyGo is not installed where the SDK is
// tested, but `go vet -tags tinygo` type-checks this file.
func allocated() (uint64, bool) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc, true
}
