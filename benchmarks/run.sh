#!/usr/bin/env bash
# Builds the guests and runs both benchmarks in release mode; each prints a
# markdown table (results and the machine are recorded in benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
cargo build --release --locked --target wasm32-wasip2 --manifest-path examples/Cargo.toml
cargo build --release --locked --target wasm32-wasip2 --manifest-path benchmarks/layout-guest/Cargo.toml
cargo build --release --locked --manifest-path benchmarks/Cargo.toml
echo "## native vs wasm (wordcount split -> count)"
benchmarks/target/release/native-vs-wasm examples/target/wasm32-wasip2/release/wordcount.wasm "$@"
echo
echo "## batch layout"
benchmarks/target/release/batch-layout \
    benchmarks/layout-guest/target/wasm32-wasip2/release/layout_guest.wasm
