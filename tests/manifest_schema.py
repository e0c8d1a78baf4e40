"""Validate manifests that real backups wrote against docs/manifest.schema.json (the published format)."""

import functools
import json
import os

import jsonschema

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "manifest.schema.json")


@functools.lru_cache(maxsize=1)
def validator():
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        schema = json.load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid_manifest(manifest):
    errors = sorted(validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "manifest does not match docs/manifest.schema.json:\n" + "\n".join(
        "%s: %s" % ("/".join(map(str, e.absolute_path)), e.message) for e in errors[:10])
    return manifest
