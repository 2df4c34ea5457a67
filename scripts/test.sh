#!/usr/bin/env bash
# Runs the whole test suite: unit tests, HBONE over real TLS, and the end-to-end tests that
# build sandboxes of network namespaces (hence root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/host-packages.sh
# The end-to-end tests drive the real binaries: build them all first.
cargo build --workspace --bins
cargo test --workspace "$@"
