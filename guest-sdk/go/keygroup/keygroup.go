// Package keygroup maps record keys to key groups and subtasks, and encodes
// keyed state snapshots, exactly as the Rust crate sluice_keygroup and the
// Rust guest SDK do, so operators in either language agree on where every
// key lives and on the bytes of its snapshot.
//
// A job has a fixed number of key groups (its max-parallelism). A key
// belongs to key group Hash(key) % maxParallelism; subtask i of an operator
// with parallelism p owns a contiguous range of key groups.
package keygroup

// DefaultMaxParallelism is the number of key groups when a job sets none.
const DefaultMaxParallelism = 128

// KeyGroup is the key group of key among maxParallelism groups. A
// maxParallelism of 0 is treated as 1.
func KeyGroup(key []byte, maxParallelism uint32) uint32 {
	return uint32(Hash(key) % uint64(max(maxParallelism, 1)))
}

// Owner is the subtask (of parallelism) that owns key group kg.
func Owner(kg, maxParallelism, parallelism uint32) uint32 {
	m := uint64(max(maxParallelism, 1))
	return uint32(uint64(kg) * uint64(parallelism) / m)
}

// Range is the key groups [start, end) owned by subtask of parallelism:
// exactly those kg with Owner(kg, ...) == subtask.
func Range(subtask, maxParallelism, parallelism uint32) (start, end uint32) {
	s := uint64(subtask)
	m := uint64(max(maxParallelism, 1))
	p := uint64(max(parallelism, 1))
	// The first kg with kg*p/m >= s is ceil(s*m/p).
	lo := divCeil(s*m, p)
	hi := min(divCeil((s+1)*m, p), m)
	return uint32(lo), uint32(hi)
}

func divCeil(a, b uint64) uint64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}
