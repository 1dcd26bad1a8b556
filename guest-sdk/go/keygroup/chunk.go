package keygroup

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// A key group's snapshot chunk is the postcard encoding of the Rust SDK's
//
//	struct { state: Vec<(Vec<u8>, S)>, timers: Vec<(TimeDomain, i64, Vec<u8>)> }
//
// with state sorted by key and timers event time first, then by (time, key),
// so that the same state always gives the same bytes in every SDK.

// TimeDomain is the clock a timer follows.
type TimeDomain uint8

const (
	// EventTime timers fire when the watermark reaches their time.
	EventTime TimeDomain = 0
	// ProcessingTime timers fire when the host's wall clock reaches their time.
	ProcessingTime TimeDomain = 1
)

// Timer is a timer registered for a key.
type Timer struct {
	Domain TimeDomain
	Time   int64
	Key    []byte
}

// Entry is one key's state. Value is the postcard encoding of the state.
type Entry struct {
	Key   []byte
	Value []byte
}

// EncodeChunk encodes one key group's state entries and timers. It sorts
// copies of its arguments; the caller's slices are left as they were.
func EncodeChunk(entries []Entry, timers []Timer) []byte {
	es := slices.Clone(entries)
	slices.SortStableFunc(es, func(a, b Entry) int { return bytes.Compare(a.Key, b.Key) })
	ts := slices.Clone(timers)
	slices.SortStableFunc(ts, compareTimers)

	var out []byte
	out = AppendUvarint(out, uint64(len(es)))
	for _, e := range es {
		out = AppendUvarint(out, uint64(len(e.Key)))
		out = append(out, e.Key...)
		out = append(out, e.Value...)
	}
	out = AppendUvarint(out, uint64(len(ts)))
	for _, t := range ts {
		out = AppendUvarint(out, uint64(t.Domain))
		out = AppendZigzag(out, t.Time)
		out = AppendUvarint(out, uint64(len(t.Key)))
		out = append(out, t.Key...)
	}
	return out
}

func compareTimers(a, b Timer) int {
	if c := cmp.Compare(a.Domain, b.Domain); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Time, b.Time); c != 0 {
		return c
	}
	return bytes.Compare(a.Key, b.Key)
}

// ErrTruncated is returned when input ends inside a value.
var ErrTruncated = errors.New("keygroup: truncated input")

// DecodeChunk decodes a chunk written by EncodeChunk (or the Rust SDK).
// decodeValue is given the bytes from the start of a state value onwards and
// returns how many of them the value takes. Keys and values in the result
// are copies, so data may be reused afterwards. Bytes left over after the
// timers are an error.
func DecodeChunk(data []byte, decodeValue func([]byte) (n int, err error)) (entries []Entry, timers []Timer, err error) {
	d := decoder{b: data}
	n, err := d.count()
	if err != nil {
		return nil, nil, fmt.Errorf("keygroup: state entry count: %w", err)
	}
	entries = make([]Entry, 0, n)
	for i := 0; i < n; i++ {
		key, err := d.bytes()
		if err != nil {
			return nil, nil, fmt.Errorf("keygroup: key of state entry %d: %w", i, err)
		}
		size, err := decodeValue(d.b[d.off:])
		if err != nil {
			return nil, nil, fmt.Errorf("keygroup: value of state entry %d: %w", i, err)
		}
		if size < 0 || size > len(d.b)-d.off {
			return nil, nil, fmt.Errorf("keygroup: value of state entry %d: decoder reported %d bytes of %d", i, size, len(d.b)-d.off)
		}
		value := slices.Clone(d.b[d.off : d.off+size : d.off+size])
		d.off += size
		entries = append(entries, Entry{Key: key, Value: value})
	}

	m, err := d.count()
	if err != nil {
		return nil, nil, fmt.Errorf("keygroup: timer count: %w", err)
	}
	timers = make([]Timer, 0, m)
	for i := 0; i < m; i++ {
		domain, err := d.uvarint()
		if err != nil {
			return nil, nil, fmt.Errorf("keygroup: domain of timer %d: %w", i, err)
		}
		if domain > uint64(ProcessingTime) {
			return nil, nil, fmt.Errorf("keygroup: timer %d has unknown time domain %d", i, domain)
		}
		z, err := d.uvarint()
		if err != nil {
			return nil, nil, fmt.Errorf("keygroup: time of timer %d: %w", i, err)
		}
		key, err := d.bytes()
		if err != nil {
			return nil, nil, fmt.Errorf("keygroup: key of timer %d: %w", i, err)
		}
		timers = append(timers, Timer{Domain: TimeDomain(domain), Time: unzigzag(z), Key: key})
	}
	if d.off != len(d.b) {
		return nil, nil, fmt.Errorf("keygroup: %d bytes left over after the timers", len(d.b)-d.off)
	}
	return entries, timers, nil
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) uvarint() (uint64, error) {
	v, n, err := Uvarint(d.b[d.off:])
	d.off += n
	return v, err
}

// count reads a sequence length. Every element takes at least one byte, so
// a count above the bytes left is corrupt; checking it here also bounds the
// allocation a corrupt count could ask for.
func (d *decoder) count() (int, error) {
	v, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if v > uint64(len(d.b)-d.off) {
		return 0, ErrTruncated
	}
	return int(v), nil
}

// bytes reads a length-prefixed byte string and returns a copy of it.
func (d *decoder) bytes() ([]byte, error) {
	v, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if v > uint64(len(d.b)-d.off) {
		return nil, ErrTruncated
	}
	n := int(v)
	out := make([]byte, n)
	copy(out, d.b[d.off:d.off+n])
	d.off += n
	return out, nil
}

// AppendUvarint appends v as postcard's unsigned varint (LEB128, low seven
// bits first).
func AppendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// maxVarintLen is the most bytes postcard uses for a u64.
const maxVarintLen = 10

// Uvarint decodes a postcard unsigned varint from the front of b, returning
// the value and the number of bytes it took. Like postcard, it rejects
// encodings longer than 10 bytes or whose 10th byte holds more than the
// 64th bit.
func Uvarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < maxVarintLen; i++ {
		if i == len(b) {
			return 0, 0, ErrTruncated
		}
		c := b[i]
		v |= uint64(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			if i == maxVarintLen-1 && c > 1 {
				return 0, 0, errors.New("keygroup: varint overflows 64 bits")
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("keygroup: varint longer than 10 bytes")
}

// AppendZigzag appends v as postcard encodes signed integers: zigzag
// (0, -1, 1, -2, ... become 0, 1, 2, 3, ...) then an unsigned varint.
func AppendZigzag(b []byte, v int64) []byte {
	return AppendUvarint(b, uint64(v<<1)^uint64(v>>63))
}

func unzigzag(z uint64) int64 {
	return int64(z>>1) ^ -int64(z&1)
}
