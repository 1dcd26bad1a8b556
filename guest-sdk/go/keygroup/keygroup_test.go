package keygroup

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"testing"
)

type vectors struct {
	KeyGroups []struct {
		KeyHex string `json:"key_hex"`
		Length int    `json:"length"`
		XXH3   string `json:"xxh3_64"`
		Groups []struct {
			MaxParallelism uint32            `json:"max_parallelism"`
			KeyGroup       uint32            `json:"key_group"`
			Owners         map[string]uint32 `json:"owner_by_parallelism"`
		} `json:"groups"`
	} `json:"key_groups"`
	KeyedSnapshot struct {
		MaxParallelism uint32 `json:"max_parallelism"`
		Keys           []struct {
			KeyHex           string  `json:"key_hex"`
			Count            uint64  `json:"count"`
			EventTimers      []int64 `json:"event_timers"`
			ProcessingTimers []int64 `json:"processing_timers"`
		} `json:"keys"`
		Chunks []struct {
			KeyGroup uint32 `json:"key_group"`
			DataHex  string `json:"data_hex"`
		} `json:"chunks"`
	} `json:"keyed_snapshot"`
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	text, err := os.ReadFile("../../golden/vectors.json")
	if err != nil {
		t.Fatalf("golden vectors: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(text, &v); err != nil {
		t.Fatalf("golden vectors: %v", err)
	}
	return &v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func TestGoldenKeysHashGroupAndLandWhereTheVectorsSay(t *testing.T) {
	v := loadVectors(t)
	if len(v.KeyGroups) < 20 {
		t.Fatalf("only %d golden keys", len(v.KeyGroups))
	}
	checked := 0
	for _, c := range v.KeyGroups {
		key := unhex(t, c.KeyHex)
		if len(key) != c.Length {
			t.Fatalf("key %s: length %d, vectors say %d", c.KeyHex, len(key), c.Length)
		}
		want, err := strconv.ParseUint(c.XXH3, 10, 64)
		if err != nil {
			t.Fatalf("xxh3 %q: %v", c.XXH3, err)
		}
		if got := Hash(key); got != want {
			t.Errorf("Hash of %d bytes = %d, want %d", len(key), got, want)
		}
		for _, g := range c.Groups {
			kg := KeyGroup(key, g.MaxParallelism)
			if kg != g.KeyGroup {
				t.Errorf("KeyGroup(%d bytes, %d) = %d, want %d", len(key), g.MaxParallelism, kg, g.KeyGroup)
			}
			for ps, want := range g.Owners {
				p, err := strconv.ParseUint(ps, 10, 32)
				if err != nil {
					t.Fatalf("parallelism %q: %v", ps, err)
				}
				if got := Owner(kg, g.MaxParallelism, uint32(p)); got != want {
					t.Errorf("Owner(%d, %d, %d) = %d, want %d", kg, g.MaxParallelism, p, got, want)
				}
				start, end := Range(want, g.MaxParallelism, uint32(p))
				if kg < start || kg >= end {
					t.Errorf("Range(%d, %d, %d) = [%d, %d) misses %d", want, g.MaxParallelism, p, start, end, kg)
				}
				checked++
			}
		}
	}
	if checked < 500 {
		t.Fatalf("only %d placements checked", checked)
	}
}

func TestRangesPartitionAllKeyGroupsConsistentlyWithOwner(t *testing.T) {
	for _, m := range []uint32{1, 2, 7, 128, 1000} {
		for p := uint32(1); p <= min(m, 33); p++ {
			next := uint32(0)
			for s := uint32(0); s < p; s++ {
				start, end := Range(s, m, p)
				if start != next {
					t.Fatalf("m=%d p=%d s=%d: starts at %d, want %d", m, p, s, start, next)
				}
				for kg := start; kg < end; kg++ {
					if o := Owner(kg, m, p); o != s {
						t.Fatalf("m=%d p=%d kg=%d: owner %d, want %d", m, p, kg, o, s)
					}
				}
				next = end
			}
			if next != m {
				t.Fatalf("m=%d p=%d: ranges end at %d", m, p, next)
			}
		}
	}
}

// goldenChunkInputs builds each key group's entries and timers from the
// vectors' keyed count.
func goldenChunkInputs(t *testing.T, v *vectors) map[uint32]struct {
	entries []Entry
	timers  []Timer
} {
	t.Helper()
	groups := map[uint32]struct {
		entries []Entry
		timers  []Timer
	}{}
	for _, k := range v.KeyedSnapshot.Keys {
		key := unhex(t, k.KeyHex)
		kg := KeyGroup(key, v.KeyedSnapshot.MaxParallelism)
		g := groups[kg]
		g.entries = append(g.entries, Entry{Key: key, Value: AppendUvarint(nil, k.Count)})
		for _, tm := range k.EventTimers {
			g.timers = append(g.timers, Timer{Domain: EventTime, Time: tm, Key: key})
		}
		for _, tm := range k.ProcessingTimers {
			g.timers = append(g.timers, Timer{Domain: ProcessingTime, Time: tm, Key: key})
		}
		groups[kg] = g
	}
	return groups
}

func TestEncodeChunkGivesTheGoldenBytes(t *testing.T) {
	v := loadVectors(t)
	groups := goldenChunkInputs(t, v)
	if len(groups) != len(v.KeyedSnapshot.Chunks) {
		t.Fatalf("%d key groups, vectors have %d chunks", len(groups), len(v.KeyedSnapshot.Chunks))
	}
	if len(v.KeyedSnapshot.Chunks) < 5 {
		t.Fatalf("only %d golden chunks", len(v.KeyedSnapshot.Chunks))
	}
	for _, c := range v.KeyedSnapshot.Chunks {
		g, ok := groups[c.KeyGroup]
		if !ok {
			t.Fatalf("no golden key is in key group %d", c.KeyGroup)
		}
		// Reverse the input so the encoder's sorting is what orders it.
		slices.Reverse(g.entries)
		slices.Reverse(g.timers)
		got := hex.EncodeToString(EncodeChunk(g.entries, g.timers))
		if got != c.DataHex {
			t.Errorf("key group %d:\n got %s\nwant %s", c.KeyGroup, got, c.DataHex)
		}
	}
}

// countValue is decodeValue for a state that is a postcard u64.
func countValue(b []byte) (int, error) {
	_, n, err := Uvarint(b)
	return n, err
}

func TestDecodeChunkRoundTripsTheGoldenChunks(t *testing.T) {
	v := loadVectors(t)
	groups := goldenChunkInputs(t, v)
	for _, c := range v.KeyedSnapshot.Chunks {
		data := unhex(t, c.DataHex)
		entries, timers, err := DecodeChunk(data, countValue)
		if err != nil {
			t.Fatalf("key group %d: %v", c.KeyGroup, err)
		}
		if again := EncodeChunk(entries, timers); !bytes.Equal(again, data) {
			t.Errorf("key group %d: re-encoded %x, want %x", c.KeyGroup, again, data)
		}
		g := groups[c.KeyGroup]
		if len(entries) != len(g.entries) || len(timers) != len(g.timers) {
			t.Errorf("key group %d: decoded %d entries and %d timers, want %d and %d",
				c.KeyGroup, len(entries), len(timers), len(g.entries), len(g.timers))
		}
		// Decoded in the canonical order already.
		if !slices.IsSortedFunc(entries, func(a, b Entry) int { return bytes.Compare(a.Key, b.Key) }) {
			t.Errorf("key group %d: entries out of order", c.KeyGroup)
		}
		if !slices.IsSortedFunc(timers, compareTimers) {
			t.Errorf("key group %d: timers out of order", c.KeyGroup)
		}
		for _, e := range entries {
			if KeyGroup(e.Key, v.KeyedSnapshot.MaxParallelism) != c.KeyGroup {
				t.Errorf("key %x decoded from key group %d belongs elsewhere", e.Key, c.KeyGroup)
			}
		}
	}
}

func TestDecodeChunkRejectsEveryTruncation(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.KeyedSnapshot.Chunks {
		data := unhex(t, c.DataHex)
		for n := 0; n < len(data); n++ {
			// A copy of exactly n bytes, so reading past it would panic.
			cut := slices.Clone(data[:n])
			if _, _, err := DecodeChunk(cut, countValue); err == nil {
				t.Errorf("key group %d: %d of %d bytes decoded without error", c.KeyGroup, n, len(data))
			}
		}
	}
}

func TestDecodeChunkRejectsMalformedInput(t *testing.T) {
	good := EncodeChunk([]Entry{{Key: []byte("k"), Value: []byte{3}}}, []Timer{{Domain: ProcessingTime, Time: -1, Key: []byte("k")}})
	bad := map[string][]byte{
		"trailing bytes":     append(slices.Clone(good), 0),
		"unknown domain":     {0, 1, 2, 0, 0},
		"huge entry count":   {0xff, 0xff, 0xff, 0xff, 0x0f},
		"key past the end":   {1, 5, 'a'},
		"11-byte varint":     {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0},
		"varint over 64 bit": {0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0},
	}
	for name, data := range bad {
		if _, _, err := DecodeChunk(data, countValue); err == nil {
			t.Errorf("%s: %x decoded without error", name, data)
		}
	}
	// A value decoder claiming more bytes than there are.
	liar := func(b []byte) (int, error) { return len(b) + 1, nil }
	if _, _, err := DecodeChunk(good, liar); err == nil {
		t.Errorf("a value longer than the chunk decoded without error")
	}
	if _, _, err := DecodeChunk(good, func([]byte) (int, error) { return -1, nil }); err == nil {
		t.Errorf("a negative value length decoded without error")
	}
	if _, _, err := DecodeChunk(good, countValue); err != nil {
		t.Errorf("the good chunk: %v", err)
	}
}

func TestVarints(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 300, 16383, 16384, 1 << 40, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		b := AppendUvarint(nil, v)
		if len(b) > 10 {
			t.Errorf("%d took %d bytes", v, len(b))
		}
		got, n, err := Uvarint(b)
		if err != nil || got != v || n != len(b) {
			t.Errorf("Uvarint(%x) = %d, %d, %v; want %d, %d", b, got, n, err, v, len(b))
		}
	}
	for _, c := range []struct {
		v    int64
		want []byte
	}{
		{0, []byte{0}}, {-1, []byte{1}}, {1, []byte{2}}, {-5, []byte{9}}, {100, []byte{0xc8, 1}},
		{1<<63 - 1, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{-1 << 63, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	} {
		b := AppendZigzag(nil, c.v)
		if !bytes.Equal(b, c.want) {
			t.Errorf("AppendZigzag(%d) = %x, want %x", c.v, b, c.want)
		}
		z, _, err := Uvarint(b)
		if err != nil || unzigzag(z) != c.v {
			t.Errorf("zigzag %d does not round-trip: %d, %v", c.v, unzigzag(z), err)
		}
	}
}

// Block boundaries of the long-input path (1024-byte blocks, 64-byte
// stripes), which the golden keys do not all reach. Expected values are from
// the C reference implementation (xxhash.h, XXH3_64bits).
func TestHashAtLongInputBlockBoundaries(t *testing.T) {
	buf := make([]byte, 5120)
	for i := range buf {
		buf[i] = byte(i)
	}
	for _, c := range []struct {
		n    int
		want uint64
	}{
		{1023, 2783400616608816134},
		{1024, 12137474952470826274},
		{1025, 8703327852945446994},
		{1087, 1154559731683162717},
		{1088, 2886049233756462774},
		{1089, 4825677492212933300},
		{2048, 15943310518510861568},
		{2049, 7124680608501705883},
		{3000, 17067145050637632307},
		{5120, 17903483050018856832},
	} {
		if got := Hash(buf[:c.n]); got != c.want {
			t.Errorf("Hash of %d bytes = %d, want %d", c.n, got, c.want)
		}
	}
}
