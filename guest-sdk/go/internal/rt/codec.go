package rt

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/sluice-streaming/sluice/guest-sdk/go/keygroup"
)

// Codec writes and reads a state value in snapshots. The codecs here write
// what the Rust SDK writes (postcard) for the same type, so a savepoint of
// a Go operator restores into a Rust one and back.
type Codec[S any] interface {
	// Append appends the encoding of s to b.
	Append(b []byte, s S) []byte
	// Decode reads a value from the front of b and says how many bytes it took.
	Decode(b []byte) (S, int, error)
}

var errShort = errors.New("state value is truncated")

// Uint64 is Rust's u64.
var Uint64 Codec[uint64] = uint64Codec{}

type uint64Codec struct{}

func (uint64Codec) Append(b []byte, v uint64) []byte { return keygroup.AppendUvarint(b, v) }
func (uint64Codec) Decode(b []byte) (uint64, int, error) {
	return keygroup.Uvarint(b)
}

// Int64 is Rust's i64.
var Int64 Codec[int64] = int64Codec{}

type int64Codec struct{}

func (int64Codec) Append(b []byte, v int64) []byte { return keygroup.AppendZigzag(b, v) }
func (int64Codec) Decode(b []byte) (int64, int, error) {
	u, n, err := keygroup.Uvarint(b)
	return int64(u>>1) ^ -int64(u&1), n, err
}

// Float64 is Rust's f64.
var Float64 Codec[float64] = float64Codec{}

type float64Codec struct{}

func (float64Codec) Append(b []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}
func (float64Codec) Decode(b []byte) (float64, int, error) {
	if len(b) < 8 {
		return 0, 0, errShort
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(b)), 8, nil
}

// Bytes is Rust's Vec<u8>.
var Bytes Codec[[]byte] = bytesCodec{}

type bytesCodec struct{}

func (bytesCodec) Append(b []byte, v []byte) []byte {
	return append(keygroup.AppendUvarint(b, uint64(len(v))), v...)
}
func (bytesCodec) Decode(b []byte) ([]byte, int, error) {
	n, used, err := keygroup.Uvarint(b)
	if err != nil {
		return nil, 0, err
	}
	if uint64(len(b)-used) < n {
		return nil, 0, errShort
	}
	end := used + int(n)
	return append([]byte(nil), b[used:end]...), end, nil
}

// String is Rust's String.
var String Codec[string] = stringCodec{}

type stringCodec struct{}

func (stringCodec) Append(b []byte, v string) []byte {
	return append(keygroup.AppendUvarint(b, uint64(len(v))), v...)
}
func (stringCodec) Decode(b []byte) (string, int, error) {
	v, n, err := bytesCodec{}.Decode(b)
	return string(v), n, err
}
