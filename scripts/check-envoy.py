#!/usr/bin/env python3
"""Strict parse of an Envoy v3 bootstrap (deploy/envoy/envoy.yaml) against Envoy's API messages, offline.

Envoy has no Debian package and no PyPI build, so `envoy --mode validate` cannot run in CI. This loads the YAML
into the generated v3 API classes of envoy-data-plane (PyPI, pinned in the Makefile): unknown or misplaced
fields, wrong types, unknown enum values and unknown `@type`s of typed_config fail. Envoy's own checks
(protoc-gen-validate rules such as ranges, cross-field rules, whether an extension is compiled in) are not
covered: where Envoy is installed, also run `envoy --mode validate -c deploy/envoy/envoy.yaml`.

    python scripts/check-envoy.py deploy/envoy/envoy.yaml
"""
import importlib
import sys

import betterproto2
import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap


def type_urls(node):
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def main(path):
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    # Import the module of every typed_config's message, which registers it for Any unpacking.
    for url in sorted(set(type_urls(doc))):
        full_name = url.split("/", 1)[1]
        importlib.import_module("envoy_data_plane." + full_name.rsplit(".", 1)[0])
    # The YAML uses proto field names already; betterproto2 would re-mangle some (enforcing_consecutive_5xx).
    original = betterproto2.safe_snake_case
    betterproto2.safe_snake_case = lambda key: key if key == key.lower() else original(key)
    bootstrap = Bootstrap.from_dict(doc)
    listeners = bootstrap.static_resources.listeners
    clusters = bootstrap.static_resources.clusters
    print(f"check-envoy: {path}: parsed strictly as envoy.config.bootstrap.v3.Bootstrap "
          f"({len(listeners)} listener(s), {len(clusters)} cluster(s): "
          + ", ".join(f"{c.name} {c.lb_policy.name}" for c in clusters) + ")")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        main(arg)
