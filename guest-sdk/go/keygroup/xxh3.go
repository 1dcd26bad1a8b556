package keygroup

import (
	"encoding/binary"
	"math/bits"
)

// XXH3-64 with seed 0 and the default secret, written from the xxHash
// specification (doc/xxhash_spec.md). With seed 0 every "+ seed" and
// "- seed" term of the specification disappears.

const (
	prime32_1 = 0x9E3779B1
	prime32_2 = 0x85EBCA77
	prime32_3 = 0xC2B2AE3D
	prime64_1 = 0x9E3779B185EBCA87
	prime64_2 = 0xC2B2AE3D27D4EB4F
	prime64_3 = 0x165667B19E3779F9
	prime64_4 = 0x85EBCA77C2B2AE63
	prime64_5 = 0x27D4EB2F165667C5
	primeMx1  = 0x165667919E3779F9
	primeMx2  = 0x9FB21C651E98DF25
)

// The default 192-byte secret.
var secret = [192]byte{
	0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
	0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
	0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
	0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
	0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
	0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
	0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
	0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
	0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
	0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
	0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
	0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
}

const (
	stripeLen       = 64
	stripesPerBlock = (len(secret) - stripeLen) / 8 // 16
	blockLen        = stripeLen * stripesPerBlock   // 1024
)

func le32(b []byte, i int) uint64 { return uint64(binary.LittleEndian.Uint32(b[i:])) }
func le64(b []byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i:]) }

// mul128fold multiplies into 128 bits and folds the halves together.
func mul128fold(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func avalanche(x uint64) uint64 {
	x ^= x >> 37
	x *= primeMx1
	return x ^ x>>32
}

func avalancheXXH64(x uint64) uint64 {
	x ^= x >> 33
	x *= prime64_2
	x ^= x >> 29
	x *= prime64_3
	return x ^ x>>32
}

// Hash is XXH3-64 of key with seed 0 and the default secret, the hash
// Sluice routes records and places state by.
func Hash(key []byte) uint64 {
	n := len(key)
	switch {
	case n == 0:
		return avalancheXXH64(le64(secret[:], 56) ^ le64(secret[:], 64))
	case n <= 3:
		return hash1to3(key)
	case n <= 8:
		return hash4to8(key)
	case n <= 16:
		return hash9to16(key)
	case n <= 128:
		return hash17to128(key)
	case n <= 240:
		return hash129to240(key)
	default:
		return hashLarge(key)
	}
}

func hash1to3(p []byte) uint64 {
	n := len(p)
	combined := uint64(p[n-1]) | uint64(n)<<8 | uint64(p[0])<<16 | uint64(p[n>>1])<<24
	return avalancheXXH64((le32(secret[:], 0) ^ le32(secret[:], 4)) ^ combined)
}

func hash4to8(p []byte) uint64 {
	n := len(p)
	combined := le32(p, n-4) | le32(p, 0)<<32
	v := (le64(secret[:], 8) ^ le64(secret[:], 16)) ^ combined
	v ^= bits.RotateLeft64(v, 49) ^ bits.RotateLeft64(v, 24)
	v *= primeMx2
	v ^= (v >> 35) + uint64(n)
	v *= primeMx2
	return v ^ v>>28
}

func hash9to16(p []byte) uint64 {
	n := len(p)
	lo := (le64(secret[:], 24) ^ le64(secret[:], 32)) ^ le64(p, 0)
	hi := (le64(secret[:], 40) ^ le64(secret[:], 48)) ^ le64(p, n-8)
	return avalanche(uint64(n) + bits.ReverseBytes64(lo) + hi + mul128fold(lo, hi))
}

// mix16 mixes 16 bytes of input at off with 16 bytes of secret at s.
func mix16(p []byte, off, s int) uint64 {
	return mul128fold(le64(p, off)^le64(secret[:], s), le64(p, off+8)^le64(secret[:], s+8))
}

func hash17to128(p []byte) uint64 {
	n := len(p)
	acc := uint64(n) * prime64_1
	// Pairs of 16-byte chunks from both ends, innermost pair first.
	for i := (n - 1) >> 5; i >= 0; i-- {
		acc += mix16(p, i*16, i*32)
		acc += mix16(p, n-i*16-16, i*32+16)
	}
	return avalanche(acc)
}

func hash129to240(p []byte) uint64 {
	n := len(p)
	acc := uint64(n) * prime64_1
	for i := 0; i < 8; i++ {
		acc += mix16(p, i*16, i*16)
	}
	acc = avalanche(acc)
	for i := 8; i < n>>4; i++ {
		acc += mix16(p, i*16, (i-8)*16+3)
	}
	acc += mix16(p, n-16, 136-17)
	return avalanche(acc)
}

// accumulate folds one 64-byte stripe at p[off:] into acc using the secret
// from offset s.
func accumulate(acc *[8]uint64, p []byte, off, s int) {
	for i := 0; i < 8; i++ {
		lane := le64(p, off+i*8)
		v := lane ^ le64(secret[:], s+i*8)
		acc[i^1] += lane
		acc[i] += (v & 0xFFFFFFFF) * (v >> 32)
	}
}

func scramble(acc *[8]uint64) {
	for i := 0; i < 8; i++ {
		a := acc[i]
		a ^= a >> 47
		a ^= le64(secret[:], len(secret)-stripeLen+i*8)
		acc[i] = a * prime32_1
	}
}

func hashLarge(p []byte) uint64 {
	n := len(p)
	acc := [8]uint64{prime32_3, prime64_1, prime64_2, prime64_3, prime64_4, prime32_2, prime64_5, prime32_1}
	// Full blocks, leaving the last (possibly full) block for the tail step.
	off := 0
	for ; n-off > blockLen; off += blockLen {
		for s := 0; s < stripesPerBlock; s++ {
			accumulate(&acc, p, off+s*stripeLen, s*8)
		}
		scramble(&acc)
	}
	// The last block's stripes except its last one, then the input's last
	// 64 bytes (which may overlap the previous stripe).
	full := (n - off - 1) / stripeLen
	for s := 0; s < full; s++ {
		accumulate(&acc, p, off+s*stripeLen, s*8)
	}
	accumulate(&acc, p, n-stripeLen, len(secret)-stripeLen-7)

	result := uint64(n) * prime64_1
	for i := 0; i < 4; i++ {
		result += mul128fold(acc[2*i]^le64(secret[:], 11+16*i), acc[2*i+1]^le64(secret[:], 11+16*i+8))
	}
	return avalanche(result)
}
