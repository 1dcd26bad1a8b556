#!/usr/bin/env bash
# Builds the guests and runs the benchmarks in release mode; each prints a
# markdown table (results and the machine are recorded in benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
cargo build --release --locked --target wasm32-wasip2 --manifest-path examples/Cargo.toml
cargo build --release --locked --target wasm32-wasip2 --manifest-path benchmarks/layout-guest/Cargo.toml
cargo build --release --locked --target wasm32-wasip2 --manifest-path benchmarks/shuffle-guest/Cargo.toml
cargo build --release --locked --manifest-path benchmarks/Cargo.toml
# The Go wordcount too, when Go is installed (scripts/tools.sh installs it).
go_bin=${SLUICE_GO:-$(command -v go || true)}
go_flags=()
if [ -n "$go_bin" ]; then
    cargo build --locked -p sluice-cli
    target/debug/sluice build examples/go/wordcount -o target/go-wordcount.wasm --go "$go_bin"
    go_flags=(--go target/go-wordcount.wasm)
fi
echo "## native vs wasm (wordcount split -> count)"
benchmarks/target/release/native-vs-wasm examples/target/wasm32-wasip2/release/wordcount.wasm \
    "${go_flags[@]}" "$@"
echo
echo "## batch layout"
benchmarks/target/release/batch-layout \
    benchmarks/layout-guest/target/wasm32-wasip2/release/layout_guest.wasm
echo
echo "## QUIC shuffle between two TaskManagers"
benchmarks/target/release/quic-shuffle \
    benchmarks/shuffle-guest/target/wasm32-wasip2/release/shuffle_guest.wasm 5
echo
echo "## What exactly-once checkpoints cost"
benchmarks/target/release/checkpoint-cost \
    examples/target/wasm32-wasip2/release/exactly_once.wasm 5
echo
echo "## Failover after a TaskManager's kill -9"
benchmarks/target/release/failover \
    examples/target/wasm32-wasip2/release/exactly_once.wasm 3
echo
echo "## Starting operators and live instances (small policy)"
benchmarks/target/release/scale examples/target/wasm32-wasip2/release/wordcount.wasm \
    policies/small.toml 1000
