package rt

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_task"
	"github.com/sluice-streaming/sluice/guest-sdk/go/keygroup"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// A keyed count driven by its records: numbers add to the count, `eT` and
// `pT` set an event-time or processing-time timer at T (as the Rust SDK's
// golden test does).
func init() {
	KeyedProcess("golden-count", Uint64, Keyed[uint64]{
		Process: func(ctx *KeyedContext[uint64], r Record, _ *Collector) error {
			for _, w := range strings.Fields(string(r.Value)) {
				switch {
				case w[0] == 'e' || w[0] == 'p':
					t, err := strconv.ParseInt(w[1:], 10, 64)
					if err != nil {
						return err
					}
					if w[0] == 'e' {
						ctx.RegisterEventTimer(t)
					} else {
						ctx.RegisterProcessingTimer(t)
					}
				default:
					n, err := strconv.ParseUint(w, 10, 64)
					if err != nil {
						return err
					}
					count, _ := ctx.State()
					ctx.SetState(count + n)
				}
			}
			return nil
		},
	})
}

type goldenSnapshot struct {
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
}

func golden(t *testing.T) goldenSnapshot {
	t.Helper()
	raw, err := os.ReadFile("../../../golden/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Snapshot goldenSnapshot `json:"keyed_snapshot"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Snapshot
}

func chunkMap(t *testing.T, chunks []sluice_app_task.StateChunk) map[uint32]string {
	t.Helper()
	out := map[uint32]string{}
	for _, c := range chunks {
		if c.KeyGroup.IsNone() {
			t.Fatal("a keyed chunk without a key group")
		}
		out[c.KeyGroup.Some()] = hex.EncodeToString(c.Data)
	}
	return out
}

func keyedSpec(subtask, parallelism, max uint32, restore []sluice_app_task.StateChunk) sluice_app_task.ChainSpec {
	s := spec("golden-count")
	s.Subtask, s.Parallelism, s.MaxParallelism, s.Restore = subtask, parallelism, max, restore
	return s
}

func TestAKeyedCountSnapshotsToTheGoldenBytes(t *testing.T) {
	g := golden(t)
	c, err := NewChain(keyedSpec(0, 1, g.MaxParallelism, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range g.Keys {
		key, _ := hex.DecodeString(k.KeyHex)
		words := []string{strconv.FormatUint(k.Count, 10)}
		for _, e := range k.EventTimers {
			words = append(words, fmt.Sprintf("e%d", e))
		}
		for _, p := range k.ProcessingTimers {
			words = append(words, fmt.Sprintf("p%d", p))
		}
		if _, err := c.Process(0, batch(Record{Key: key, HasKey: true, Value: []byte(strings.Join(words, " "))})); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := c.Snapshot(1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{}
	for _, ch := range g.Chunks {
		want[ch.KeyGroup] = ch.DataHex
	}
	if got := chunkMap(t, snap); !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot differs from the golden chunks:\n got %v\nwant %v", got, want)
	}
}

func TestGoldenChunksRestoreAcrossSubtasksAndSnapshotBackUnchanged(t *testing.T) {
	g := golden(t)
	all := map[uint32]string{}
	for s := uint32(0); s < 3; s++ {
		var mine []sluice_app_task.StateChunk
		want := map[uint32]string{}
		for _, ch := range g.Chunks {
			if keygroup.Owner(ch.KeyGroup, g.MaxParallelism, 3) != s {
				continue
			}
			data, _ := hex.DecodeString(ch.DataHex)
			mine = append(mine, sluice_app_task.StateChunk{KeyGroup: witTypes.Some(ch.KeyGroup), Data: data})
			want[ch.KeyGroup] = ch.DataHex
		}
		c, err := NewChain(keyedSpec(s, 3, g.MaxParallelism, mine))
		if err != nil {
			t.Fatal(err)
		}
		snap, err := c.Snapshot(1)
		if err != nil {
			t.Fatal(err)
		}
		got := chunkMap(t, snap)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("subtask %d: %v, want %v", s, got, want)
		}
		for kg, d := range got {
			all[kg] = d
		}
	}
	if len(all) != len(g.Chunks) {
		t.Fatalf("%d chunks came back of %d", len(all), len(g.Chunks))
	}
}

func TestStateOfAKeyGroupAnotherSubtaskOwnsIsRefused(t *testing.T) {
	g := golden(t)
	data, _ := hex.DecodeString(g.Chunks[0].DataHex)
	kg := g.Chunks[0].KeyGroup
	other := (keygroup.Owner(kg, g.MaxParallelism, 2) + 1) % 2
	_, err := NewChain(keyedSpec(other, 2, g.MaxParallelism, []sluice_app_task.StateChunk{{KeyGroup: witTypes.Some(kg), Data: data}}))
	if err == nil {
		t.Fatal("a foreign key group was restored")
	}
	_, err = NewChain(keyedSpec(0, 1, g.MaxParallelism, []sluice_app_task.StateChunk{{KeyGroup: witTypes.Some(kg), Data: data[:len(data)-1]}}))
	if err == nil || !strings.Contains(err.Error(), "corrupt keyed state") {
		t.Fatalf("a truncated chunk: %v", err)
	}
}

func TestTimersFireInTimeOrderOncePerKeyAndTimeWithTheirTimestamp(t *testing.T) {
	KeyedProcess("timer-echo", String, Keyed[string]{
		Process: func(ctx *KeyedContext[string], r Record, _ *Collector) error {
			n, err := strconv.ParseInt(string(r.Value), 10, 64)
			if err != nil {
				return err
			}
			ctx.RegisterEventTimer(n)
			ctx.RegisterEventTimer(n) // twice: fires once
			ctx.RegisterProcessingTimer(n + 1000)
			return nil
		},
		OnTimer: func(ctx *KeyedContext[string], tm Timer, out *Collector) error {
			out.EmitKeyed(ctx.Key(), []byte(fmt.Sprintf("%d/%d", tm.Domain, tm.Time)))
			return nil
		},
	})
	c, err := NewChain(spec("timer-echo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Process(0, batch(
		Record{Key: []byte("b"), HasKey: true, Value: []byte("20")},
		Record{Key: []byte("a"), HasKey: true, Value: []byte("10")},
		Record{Key: []byte("c"), HasKey: true, Value: []byte("30")},
	)); err != nil {
		t.Fatal(err)
	}
	out, err := c.AdvanceWatermark(20)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range records(t, out.Records) {
		got = append(got, fmt.Sprintf("%s:%s@%d", r.Key, r.Value, r.Timestamp))
	}
	if want := []string{"a:0/10@10", "b:0/20@20"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
	if !out.NextProcessingTimer.IsSome() || out.NextProcessingTimer.Some() != 1010 {
		t.Fatalf("next processing timer: %+v", out.NextProcessingTimer)
	}
	out, err = c.EndOfInput()
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, r := range records(t, out.Records) {
		got = append(got, string(r.Key)+":"+string(r.Value))
	}
	sort.Strings(got)
	if want := []string{"c:0/30"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
