package rt

import (
	"bytes"
	"math"
	"testing"
)

func roundTrip[S any](t *testing.T, c Codec[S], v S, want []byte, eq func(a, b S) bool) {
	t.Helper()
	got := c.Append([]byte{0xAA}, v)[1:]
	if !bytes.Equal(got, want) {
		t.Fatalf("%v encodes as %x, want %x (what postcard writes)", v, got, want)
	}
	back, n, err := c.Decode(append(got, 0xBB))
	if err != nil || n != len(got) || !eq(back, v) {
		t.Fatalf("%v decodes as %v (%d bytes, %v)", v, back, n, err)
	}
	for cut := 0; cut < len(got); cut++ {
		if _, _, err := c.Decode(got[:cut]); err == nil {
			t.Fatalf("%v cut to %d bytes decoded", v, cut)
		}
	}
}

func TestCodecsWriteWhatPostcardWritesForTheRustType(t *testing.T) {
	same := func(a, b uint64) bool { return a == b }
	roundTrip(t, Uint64, 0, []byte{0}, same)
	roundTrip(t, Uint64, 300, []byte{0xAC, 0x02}, same)
	roundTrip(t, Uint64, math.MaxUint64, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, same)
	sameI := func(a, b int64) bool { return a == b }
	roundTrip(t, Int64, -1, []byte{0x01}, sameI)
	roundTrip(t, Int64, 1, []byte{0x02}, sameI)
	roundTrip(t, Int64, math.MinInt64, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, sameI)
	roundTrip(t, Float64, 1.5, []byte{0, 0, 0, 0, 0, 0, 0xF8, 0x3F}, func(a, b float64) bool { return a == b })
	roundTrip(t, Bytes, []byte("hi"), []byte{2, 'h', 'i'}, bytes.Equal)
	roundTrip(t, String, "日本", []byte{6, 0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC}, func(a, b string) bool { return a == b })
}
