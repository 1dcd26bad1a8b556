#!/usr/bin/env python3
"""Writes the golden vectors every Sluice SDK and the host are tested
against, so that operators written in different languages put every key in
the same key group, on the same subtask, in the same snapshot bytes.

It is deliberately independent of the Rust code: xxh3 comes from the C
xxHash library (PyPI `xxhash`), and the snapshot chunks are encoded here by
hand from postcard's rules. Run it only to add vectors:

    python3 -m pip install xxhash && python3 guest-sdk/golden/generate.py
"""

import json
import pathlib

import xxhash

HERE = pathlib.Path(__file__).resolve().parent
I64_MAX = 2**63 - 1


def keys():
    """Keys of every length class xxh3 treats differently (0, 1-3, 4-8,
    9-16, 17-128, 129-240, more), text and binary."""
    pattern = bytes(range(256))
    out = [b"", b"a", b"hi", b"abc", b"word", b"sluice!!", b"hello world",
           b"0123456789abcdef", b"seventeen bytes!!"]
    out += [b"stream " * 14 + b"xx"]  # 100 bytes
    out += [(pattern * 20)[:n] for n in (128, 129, 200, 240, 241, 1000, 4096)]
    out += ["straße".encode(), "日本語".encode(), "🦀 crab".encode()]
    out += [b"\x00", b"\xff\xfe", pattern]
    return out


def owner(kg, max_p, p):
    return kg * p // max_p


def key_groups():
    vectors = []
    for key in keys():
        h = xxhash.xxh3_64_intdigest(key)
        per_max = []
        for max_p in (1, 7, 128, 1000, 32768):
            kg = h % max_p
            owners = {str(p): owner(kg, max_p, p)
                      for p in (1, 2, 3, 4, 7, 16, 128) if p <= max_p}
            per_max.append({"max_parallelism": max_p, "key_group": kg,
                            "owner_by_parallelism": owners})
        vectors.append({"key_hex": key.hex(), "length": len(key),
                        "xxh3_64": str(h), "groups": per_max})
    return vectors


def varint(n):
    """postcard's unsigned LEB128."""
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n):
    return (n << 1) ^ (n >> 63)


def chunk(state, timers):
    """A key group's chunk: state entries sorted by key, then timers,
    event time before processing time, each sorted by (time, key)."""
    out = bytearray(varint(len(state)))
    for key, count in sorted(state.items()):
        out += varint(len(key)) + key + varint(count)
    ordered = sorted(timers, key=lambda t: (t[0] != "event", t[1], t[2]))
    out += varint(len(ordered))
    for domain, time, key in ordered:
        out += varint(0 if domain == "event" else 1)
        out += varint(zigzag(time)) + varint(len(key)) + key
    return bytes(out)


def snapshots():
    """A keyed count (state: an unsigned integer per key) with timers, at
    max-parallelism 128: what each key group's chunk holds."""
    max_p = 128
    # key -> (count, [event timer times], [processing timer times])
    keyed = {
        b"apple": (3, [I64_MAX], []),
        b"banana": (1, [100, -5], [1_700_000_000_000]),
        b"cherry": (300, [], []),
        b"": (2, [0], []),
        "日本語".encode(): (128, [], [42]),
        b"\x00\xff": (2**40, [I64_MAX, 7], [7]),
        b"zz": (127, [], []),
        b"zzz": (16384, [1], [1]),
    }
    # Keys sharing apple's key group, so a chunk holds several entries and
    # timers at the same time (their order is part of the format).
    apple = xxhash.xxh3_64_intdigest(b"apple") % max_p
    same = (k for k in (f"same-{i}".encode() for i in range(100_000))
            if xxhash.xxh3_64_intdigest(k) % max_p == apple)
    for n, key in zip((5, 6, 7), same):
        keyed[key] = (n, [100, I64_MAX], [n * 10, 100])
    groups = {}
    for key, (count, event, processing) in keyed.items():
        kg = xxhash.xxh3_64_intdigest(key) % max_p
        g = groups.setdefault(kg, ({}, []))
        g[0][key] = count
        g[1].extend(("event", t, key) for t in event)
        g[1].extend(("processing", t, key) for t in processing)
    records = [{"key_hex": k.hex(), "count": c, "event_timers": e,
                "processing_timers": p}
               for k, (c, e, p) in sorted(keyed.items())]
    chunks = [{"key_group": kg, "data_hex": chunk(*groups[kg]).hex()}
              for kg in sorted(groups)]
    return {"max_parallelism": max_p, "keys": records, "chunks": chunks}


FORMAT = [
    "key_groups: xxh3_64(key) with seed 0 (decimal string), key group = "
    "xxh3 % max_parallelism, owner = key_group * parallelism / "
    "max_parallelism (integer division).",
    "keyed_snapshot: one chunk per key group holding state or timers; a "
    "chunk is postcard: varint(n) then n (varint(len) key bytes, "
    "varint(count)) sorted by key bytes; then varint(m) and m timers "
    "(varint(domain: 0 event time, 1 processing time), zigzag varint(time), "
    "varint(len) key bytes), event-time timers first, each domain sorted by "
    "(time, key bytes).",
]


def main():
    doc = {"about": FORMAT, "key_groups": key_groups(),
           "keyed_snapshot": snapshots()}
    path = HERE / "vectors.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
