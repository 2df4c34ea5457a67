"""Validates Kubernetes manifests against the API's own schemas (kubernetes-validate, strict:
unknown fields are errors), for one Kubernetes version. Objects of kinds a CRD defines (not a
built-in API group) have no schema there: they are skipped with a note. Exit status 1 on any
invalid object, or on a file holding none.

    python validate_manifests.py --kubernetes-version 1.32 FILE...   (or: latest)
    python validate_manifests.py --render-base DIR   (the kustomization's resources, joined)
"""

import argparse
import os
import sys

import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version

# API groups without a dot that Kubernetes itself serves; dotted built-in groups end in k8s.io.
BUILT_IN_GROUPS = {"", "apps", "batch", "policy", "autoscaling"}


def is_built_in(api_version):
    group = api_version.rpartition("/")[0]
    return group in BUILT_IN_GROUPS or group.endswith(".k8s.io")


def validate_file(path, version):
    """The number of objects validated; prints and counts every failure."""
    with open(path, encoding="utf-8") as f:
        documents = [d for d in yaml.safe_load_all(f) if d is not None]
    failures = 0
    for document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if is_built_in(document.get("apiVersion", "")):
                print(f"FAIL {path}: {name}: no {document.get('apiVersion')} in Kubernetes {version}")
                failures += 1
            else:
                print(f"note {path}: {name} ({document.get('apiVersion')}) is a custom resource: no schema, skipped")
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            print(f"FAIL {path}: {name}: {where}: {e.message}")
            failures += 1
    if not documents:
        print(f"FAIL {path}: no objects")
        failures += 1
    return len(documents), failures


def strictness_is_on(version):
    """A field no Service has must be refused, or this validation proves nothing."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe"}, "spec": {"portz": []}}
    try:
        kubernetes_validate.validate(bad, version, strict=True)
    except kubernetes_validate.ValidationError:
        return True
    return False


def render_base(folder):
    """What `kubectl kustomize` prints for a base that only lists files (order aside)."""
    with open(os.path.join(folder, "kustomization.yaml"), encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    if unsupported:
        sys.exit(f"{folder}/kustomization.yaml uses {sorted(unsupported)}: render it with kubectl kustomize")
    for resource in kustomization["resources"]:
        with open(os.path.join(folder, resource), encoding="utf-8") as f:
            print("---")
            print(f.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubernetes-version")
    parser.add_argument("--render-base", metavar="DIR")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.render_base:
        render_base(args.render_base)
        return 0
    version = latest_version() if args.kubernetes_version == "latest" else args.kubernetes_version
    if not strictness_is_on(version):
        print(f"FAIL kubernetes-validate accepted an unknown field for Kubernetes {version}")
        return 1
    failed = 0
    for path in args.files:
        count, failures = validate_file(path, version)
        failed += failures
        verdict = "valid" if failures == 0 else f"{failures} invalid"
        print(f"{path}: {count} objects, {verdict} against Kubernetes {version} (strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
