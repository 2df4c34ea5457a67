"""Validates custom resources against the mesh's CRDs (manifests/crds/) as the API server
does with strict field validation (kubectl's default): every field must be in the served
version's schema (unknown fields are errors, except under x-kubernetes-preserve-unknown-fields),
types, enums, patterns, bounds and required fields hold. CEL rules (x-kubernetes-validations)
are not evaluated. Also checks that every schema is structural, as the API server requires.

    python validate_custom_resources.py --crds DIR [--expect-invalid FILE]... FILE_OR_DIR...

Objects of kinds no CRD in DIR defines are skipped. Every object in an --expect-invalid file
must be refused at the path its annotation `validate.mesh.io/invalid-at` names (for example
`spec.mtls.mdoe`), so that a schema that became open again fails this check. Exit status 1 on
any failure.
"""

import argparse
import copy
import os
import sys

import jsonschema
import yaml

EXPECTATION = "validate.mesh.io/invalid-at"
# Fields the API server accepts at the root of every object, whatever its schema says.
ROOT_FIELDS = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def yaml_files(paths):
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in sorted(os.walk(path)):
                for name in sorted(names):
                    if name.endswith((".yaml", ".yml")):
                        yield os.path.join(root, name)
        else:
            yield path


def structural_problems(node, where):
    """What makes a schema non-structural: a node without a type (outside int-or-string and
    preserve-unknown-fields), or an object with both properties and additionalProperties; and
    what this check does not evaluate (oneOf / anyOf / allOf / not, CEL aside)."""
    int_or_string = node.get("x-kubernetes-int-or-string")
    problems = [f"{where}: {key} is not checked here" for key in ("oneOf", "anyOf", "allOf", "not")
                if key in node and not (key == "anyOf" and int_or_string)]
    if not node.get("x-kubernetes-int-or-string") and not node.get("x-kubernetes-preserve-unknown-fields"):
        if "type" not in node:
            problems.append(f"{where}: no type")
    if "properties" in node and isinstance(node.get("additionalProperties"), dict):
        problems.append(f"{where}: both properties and additionalProperties")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{where}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{where}.*")
    if "items" in node:
        problems += structural_problems(node["items"], f"{where}[]")
    return problems


def to_json_schema(node):
    """The JSON Schema that checks what the API server checks of `node`, strictly."""
    node = copy.copy(node)
    for key in [k for k in node if k.startswith("x-kubernetes-") and k not in (
            "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")]:
        del node[key]
    node.pop("description", None)
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("anyOf", None)
        node["type"] = ["integer", "string"]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else node["type"] + ["null"]
    if "properties" in node:
        node["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        if not preserve and "additionalProperties" not in node:
            node["additionalProperties"] = False
    elif node.get("type") == "object" and not preserve and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        node["items"] = to_json_schema(node["items"])
    return node


def load_crds(folder):
    """(group, version, kind) → validator, and the problems found in the CRDs themselves."""
    validators, problems = {}, []
    for path in yaml_files([folder]):
        for crd in load_documents(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            storage = [v["name"] for v in spec["versions"] if v.get("storage")]
            if len(storage) != 1:
                problems.append(f"{path}: {len(storage)} storage versions")
            for version in spec["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                where = f"{path}: {spec['names']['kind']} {version['name']}"
                problems += structural_problems(schema, where)
                spec_schema = schema.get("properties", {}).get("spec", {})
                if not spec_schema.get("properties") or spec_schema.get("x-kubernetes-preserve-unknown-fields"):
                    problems.append(f"{where}: the spec is not described")
                root = to_json_schema(schema)
                root["properties"] = {**ROOT_FIELDS, **root["properties"]}
                key = (spec["group"], version["name"], spec["names"]["kind"])
                validators[key] = jsonschema.Draft7Validator(root)
    return validators, problems


def errors_of(document, validators):
    """None when no CRD defines the object's kind, else its errors as (path, message)."""
    group, _, version = document.get("apiVersion", "").rpartition("/")
    validator = validators.get((group, version, document.get("kind")))
    if validator is None:
        return None
    errors = []
    for error in validator.iter_errors(document):
        where = [str(p) for p in error.absolute_path]
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # As the API server says it: the unknown field's own path.
            known = error.schema.get("properties", {})
            errors += [(".".join(where + [k]), "field not declared in schema") for k in error.instance if k not in known]
        else:
            errors.append((".".join(where), error.message))
    return errors


def name_of(document):
    return f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"


def check_valid(paths, validators):
    checked, failures = 0, 0
    for path in yaml_files(paths):
        for document in load_documents(path):
            errors = errors_of(document, validators)
            if errors is None:
                continue
            checked += 1
            for where, message in errors:
                print(f"FAIL {path}: {name_of(document)}: {where}: {message}")
                failures += 1
    return checked, failures


def check_invalid(paths, validators):
    checked, failures = 0, 0
    for path in paths:
        for document in load_documents(path):
            expected = document.get("metadata", {}).get("annotations", {}).get(EXPECTATION)
            errors = errors_of(document, validators)
            checked += 1
            if errors is None or expected is None:
                print(f"FAIL {path}: {name_of(document)}: no CRD for it, or no {EXPECTATION} annotation")
                failures += 1
            elif expected not in [where for where, _ in errors]:
                print(f"FAIL {path}: {name_of(document)}: expected refused at {expected}, got {errors or 'valid'}")
                failures += 1
    return checked, failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--crds", required=True)
    parser.add_argument("--expect-invalid", action="append", default=[])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    validators, problems = load_crds(args.crds)
    for problem in problems:
        print(f"FAIL {problem}")
    valid, failed_valid = check_valid(args.paths, validators)
    invalid, failed_invalid = check_invalid(args.expect_invalid, validators)
    print(f"custom resources: {valid} valid as expected ({failed_valid} errors), "
          f"{invalid} refused as expected ({failed_invalid} not), {len(validators)} served versions")
    return 1 if problems or failed_valid or failed_invalid else 0


if __name__ == "__main__":
    sys.exit(main())
