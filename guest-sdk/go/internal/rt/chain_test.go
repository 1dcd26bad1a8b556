package rt

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_task"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

func init() {
	FlatMap("test-split", func(r Record, out *Collector) error {
		for _, w := range bytes.Fields(r.Value) {
			out.EmitKeyed(w, []byte{'1'})
		}
		return nil
	})
	Filter("test-long", func(r Record) (bool, error) { return len(r.Key) > 2, nil })
	Map("test-upper", func(r Record) (Record, error) {
		r.Key = bytes.ToUpper(r.Key)
		return r, nil
	})
}

func spec(ops ...string) sluice_app_task.ChainSpec {
	s := sluice_app_task.ChainSpec{Parallelism: 1, MaxParallelism: 128}
	for _, op := range ops {
		s.Operators = append(s.Operators, sluice_app_task.OperatorSpec{Operator: op, Node: op})
	}
	return s
}

func batch(records ...Record) sluice_app_types.Batch {
	c := &Collector{}
	for _, r := range records {
		c.EmitRecord(r)
	}
	return c.take()
}

func records(t *testing.T, b sluice_app_types.Batch) []Record {
	t.Helper()
	var out []Record
	err := eachRecord(b, func(r Record) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAChainRunsRecordsThroughEveryOperatorKeepingTimestamps(t *testing.T) {
	c, err := NewChain(spec("test-split", "test-long", "test-upper"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Process(0, batch(
		Record{Value: []byte("go is fun"), Timestamp: 42, HasTimestamp: true},
		Record{Value: []byte("rust too")},
	))
	if err != nil {
		t.Fatal(err)
	}
	got := records(t, out.Records)
	want := []struct {
		key string
		ts  int64
		has bool
	}{{"FUN", 42, true}, {"RUST", 0, false}, {"TOO", 0, false}}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		r := got[i]
		if string(r.Key) != w.key || !r.HasKey || r.HasTimestamp != w.has || (w.has && r.Timestamp != w.ts) {
			t.Errorf("record %d: %+v, want %+v", i, r, w)
		}
	}
	if out.NextProcessingTimer.IsSome() {
		t.Error("a stateless chain has no timers")
	}
}

func TestAnEmptyKeyIsAKeyAndNoKeyIsNone(t *testing.T) {
	b := batch(Record{Key: []byte{}, HasKey: true, Value: []byte("v")}, Record{Value: []byte("w")})
	got := records(t, b)
	if !got[0].HasKey || len(got[0].Key) != 0 || got[1].HasKey {
		t.Fatalf("%+v", got)
	}
}

func TestAMalformedBatchIsAnErrorNotAPanic(t *testing.T) {
	c, err := NewChain(spec("test-split"))
	if err != nil {
		t.Fatal(err)
	}
	// Key length 2, value length 5, no timestamp: past the 3 bytes of data.
	meta := []byte{2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}
	bad := sluice_app_types.Batch{Data: []byte("abc"), Meta: meta}
	if _, err := c.Process(0, bad); err == nil {
		t.Fatal("a record past the batch's data was accepted")
	}
}

func TestMetadataIsPackedAsTheContractSays(t *testing.T) {
	b := batch(
		Record{Key: []byte("k"), HasKey: true, Value: []byte("vv"), Timestamp: 0x0102030405060708, HasTimestamp: true},
		Record{Value: []byte("w")},
	)
	want := []byte{
		1, 0, 0, 0, 2, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, // key 1, value 2, ts
		0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, // no key, value 1, no ts
	}
	if string(b.Meta) != string(want) || string(b.Data) != "kvvw" {
		t.Fatalf("meta % x, data %q", b.Meta, b.Data)
	}
}

func TestPartialMetadataIsRefusedBeforeAnyRecord(t *testing.T) {
	b := batch(Record{Value: []byte("v")})
	for _, extra := range []int{1, 8, 15} {
		bad := sluice_app_types.Batch{Data: b.Data, Meta: append(append([]byte{}, b.Meta...), make([]byte, extra)...)}
		seen := 0
		err := eachRecord(bad, func(Record) error { seen++; return nil })
		if err == nil || seen != 0 {
			t.Fatalf("%d stray bytes: err %v after %d records", extra, err, seen)
		}
		if !strings.Contains(err.Error(), "not a multiple of the 16 per record") {
			t.Fatalf("%v", err)
		}
	}
}

func TestUnknownOperatorsAndForeignStateAreRefused(t *testing.T) {
	_, err := NewChain(spec("no-such-operator"))
	if e, ok := err.(*Error); !ok || !e.invalidConfig {
		t.Fatalf("unknown operator: %v", err)
	}
	s := spec("test-split")
	s.Restore = []sluice_app_task.StateChunk{{Operator: 0, KeyGroup: witTypes.Some[uint32](3), Data: []byte{1}}}
	if _, err := NewChain(s); err == nil {
		t.Fatal("state for a stateless operator was accepted")
	}
}

func TestArgsAndPlanErrorsNameTheArgument(t *testing.T) {
	a := Args{values: map[string]string{"n": "x"}}
	if _, err := a.Require("input"); err == nil || err.Error() != "missing argument `input` (pass input=...)" {
		t.Fatalf("%v", err)
	}
	if _, err := a.Int("n", 1); err == nil {
		t.Fatal("a non-integer was accepted")
	}
	if n, err := a.Int("m", 7); err != nil || n != 7 {
		t.Fatalf("%d %v", n, err)
	}
}

// counter emits the numbers from its position up to limit, two per poll.
type counter struct{ next, limit uint64 }

func (c *counter) Open(subtask, parallelism uint32) error { return nil }
func (c *counter) Poll(max uint32, out *Collector) (SourceStatus, error) {
	for n := uint32(0); n < max && n < 2; n++ {
		if c.next >= c.limit {
			return Finished, nil
		}
		out.EmitAt(nil, false, []byte{byte(c.next)}, int64(c.next))
		c.next++
	}
	return WatermarkAt(int64(c.next) - 1), nil
}
func (c *counter) Snapshot() []byte { return []byte{byte(c.next)} }
func (c *counter) Restore(p []byte) error {
	if len(p) != 1 {
		return Failed("bad position")
	}
	c.next = uint64(p[0])
	return nil
}

func init() {
	RegisterSource("test-counter", func(c Config) (Source, error) {
		limit, err := c.Int("limit", 5)
		return &counter{limit: uint64(limit)}, err
	})
}

func TestASourceChainPollsSnapshotsItsPositionAndResumesFromIt(t *testing.T) {
	c, err := NewChain(spec("test-counter", "test-upper"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.PollSource(100)
	if err != nil {
		t.Fatal(err)
	}
	if got := records(t, out.Output.Records); len(got) != 2 || got[1].Timestamp != 1 || !out.Watermark.IsSome() || out.Watermark.Some() != 1 || out.Finished {
		t.Fatalf("first poll: %+v %+v", got, out)
	}
	snap, err := c.Snapshot(1)
	if err != nil || len(snap) != 1 || snap[0].KeyGroup.IsSome() || snap[0].Operator != 0 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	s := spec("test-counter", "test-upper")
	s.Restore = snap
	resumed, err := NewChain(s)
	if err != nil {
		t.Fatal(err)
	}
	var values []byte
	for i := 0; i < 10; i++ {
		out, err := resumed.PollSource(100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range records(t, out.Output.Records) {
			values = append(values, r.Value...)
		}
		if out.Finished {
			break
		}
	}
	if string(values) != string([]byte{2, 3, 4}) {
		t.Fatalf("resumed with %v, want 2 3 4", values)
	}
	if _, err := NewChain(spec("test-upper")); err != nil {
		t.Fatal(err)
	}
	plain, _ := NewChain(spec("test-upper"))
	if _, err := plain.PollSource(1); err == nil {
		t.Fatal("a chain without a source was polled")
	}
}
