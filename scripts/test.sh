#!/usr/bin/env bash
# Sets everything up on a machine with rustup and cargo, then runs every
# check and test: formatting, clippy on host and guests, the Go SDK's
# checks and tests, and the whole test suite (the guests under examples/
# are built by host/test-programs),
# including the checks against a real Prometheus and Flink's own CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
rustup component add rustfmt clippy
# Prometheus, Flink's CLI, moto and Go, for the tests that use them.
eval "$(bash scripts/tools.sh)"
cargo fmt --all -- --check
# The Go SDK (guest-sdk/go): formatting, vet, its tests, and bindings that
# match wit/sluice.wit. Everything it builds with is in the repository.
export GOPROXY=off GOTOOLCHAIN=local
if [ -n "${SLUICE_GO:-}" ]; then
    unformatted=$("$("$SLUICE_GO" env GOROOT)/bin/gofmt" -l guest-sdk/go/keygroup \
        guest-sdk/go/internal/rt guest-sdk/go/sluice examples/go)
    if [ -n "$unformatted" ]; then
        echo "gofmt would change: $unformatted" >&2
        exit 1
    fi
    (cd guest-sdk/go &&
        "$SLUICE_GO" vet ./keygroup/... ./internal/rt/... ./sluice/... &&
        # The files TinyGo would build instead, type-checked (README, "In Go").
        "$SLUICE_GO" vet -tags tinygo ./keygroup/... ./internal/rt/... ./sluice/... &&
        "$SLUICE_GO" test -count=1 ./...)
elif [ -n "${CI:-}" ]; then
    echo "Go is not installed (scripts/tools.sh installs it)" >&2
    exit 1
fi
(cd examples && cargo fmt --all -- --check)
cargo clippy --locked --target wasm32-wasip2 --manifest-path examples/Cargo.toml -- -D warnings
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
