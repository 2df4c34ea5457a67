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
echo "# enrol the shop namespace: its running pods are captured where they are, no restart"
"$meshctl" label namespace shop istio.io/dataplane-mode=ambient
# The node agents install the in-pod rules as soon as the controller says the pods are enrolled.
for _ in $(seq 50); do
  if "$meshctl" logs ztunnel --node node1 2>/dev/null | grep -q "starting pod proxy"; then break; fi
  sleep 0.2
done
sleep 1
"$meshctl" exec client -n default -- meshctl app load --url http://frontend.shop:8080/ -n 20 -c 2 --new-conn
echo
echo "# frontend -> orders now travels over HBONE (mutual TLS); ztunnel's view on node1:"
ip netns exec ms-demo.node1 "$meshctl" app curl http://127.0.0.1:15020/metrics \
  | grep '^istio_tcp_connections_opened_total' \
  | sed -E 's/.*source_workload="([^"]*)".*destination_workload="([^"]*)".*connection_security_policy="([^"]*)"\} ([0-9]+)/  \1 -> \2: \4 connections, \3/' || true
echo
if [ "${1:-}" = "--down" ]; then
  "$meshctl" down
else
  echo "The sandbox is still up. Try: $meshctl --sandbox demo get svc -A"
  echo "Remove it with: $meshctl --sandbox demo down"
fi
