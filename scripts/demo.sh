#!/usr/bin/env bash
# Sets everything up on a machine with rustup and cargo, then runs the
# wordcount example on the embedded mini-cluster at parallelism 4 over this
# repository's README. Output: target/demo/wordcount/part-*.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
cargo build --release --locked --target wasm32-wasip2 --manifest-path examples/Cargo.toml
cargo build --locked -p sluice-cli
out=target/demo/wordcount
rm -rf "$out"
target/debug/sluice run examples/target/wasm32-wasip2/release/wordcount.wasm \
    --parallelism 4 --arg input=README.md --arg output="$out"
echo "--- the 10 most frequent words (from $out/part-*):"
# sed reads to the end: with pipefail, `head` would kill sort with SIGPIPE.
sort -t$'\t' -k2,2nr -k1,1 "$out"/part-* | sed -n '1,10p'
