#!/usr/bin/env bash
# Runs the whole test suite: unit tests, HBONE over real TLS, and the end-to-end tests that
# build sandboxes of network namespaces (hence root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/host-packages.sh
# The end-to-end tests drive the real binaries: build them all first.
cargo build --workspace --bins
# The container images, from those debug binaries (stripped), each run once: the image
# test (e2e/tests/images.rs) runs them as the manifests do.
scripts/build-images.sh --profile debug
# The install manifests (kustomize base, `meshctl install`) against the Kubernetes API's
# schemas, 1.32 and the newest known: seconds (kubernetes-validate from PyPI, into target/).
scripts/validate-manifests.sh
# Includes the bounded fuzz run (fuzz/tests/bounded.rs): the seed corpus, then FUZZ_SECONDS
# (default 10) of mutants per target, about two minutes in all; FUZZ_SECONDS=0 keeps the
# corpus replay only.
if [[ -z "${ISTIO_ZTUNNEL_BIN:-}" ]]; then
  echo "note: ISTIO_ZTUNNEL_BIN is not set: the interop tests with Istio's ztunnel" \
    "(e2e/tests/istio_ztunnel.rs) pass as skipped; docs/interop.md says how to get a binary"
fi
cargo test --workspace "$@"
