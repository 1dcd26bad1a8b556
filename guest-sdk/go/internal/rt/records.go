// Package rt is the SDK's runtime: the operators an application
// registered, its plan function, and the chains the host creates. The
// public package sluice re-exports what operator authors use.
package rt

import (
	"encoding/binary"
	"strconv"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"
)

// Markers of the contract's record metadata.
const (
	noKey       = ^uint32(0)
	noTimestamp = int64(-1 << 63)
)

// metaBytes is the size of one record's metadata in a batch (contract
// 0.2.0): key length (u32), value length (u32), event time (i64), all
// little-endian.
const metaBytes = 16

// Record is one record as an operator sees it. Key and Value point into
// the batch being processed: copy them to keep them past the call.
type Record struct {
	Key   []byte
	Value []byte
	// Whether the record has a key (an empty key is a key).
	HasKey bool
	// Event time, ms since the Unix epoch, if HasTimestamp.
	Timestamp    int64
	HasTimestamp bool
}

// Collector is where an operator emits records. Emit and EmitKeyed give
// the record the timestamp of the record being processed.
type Collector struct {
	data []byte
	// metaBytes per record emitted.
	meta []byte
	// The event time records emitted now get, if hasTS: that of the record
	// being processed or of the event-time timer firing.
	ts    int64
	hasTS bool
}

// Emit emits a record without a key.
func (c *Collector) Emit(value []byte) {
	c.push(nil, false, value, c.stamp())
}

// EmitKeyed emits a keyed record.
func (c *Collector) EmitKeyed(key, value []byte) {
	c.push(key, true, value, c.stamp())
}

// EmitAt emits a record with the given event time (ms).
func (c *Collector) EmitAt(key []byte, hasKey bool, value []byte, timestamp int64) {
	c.push(key, hasKey, value, timestamp)
}

func (c *Collector) stamp() int64 {
	if !c.hasTS {
		return noTimestamp
	}
	return c.ts
}

// EmitRecord emits a record as it is, key and timestamp included.
func (c *Collector) EmitRecord(r Record) {
	ts := noTimestamp
	if r.HasTimestamp {
		ts = r.Timestamp
	}
	c.push(r.Key, r.HasKey, r.Value, ts)
}

func (c *Collector) push(key []byte, hasKey bool, value []byte, ts int64) {
	keyLen := noKey
	if hasKey {
		keyLen = uint32(len(key))
		c.data = append(c.data, key...)
	}
	c.data = append(c.data, value...)
	c.meta = binary.LittleEndian.AppendUint32(c.meta, keyLen)
	c.meta = binary.LittleEndian.AppendUint32(c.meta, uint32(len(value)))
	c.meta = binary.LittleEndian.AppendUint64(c.meta, uint64(ts))
}

// count is how many records were emitted since the last take.
func (c *Collector) count() int {
	return len(c.meta) / metaBytes
}

// take returns what was emitted as a batch and empties the collector,
// keeping its buffers: the batch is read (by the next operator, or copied
// out by the host when the call returns) before anything is emitted again.
func (c *Collector) take() sluice_app_types.Batch {
	b := sluice_app_types.Batch{Data: c.data, Meta: c.meta}
	c.data, c.meta = c.data[:0], c.meta[:0]
	return b
}

// eachRecord calls f for every record of a batch, failing on a batch whose
// metadata is not a whole number of records (before any record) or whose
// lengths run past its data.
func eachRecord(b sluice_app_types.Batch, f func(Record) error) error {
	if len(b.Meta)%metaBytes != 0 {
		return Failed("malformed batch: its metadata has " + strconv.Itoa(len(b.Meta)) +
			" bytes, not a multiple of the " + strconv.Itoa(metaBytes) + " per record")
	}
	pos := uint64(0)
	size := uint64(len(b.Data))
	for m := b.Meta; len(m) >= metaBytes; m = m[metaBytes:] {
		keyLen := binary.LittleEndian.Uint32(m[0:4])
		valueLen := binary.LittleEndian.Uint32(m[4:8])
		ts := int64(binary.LittleEndian.Uint64(m[8:16]))
		r := Record{Timestamp: ts, HasTimestamp: ts != noTimestamp}
		if keyLen != noKey {
			end := pos + uint64(keyLen)
			if end > size {
				return Failed("a batch's record runs past its data")
			}
			r.Key, r.HasKey = b.Data[pos:end:end], true
			pos = end
		}
		end := pos + uint64(valueLen)
		if end > size {
			return Failed("a batch's record runs past its data")
		}
		r.Value = b.Data[pos:end:end]
		pos = end
		if err := f(r); err != nil {
			return err
		}
	}
	return nil
}
