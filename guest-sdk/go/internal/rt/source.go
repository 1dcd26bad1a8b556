package rt

import (
	"fmt"
	"strconv"

	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_app"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Source produces records inside the component; its position is part of
// every snapshot, so a restored job resumes where the snapshot was taken.
type Source interface {
	// Open is called once before polling, with this subtask's index and
	// the parallelism.
	Open(subtask, parallelism uint32) error
	// Poll emits up to max records.
	Poll(max uint32, out *Collector) (SourceStatus, error)
	// Snapshot is the position to resume from.
	Snapshot() []byte
	// Restore resumes from a position Snapshot returned.
	Restore(position []byte) error
}

// SourceStatus is what a poll says about the source.
type SourceStatus struct {
	finished     bool
	watermark    int64
	hasWatermark bool
}

// More: the source has more records.
var More = SourceStatus{}

// Finished: the source is exhausted.
var Finished = SourceStatus{finished: true}

// WatermarkAt: no record this source emits later is older than w.
func WatermarkAt(w int64) SourceStatus {
	return SourceStatus{watermark: w, hasWatermark: true}
}

// RegisterSource registers a source made from its node's configuration.
func RegisterSource(name string, create func(Config) (Source, error)) {
	register(definition{name: name, kind: sluice_app_app.OperatorKindSource,
		create: func(c Config) (operator, error) {
			s, err := create(c)
			if err != nil {
				return nil, err
			}
			return &sourceOp{s}, nil
		}})
}

type sourceOp struct{ s Source }

func (o *sourceOp) open(at openContext) error { return o.s.Open(at.subtask, at.parallelism) }

func (o *sourceOp) process(uint32, Record, *Collector) error {
	return Failed("a source has no input")
}

func (o *sourceOp) snapshot() ([]chunk, error) {
	return []chunk{{keyGroup: witTypes.None[uint32](), data: o.s.Snapshot()}}, nil
}

func (o *sourceOp) restore(kg witTypes.Option[uint32], data []byte) error {
	if kg.IsSome() {
		return Failed("a source got keyed state")
	}
	return o.s.Restore(data)
}

// Config is an operator's configuration: the KEY=VALUE pairs of its node.
type Config map[string]string

// Int is an integer setting, or def when it is not set.
func (c Config) Int(key string, def int64) (int64, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, InvalidConfig(fmt.Sprintf("setting `%s` is not an integer: %q", key, v))
	}
	return n, nil
}
