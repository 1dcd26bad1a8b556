#!/usr/bin/env bash
# Sets everything up on a machine with rustup and cargo, then runs every
# check and test: formatting, clippy on host and guests, and the whole test
# suite (the guests under examples/ are built by host/test-programs),
# including the checks against a real Prometheus and Flink's own CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
rustup component add rustfmt clippy
# Prometheus and Flink's CLI, for the tests that check compatibility with them.
eval "$(bash scripts/tools.sh)"
cargo fmt --all -- --check
(cd examples && cargo fmt --all -- --check)
cargo clippy --locked --target wasm32-wasip2 --manifest-path examples/Cargo.toml -- -D warnings
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
