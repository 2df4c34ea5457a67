#!/usr/bin/env bash
# Builds the mesh, brings up the demo shop in a sandbox of network namespaces on this
# machine, and shows cross-node service calls. `scripts/demo.sh --down` removes it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/host-packages.sh
cargo build --release --bins
meshctl=target/release/meshctl
export MESHCTL_SANDBOX=demo

"$meshctl" down >/dev/null 2>&1 || true
"$meshctl" up examples/demo --nodes 2
echo
"$meshctl" get pods -A
echo
echo "# the client pod calls the frontend service, which calls the orders service:"
"$meshctl" exec client -n default -- meshctl app curl http://frontend.shop:8080/
echo
echo "# 20 requests to orders, spread over replicas on both nodes:"
"$meshctl" exec client -n default -- meshctl app load --url http://orders.shop:8080/ -n 20 -c 2 --new-conn
echo
if [ "${1:-}" = "--down" ]; then
  "$meshctl" down
else
  echo "The sandbox is still up. Try: $meshctl --sandbox demo get svc -A"
  echo "Remove it with: $meshctl --sandbox demo down"
fi
