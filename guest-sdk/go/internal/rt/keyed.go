package rt

import (
	"container/heap"
	"fmt"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_app"
	"github.com/sluice-streaming/sluice/guest-sdk/go/keygroup"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// TimeDomain is the clock a timer follows.
type TimeDomain = keygroup.TimeDomain

// The clocks.
const (
	EventTime      = keygroup.EventTime
	ProcessingTime = keygroup.ProcessingTime
)

// Timer is a timer that fired.
type Timer struct {
	// When it was set to fire (ms).
	Time   int64
	Domain TimeDomain
}

// KeyedContext is the key being processed, its state and its timers.
type KeyedContext[S any] struct {
	key       []byte
	state     S
	has       bool
	timers    []timerAt
	watermark int64
	input     uint32
}

type timerAt struct {
	domain TimeDomain
	time   int64
}

// Key is the key being processed.
func (c *KeyedContext[S]) Key() []byte { return c.key }

// State is the key's state and whether it has any.
func (c *KeyedContext[S]) State() (S, bool) { return c.state, c.has }

// SetState sets the key's state.
func (c *KeyedContext[S]) SetState(s S) { c.state, c.has = s, true }

// ClearState deletes the key's state.
func (c *KeyedContext[S]) ClearState() {
	var zero S
	c.state, c.has = zero, false
}

// RegisterEventTimer fires OnTimer for this key once the watermark reaches
// time; registering the same time twice fires once.
func (c *KeyedContext[S]) RegisterEventTimer(time int64) {
	c.timers = append(c.timers, timerAt{EventTime, time})
}

// RegisterProcessingTimer fires OnTimer for this key once processing time
// reaches time.
func (c *KeyedContext[S]) RegisterProcessingTimer(time int64) {
	c.timers = append(c.timers, timerAt{ProcessingTime, time})
}

// Watermark is the current event-time watermark (math.MinInt64 before the first).
func (c *KeyedContext[S]) Watermark() int64 { return c.watermark }

// Input is the input the record came from: 0, or 1 for a CoProcess's second.
func (c *KeyedContext[S]) Input() uint32 { return c.input }

// Keyed is a keyed operator: Process runs once per record with the
// record's key's state; OnTimer (optional) when a timer of a key fires.
type Keyed[S any] struct {
	Process func(ctx *KeyedContext[S], r Record, out *Collector) error
	OnTimer func(ctx *KeyedContext[S], t Timer, out *Collector) error
}

// KeyedProcess registers a keyed operator whose state per key is an S,
// snapshotted with codec. Its input must be partitioned by hash.
func KeyedProcess[S any](name string, codec Codec[S], k Keyed[S]) {
	KeyedProcessWith(name, codec, func(Config) (Keyed[S], error) { return k, nil })
}

// KeyedProcessWith is KeyedProcess for an operator made from its node's
// configuration.
func KeyedProcessWith[S any](name string, codec Codec[S], create func(Config) (Keyed[S], error)) {
	registerKeyed(name, sluice_app_app.OperatorKindKeyedProcess, codec, create)
}

// CoProcess registers a keyed operator with two inputs (ctx.Input()).
func CoProcess[S any](name string, codec Codec[S], k Keyed[S]) {
	registerKeyed(name, sluice_app_app.OperatorKindCoProcess, codec, func(Config) (Keyed[S], error) { return k, nil })
}

func registerKeyed[S any](name string, kind sluice_app_app.OperatorKind, codec Codec[S], create func(Config) (Keyed[S], error)) {
	register(definition{name: name, kind: kind, create: func(c Config) (operator, error) {
		k, err := create(c)
		if err != nil {
			return nil, err
		}
		if k.Process == nil {
			return nil, InvalidConfig(fmt.Sprintf("keyed operator %q has no Process function", name))
		}
		return &keyedOp[S]{k: k, codec: codec, wm: minTime}, nil
	}})
}

const minTime = -1 << 63

// A pending timer; timers fire in (time, key group, key) order.
type timerKey struct {
	time int64
	kg   uint32
	key  string
}

func (a timerKey) less(b timerKey) bool {
	if a.time != b.time {
		return a.time < b.time
	}
	if a.kg != b.kg {
		return a.kg < b.kg
	}
	return a.key < b.key
}

// timerSet is a min-heap of timers without duplicates.
type timerSet struct {
	heap []timerKey
	in   map[timerKey]struct{}
}

func (s *timerSet) Len() int           { return len(s.heap) }
func (s *timerSet) Less(i, j int) bool { return s.heap[i].less(s.heap[j]) }
func (s *timerSet) Swap(i, j int)      { s.heap[i], s.heap[j] = s.heap[j], s.heap[i] }
func (s *timerSet) Push(x any)         { s.heap = append(s.heap, x.(timerKey)) }
func (s *timerSet) Pop() any {
	last := s.heap[len(s.heap)-1]
	s.heap = s.heap[:len(s.heap)-1]
	return last
}

func (s *timerSet) add(t timerKey) {
	if s.in == nil {
		s.in = map[timerKey]struct{}{}
	}
	if _, dup := s.in[t]; dup {
		return
	}
	s.in[t] = struct{}{}
	heap.Push(s, t)
}

// popDue removes and returns the first timer at or before upto.
func (s *timerSet) popDue(upto int64) (timerKey, bool) {
	if len(s.heap) == 0 || s.heap[0].time > upto {
		return timerKey{}, false
	}
	t := heap.Pop(s).(timerKey)
	delete(s.in, t)
	return t, true
}

type keyedOp[S any] struct {
	k     Keyed[S]
	codec Codec[S]
	at    openContext
	first uint32
	// One map per owned key group, indexed by kg - first. Values are
	// pointers so that a known key's state is found and updated without
	// allocating (only a new key costs a string and a value).
	groups     []map[string]*S
	event      timerSet
	processing timerSet
	wm         int64
	ctx        KeyedContext[S]
}

func (o *keyedOp[S]) open(at openContext) error {
	o.at = at
	start, end := keygroup.Range(at.subtask, at.maxParallelism, at.parallelism)
	o.first = start
	o.groups = make([]map[string]*S, end-start)
	for i := range o.groups {
		o.groups[i] = map[string]*S{}
	}
	return nil
}

func (o *keyedOp[S]) group(kg uint32) (map[string]*S, error) {
	if kg < o.first || kg-o.first >= uint32(len(o.groups)) {
		return nil, Failed(fmt.Sprintf("key group %d does not belong to subtask %d of %d (max parallelism %d): is the input of this keyed operator partitioned by hash?", kg, o.at.subtask, o.at.parallelism, o.at.maxParallelism))
	}
	return o.groups[kg-o.first], nil
}

// withKey runs call with key's state, then stores the state and files the
// timers it registered.
func (o *keyedOp[S]) withKey(key []byte, kg uint32, input uint32, call func(*KeyedContext[S]) error) error {
	m, err := o.group(kg)
	if err != nil {
		return err
	}
	c := &o.ctx
	c.key, c.input, c.watermark, c.timers = key, input, o.wm, c.timers[:0]
	slot, found := m[string(key)]
	var zero S
	c.state, c.has = zero, found
	if found {
		c.state = *slot
	}
	err = call(c)
	switch {
	case c.has && found:
		*slot = c.state
	case c.has:
		v := c.state
		m[string(key)] = &v
	case found:
		delete(m, string(key))
	}
	for _, t := range c.timers {
		tk := timerKey{t.time, kg, string(key)}
		if t.domain == EventTime {
			o.event.add(tk)
		} else {
			o.processing.add(tk)
		}
	}
	c.state, c.key = zero, nil
	return err
}

func (o *keyedOp[S]) process(input uint32, r Record, out *Collector) error {
	if !r.HasKey {
		return Failed("a keyed operator received a record without a key: emit keyed records upstream")
	}
	kg := keygroup.KeyGroup(r.Key, o.at.maxParallelism)
	return o.withKey(r.Key, kg, input, func(c *KeyedContext[S]) error { return o.k.Process(c, r, out) })
}

func (o *keyedOp[S]) fire(domain TimeDomain, upto int64, out *Collector) error {
	set := &o.event
	if domain == ProcessingTime {
		set = &o.processing
	}
	defer func() { out.hasTS = false }()
	for {
		t, ok := set.popDue(upto)
		if !ok {
			return nil
		}
		if o.k.OnTimer == nil {
			continue
		}
		out.ts, out.hasTS = t.time, domain == EventTime
		timer := Timer{Time: t.time, Domain: domain}
		err := o.withKey([]byte(t.key), t.kg, 0, func(c *KeyedContext[S]) error { return o.k.OnTimer(c, timer, out) })
		if err != nil {
			return err
		}
	}
}

func (o *keyedOp[S]) watermark(w int64, out *Collector) error {
	if w > o.wm {
		o.wm = w
	}
	return o.fire(EventTime, w, out)
}

func (o *keyedOp[S]) processingTime(now int64, out *Collector) error {
	return o.fire(ProcessingTime, now, out)
}

// endOfInput: bounded input ended, so event time is complete and every
// event-time timer fires.
func (o *keyedOp[S]) endOfInput(out *Collector) error {
	return o.watermark(1<<63-1, out)
}

func (o *keyedOp[S]) nextProcessingTimer() (int64, bool) {
	if len(o.processing.heap) == 0 {
		return 0, false
	}
	return o.processing.heap[0].time, true
}

func (o *keyedOp[S]) snapshot() ([]chunk, error) {
	timers := map[uint32][]keygroup.Timer{}
	for domain, set := range map[TimeDomain]*timerSet{EventTime: &o.event, ProcessingTime: &o.processing} {
		for _, t := range set.heap {
			timers[t.kg] = append(timers[t.kg], keygroup.Timer{Domain: domain, Time: t.time, Key: []byte(t.key)})
		}
	}
	var out []chunk
	for i, m := range o.groups {
		kg := o.first + uint32(i)
		if len(m) == 0 && len(timers[kg]) == 0 {
			continue
		}
		entries := make([]keygroup.Entry, 0, len(m))
		for k, v := range m {
			entries = append(entries, keygroup.Entry{Key: []byte(k), Value: o.codec.Append(nil, *v)})
		}
		out = append(out, chunk{keyGroup: witTypes.Some(kg), data: keygroup.EncodeChunk(entries, timers[kg])})
	}
	return out, nil
}

func (o *keyedOp[S]) restore(keyGroup witTypes.Option[uint32], data []byte) error {
	if keyGroup.IsNone() {
		return Failed("a keyed operator got state of no key group")
	}
	kg := keyGroup.Some()
	m, err := o.group(kg)
	if err != nil {
		return err
	}
	size := func(b []byte) (int, error) {
		_, n, err := o.codec.Decode(b)
		return n, err
	}
	entries, timers, err := keygroup.DecodeChunk(data, size)
	if err != nil {
		return Failed(fmt.Sprintf("corrupt keyed state for key group %d: %v", kg, err))
	}
	for _, e := range entries {
		v, _, err := o.codec.Decode(e.Value)
		if err != nil {
			return Failed(fmt.Sprintf("corrupt keyed state for key group %d: %v", kg, err))
		}
		m[string(e.Key)] = &v
	}
	for _, t := range timers {
		tk := timerKey{t.Time, kg, string(t.Key)}
		if t.Domain == EventTime {
			o.event.add(tk)
		} else {
			o.processing.add(tk)
		}
	}
	return nil
}
