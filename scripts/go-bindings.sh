#!/usr/bin/env bash
# Regenerates the Go SDK's bindings to the contract (wit/sluice.wit) with
# wit-bindgen-cli's Go generator, and vendors the small runtime package
# (go.bytecodealliance.org/pkg, Apache-2.0) they import, since these
# machines reach no Go module proxy. Installing the generator takes about
# 25 minutes, so its output is committed; `go test` in guest-sdk/go fails
# when wit/sluice.wit changed without a rerun (internal/wit/WIT_SHA256).
#
#   bash scripts/go-bindings.sh        # needs Go (scripts/tools.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.62.0
root=target/tools/wit-bindgen
bin=${WIT_BINDGEN:-$root/bin/wit-bindgen}
if [ ! -x "$bin" ]; then
    cargo install --locked wit-bindgen-cli --version "$version" \
        --no-default-features --features go --root "$root"
fi
go=${SLUICE_GO:-go}
gofmt="$("$go" env GOROOT)/bin/gofmt"
sdk=guest-sdk/go
out=$sdk/internal/wit
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$bin" go --format=false -w application \
    --pkg-name github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit \
    --out-dir "$scratch" wit/sluice.wit >/dev/null
# Replace only what the generator writes: the export packages also hold the
# SDK's own files.
find "$out" \( -name wit_bindings.go -o -name wit_exports.go -o -name empty.s \) -delete 2>/dev/null || true
(cd "$scratch" && find . -type f) | while read -r f; do
    mkdir -p "$out/$(dirname "$f")"
    cp "$scratch/$f" "$out/$f"
done
"$gofmt" -w "$out"
sha256sum wit/sluice.wit | cut -d' ' -f1 > "$out/WIT_SHA256"
# The runtime package the bindings import, from the generator's own source.
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wit-bindgen-go-"$version"/src/pkg | head -1)
rm -rf "$sdk/third_party/go-pkg"
mkdir -p "$sdk/third_party/go-pkg/wit"
cp -r "$src/wit/runtime" "$src/wit/types" "$src/wit/async" "$sdk/third_party/go-pkg/wit/"
cp "$src/LICENSE" "$src/go.mod" "$sdk/third_party/go-pkg/"
echo "go-bindings: regenerated $out from wit/sluice.wit"
