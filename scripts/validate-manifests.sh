#!/usr/bin/env bash
# Schema validation of the install, as the API server would check it: the kustomize base
# (manifests/) and `meshctl install` output (defaults, and every option set), strict (unknown
# fields are errors), against Kubernetes 1.32 (the oldest we support) and the newest version
# kubernetes-validate knows; then custom resources against the mesh's CRDs. Installs kubernetes-validate from PyPI into target/ when missing.
# Needs meshctl built (MESHCTL, default target/debug/meshctl). Exit status 1 on an invalid object.
set -euo pipefail
cd "$(dirname "$0")/.."
meshctl=${MESHCTL:-target/debug/meshctl}
venv=target/kubernetes-validate
if ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The base only lists files: without kubectl, joining them is what kustomize would render.
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize manifests >"$work/kustomize-base.yaml"; then
  echo "kustomize base rendered by $(kubectl version --client 2>/dev/null | grep -i kustomize || echo kubectl)"
else
  echo "note: no kubectl with kustomize: the base's resources are joined as listed"
  "$venv/bin/python" scripts/validate_manifests.py --render-base manifests >"$work/kustomize-base.yaml"
fi
"$meshctl" install >"$work/meshctl-install.yaml"
"$meshctl" install --set namespace=mesh-system --set image.registry=registry.example.com/mesh \
  --set image.tag=2.0.0 --set controller.replicas=3 --set trustDomain=example.org \
  --set controller.logLevel=debug --set ztunnel.logLevel=ztunnel=debug,info \
  >"$work/meshctl-install-options.yaml"
status=0
for version in 1.32 latest; do
  "$venv/bin/python" scripts/validate_manifests.py --kubernetes-version "$version" \
    "$work/kustomize-base.yaml" "$work/meshctl-install.yaml" "$work/meshctl-install-options.yaml" \
    || status=1
done
# The mesh's CRDs against what users write: every custom resource in examples/ and the
# controller's valid fixtures must be admitted, and each misspelt or out-of-range object in
# scripts/testdata/ refused at the field it names (`kubectl apply` refuses unknown fields).
fixtures=$(ls controller/tests/fixtures/*.yaml | grep -v -e invalid -e bad-yaml -e peer-authentication)
"$venv/bin/python" scripts/validate_custom_resources.py --crds manifests/crds \
  --expect-invalid scripts/testdata/custom-resources-invalid.yaml examples $fixtures || status=1
exit $status
