#!/usr/bin/env bash
# Nexmark q0-q8 and the synthetic pipeline in Flink 2.3 and in Sluice on
# this machine, interleaved, checkpoints on; prints the table recorded in
# benchmarks/README.md. Options go to ab.py (see `--help` there), e.g.
#   bash benchmarks/flink/run.sh --queries "q0 q5" --parallelism 1 --runs 5
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(bash scripts/tools.sh)"
[ -n "${SLUICE_FLINK:-}" ] || { echo "Flink could not be installed (see above)" >&2; exit 1; }
command -v javac >/dev/null || { echo "javac (a JDK, 17 or newer) is needed" >&2; exit 1; }
flink_home=$(cd "$(dirname "$SLUICE_FLINK")/.." && pwd)

rustup target add wasm32-wasip2
cargo build --release --locked -p sluice-cli
cargo build --release --locked --target wasm32-wasip2 --manifest-path examples/Cargo.toml -p nexmark

# The Flink jobs, compiled against Flink's own jars (they run on its
# classpath, so the jar holds only our classes).
out=target/flink-bench
rm -rf "$out/classes"
mkdir -p "$out/classes"
javac --release 17 -d "$out/classes" -cp "$flink_home/lib/*" benchmarks/flink/src/sluice/bench/*.java
jar --create --file "$out/nexmark-flink.jar" -C "$out/classes" .

exec python3 benchmarks/flink/ab.py --flink-home "$flink_home" --flink-jar "$PWD/$out/nexmark-flink.jar" \
    --sluice "$PWD/target/release/sluice" \
    --wasm "$PWD/examples/target/wasm32-wasip2/release/nexmark.wasm" "$@"
