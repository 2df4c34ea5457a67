#!/usr/bin/env bash
# Installs what the mesh needs from the host, when missing: iproute2 and iptables for the
# sandbox, a C compiler for the crypto crates, promtool for the alert rules' tests, chromium
# and its WebDriver for the dashboard's test, podman for the container images, and a Rust
# toolchain.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "this needs root: the sandbox creates network namespaces and iptables rules" >&2
    exit 1
  fi
}

ensure_packages() {
  local missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
  # promtool evaluates the alert rules of manifests/prometheus-rules.yaml in the tests.
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # The dashboard's end-to-end test drives a headless browser through WebDriver.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # scripts/build-images.sh builds the container images with podman and runs them with runc
  # (crun refuses hosts whose cgroups are in hybrid mode).
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "installing a Rust toolchain (rustup, stable)"
      apt-get install -y -qq --no-install-recommends rustup >/dev/null
      rustup default stable
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
}

need_root
ensure_packages
