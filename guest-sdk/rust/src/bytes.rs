//! Equality and appending of short byte strings (keys, words, small values)
//! in word-sized loads and stores.
//!
//! In a wasm32 guest the standard paths are slow for short strings:
//! `memcmp` is wasi-libc's byte-at-a-time loop, and a copy whose length is
//! known only at run time becomes `memory.copy`, which wasmtime runs as a
//! call out to the host. Keys in a stream are mostly a few to a few dozen
//! bytes, compared on every keyed-state lookup and copied on every emitted
//! record, so both showed up in profiles (benchmarks/README.md, "Native
//! versus wasm"). Longer strings take the standard paths, whose fixed cost
//! is then amortised. Native code keeps the standard paths: its `memcmp`
//! and `memcpy` are vectorised and beat these (measured: the native
//! wordcount ran about 7 % slower on the word versions).

/// Lengths up to this many bytes are appended without `memcpy`.
const SHORT: usize = 32;

/// Whether `a` and `b` hold the same bytes.
#[inline]
pub(crate) fn eq(a: &[u8], b: &[u8]) -> bool {
    if cfg!(target_arch = "wasm32") {
        eq_words(a, b)
    } else {
        a == b
    }
}

/// Appends `src` to `buf`.
#[inline]
pub(crate) fn append(buf: &mut Vec<u8>, src: &[u8]) {
    if cfg!(target_arch = "wasm32") {
        append_words(buf, src)
    } else {
        buf.extend_from_slice(src)
    }
}

/// [`eq`] in words.
#[inline]
fn eq_words(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        let (whole_a, _) = a.as_chunks::<8>();
        let (whole_b, _) = b.as_chunks::<8>();
        for (x, y) in whole_a.iter().zip(whole_b) {
            if u64::from_ne_bytes(*x) != u64::from_ne_bytes(*y) {
                return false;
            }
        }
        // The tail: the last eight bytes, overlapping the words above.
        return last8(a) == last8(b);
    }
    if n >= 4 {
        return first4(a) == first4(b) && last4(a) == last4(b);
    }
    // 0 to 3 bytes: the first, middle and last cover them all.
    n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1])
}

/// [`append`] in words.
#[inline]
fn append_words(buf: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    if n > SHORT || n == 0 {
        buf.extend_from_slice(src);
        return;
    }
    buf.reserve(n);
    let len = buf.len();
    let spare = &mut buf.spare_capacity_mut()[..n];
    // Fixed-size pieces (the compiler emits plain loads and stores for
    // them) that together cover `src`: the first and the last piece of the
    // largest size that fits, overlapping in the middle.
    if n >= 16 {
        put::<16>(spare, 0, first::<16>(src));
        put::<16>(spare, n - 16, last::<16>(src));
    } else if n >= 8 {
        put::<8>(spare, 0, first::<8>(src));
        put::<8>(spare, n - 8, last::<8>(src));
    } else if n >= 4 {
        put::<4>(spare, 0, first::<4>(src));
        put::<4>(spare, n - 4, last::<4>(src));
    } else {
        spare[0].write(src[0]);
        spare[n / 2].write(src[n / 2]);
        spare[n - 1].write(src[n - 1]);
    }
    // SAFETY: the `n` bytes after `len` were reserved above and every one of
    // them was written: the two pieces start at 0 and end at `n`, and each
    // is at least half of `n` long (or, below 4 bytes, the first, middle
    // and last byte are all of them).
    unsafe { buf.set_len(len + n) };
}

/// The first `N` bytes of `s` (`s` has at least `N`).
#[inline(always)]
fn first<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&s[..N]);
    out
}

/// The last `N` bytes of `s` (`s` has at least `N`).
#[inline(always)]
fn last<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&s[s.len() - N..]);
    out
}

#[inline(always)]
fn first4(s: &[u8]) -> u32 {
    u32::from_ne_bytes(first::<4>(s))
}

#[inline(always)]
fn last4(s: &[u8]) -> u32 {
    u32::from_ne_bytes(last::<4>(s))
}

#[inline(always)]
fn last8(s: &[u8]) -> u64 {
    u64::from_ne_bytes(last::<8>(s))
}

/// Writes `bytes` into `spare` at `at`.
#[inline(always)]
fn put<const N: usize>(spare: &mut [std::mem::MaybeUninit<u8>], at: usize, bytes: [u8; N]) {
    for (d, s) in spare[at..at + N].iter_mut().zip(bytes) {
        d.write(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_short_length_compares_and_appends_like_the_standard_paths() {
        let source: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for n in 0..=source.len() {
            let a = &source[..n];
            let copy = a.to_vec();
            assert!(eq_words(a, copy.as_slice()), "length {n} equal to a copy");
            for i in 0..n {
                // One byte different, at every position: never equal.
                let mut b = a.to_vec();
                b[i] ^= 0x80;
                assert!(!eq_words(a, &b), "length {n}, byte {i} differs");
            }
            // Appending after existing bytes, with and without spare room.
            for prefix in [0usize, 1, 7, 13] {
                let mut buf: Vec<u8> = vec![0xee; prefix];
                append_words(&mut buf, a);
                let mut want = vec![0xee; prefix];
                want.extend_from_slice(a);
                assert_eq!(buf, want, "length {n} after {prefix}");
                let mut roomy = Vec::with_capacity(200);
                roomy.extend_from_slice(&want[..prefix]);
                append_words(&mut roomy, a);
                assert_eq!(roomy, want, "length {n} after {prefix}, spare room");
            }
        }
        assert!(!eq_words(b"abc", b"abcd"), "different lengths");
        assert!(!eq_words(b"", b"a"));
    }

    proptest! {
        #[test]
        fn eq_and_append_agree_with_the_standard_paths(
            a in proptest::collection::vec(any::<u8>(), 0..70),
            b in proptest::collection::vec(any::<u8>(), 0..70),
            prefix in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            prop_assert_eq!(eq_words(&a, &b), a == b);
            let mut buf = prefix.clone();
            append_words(&mut buf, &a);
            let mut want = prefix;
            want.extend_from_slice(&a);
            prop_assert_eq!(buf, want);
        }
    }
}
