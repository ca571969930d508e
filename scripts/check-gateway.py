#!/usr/bin/env python3
"""Offline check of deploy/gateway against the schemas the llm-d router decodes strictly (unknown fields
refused): the endpoint picker config (`llm-d.ai/v1alpha1` EndpointPickerConfig, in its ConfigMap) and the
InferencePool (`inference.networking.k8s.io/v1`). No cluster needed; PyYAML only.

Checked: the config's group and kind (the deprecated `inference.networking.x-k8s.io` group is refused), its
fields and those of every plugin whose parameters we set, every pluginRef naming a declared plugin, the
metric specs naming gauges llama-scorer exports (read from crates/http/src/api/observe.rs) for the model file of
deploy/kubernetes/configmap.yaml, the engine name matching the pods' llm-d.ai/engine-type label, and the
pool selecting the Deployment's pods on its container port.

    scripts/check-gateway.py [--repo DIR]      exit 1 naming every problem found
"""

import argparse
import pathlib
import re
import sys

import yaml

EPP_API = "llm-d.ai/v1alpha1"
DEPRECATED_EPP_API = "inference.networking.x-k8s.io/v1alpha1"
POOL_API = "inference.networking.k8s.io/v1"

# The fields of llm-d-router's apix/config/v1alpha1 EndpointPickerConfig and its parts.
TOP_FIELDS = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles", "dataLayer",
              "flowControl", "requestHandler", "saturationDetector", "parser"}
PLUGIN_FIELDS = {"name", "type", "parameters"}
PROFILE_FIELDS = {"name", "plugins"}
PROFILE_PLUGIN_FIELDS = {"pluginRef", "weight"}
DATALAYER_FIELDS = {"injectDefaults", "sources", "discovery", "peerDiscovery",
                    "crossReplicaSyncerPluginRef", "crossReplicaSyncInterval"}
SOURCE_FIELDS = {"pluginRef", "extractors"}

# Parameters of the plugins this config uses (their factories decode strictly); None: takes none here.
PLUGIN_PARAMETERS = {
    "metrics-data-source": {"scheme", "path", "port", "insecureSkipVerify", "caCertPath", "clientCertPath",
                            "clientKeyPath", "interval"},
    "core-metrics-extractor": {"engineLabelKey", "defaultEngine", "engineConfigs"},
    "single-profile-handler": None,
    "queue-scorer": None,
    "kv-cache-utilization-scorer": None,
    "approx-prefix-cache-producer": {"autoTune", "blockSizeTokens", "blockSize", "maxPrefixBlocksToMatch",
                                     "maxPrefixTokensToMatch", "lruCapacityPerServer"},
    "prefix-cache-scorer": {"prefixMatchInfoProducerName", "matchLengthWeight", "matchLengthScaleTokens"},
    "max-score-picker": {"maxNumOfEndpoints"},
}
ENGINE_FIELDS = {"name", "queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "loraSpec",
                 "cacheInfoSpec", "cacheBlockSizeLabelName", "cacheNumBlocksLabelName", "cacheBlockSizeSpec",
                 "cacheNumBlocksSpec", "customMetrics"}
DATA_SOURCES = {"metrics-data-source"}
EXTRACTORS = {"core-metrics-extractor"}

POOL_SPEC_FIELDS = {"selector", "targetPorts", "appProtocol", "endpointPickerRef"}
PICKER_REF_FIELDS = {"group", "kind", "name", "port", "failureMode"}

SPEC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?$")


class Problems(list):
    def unknown(self, where, got, allowed):
        for key in sorted(set(got) - set(allowed)):
            self.append(f"{where}: unknown field {key!r} (the router refuses it)")


def exported_gauges(repo):
    text = (repo / "crates/http/src/api/observe.rs").read_text()
    return set(re.findall(r'gauge!\(\s*"(llama_scorer_[a-z_]+)"', text))


def check_epp(repo, problems):
    path = repo / "deploy/gateway/epp-config.yaml"
    cm = yaml.safe_load(path.read_text())
    if cm.get("kind") != "ConfigMap" or "epp-config.yaml" not in cm.get("data", {}):
        problems.append(f"{path}: expected a ConfigMap with data.epp-config.yaml")
        return
    where = f"{path}: data.epp-config.yaml"
    cfg = yaml.safe_load(cm["data"]["epp-config.yaml"])
    if cfg.get("apiVersion") == DEPRECATED_EPP_API:
        problems.append(f"{where}: apiVersion {DEPRECATED_EPP_API} is deprecated in the llm-d router; use {EPP_API}")
    elif cfg.get("apiVersion") != EPP_API:
        problems.append(f"{where}: apiVersion {cfg.get('apiVersion')!r}, expected {EPP_API}")
    if cfg.get("kind") != "EndpointPickerConfig":
        problems.append(f"{where}: kind {cfg.get('kind')!r}, expected EndpointPickerConfig")
    problems.unknown(where, cfg, TOP_FIELDS)

    plugins = {}
    for i, plugin in enumerate(cfg.get("plugins") or []):
        at = f"{where}: plugins[{i}]"
        problems.unknown(at, plugin, PLUGIN_FIELDS)
        kind = plugin.get("type")
        if kind not in PLUGIN_PARAMETERS:
            problems.append(f"{at}: plugin type {kind!r} is not one this check knows")
            continue
        name = plugin.get("name") or kind
        if name in plugins:
            problems.append(f"{at}: a second plugin named {name!r}")
        plugins[name] = plugin
        params = plugin.get("parameters")
        if params is not None:
            if PLUGIN_PARAMETERS[kind] is None:
                problems.append(f"{at}: {kind} takes no parameters here")
            else:
                problems.unknown(f"{at}.parameters", params, PLUGIN_PARAMETERS[kind])
    if not plugins:
        problems.append(f"{where}: no plugins")

    def ref(at, name, types=None):
        if name not in plugins:
            problems.append(f"{at}: pluginRef {name!r} names no plugin")
        elif types and plugins[name]["type"] not in types:
            problems.append(f"{at}: pluginRef {name!r} is a {plugins[name]['type']}, expected one of {sorted(types)}")

    profiles = cfg.get("schedulingProfiles") or []
    if not profiles:
        problems.append(f"{where}: no schedulingProfiles")
    for i, profile in enumerate(profiles):
        at = f"{where}: schedulingProfiles[{i}]"
        problems.unknown(at, profile, PROFILE_FIELDS)
        for j, entry in enumerate(profile.get("plugins") or []):
            problems.unknown(f"{at}.plugins[{j}]", entry, PROFILE_PLUGIN_FIELDS)
            ref(f"{at}.plugins[{j}]", entry.get("pluginRef"))
            weight = entry.get("weight")
            if weight is not None and not isinstance(weight, (int, float)):
                problems.append(f"{at}.plugins[{j}]: weight {weight!r} is not a number")

    layer = cfg.get("dataLayer") or {}
    problems.unknown(f"{where}: dataLayer", layer, DATALAYER_FIELDS)
    for i, source in enumerate(layer.get("sources") or []):
        at = f"{where}: dataLayer.sources[{i}]"
        problems.unknown(at, source, SOURCE_FIELDS)
        ref(at, source.get("pluginRef"), DATA_SOURCES)
        for j, extractor in enumerate(source.get("extractors") or []):
            problems.unknown(f"{at}.extractors[{j}]", extractor, {"pluginRef"})
            ref(f"{at}.extractors[{j}]", extractor.get("pluginRef"), EXTRACTORS)

    check_engines(repo, where, plugins, problems)


def check_engines(repo, where, plugins, problems):
    """The extractor's engine config reads gauges llama-scorer exports, for the served model file."""
    gauges = exported_gauges(repo)
    configmap = yaml.safe_load((repo / "deploy/kubernetes/configmap.yaml").read_text())
    served = yaml.safe_load(next(iter(configmap["data"].values())))
    model_files = {pathlib.PurePosixPath(p["model"]).name for p in served["policies"].values()}
    deployment = yaml.safe_load((repo / "deploy/kubernetes/deployment.yaml").read_text())
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for name, plugin in plugins.items():
        if plugin["type"] != "core-metrics-extractor":
            continue
        params = plugin.get("parameters") or {}
        label_key = params.get("engineLabelKey", "llm-d.ai/engine-type")
        for i, engine in enumerate(params.get("engineConfigs") or []):
            at = f"{where}: {name}.engineConfigs[{i}]"
            problems.unknown(at, engine, ENGINE_FIELDS)
            if engine.get("name") != pod_labels.get(label_key):
                problems.append(f"{at}: engine {engine.get('name')!r} is not the pods' {label_key} label "
                                f"({pod_labels.get(label_key)!r} in deploy/kubernetes/deployment.yaml)")
            for field in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec"):
                spec = engine.get(field, "")
                m = SPEC.match(spec)
                if not m:
                    problems.append(f"{at}.{field}: {spec!r} is not METRIC{{label=value}}")
                    continue
                if m.group(1) not in gauges:
                    problems.append(f"{at}.{field}: {m.group(1)} is not a gauge llama-scorer exports ({sorted(gauges)})")
                labels = dict(kv.split("=", 1) for kv in m.group(2).split(",")) if m.group(2) else {}
                if labels.get("model") not in model_files:
                    problems.append(f"{at}.{field}: model label {labels.get('model')!r} is not a model file "
                                    f"of deploy/kubernetes/configmap.yaml ({sorted(model_files)})")


def check_pool(repo, problems):
    path = repo / "deploy/gateway/inferencepool.yaml"
    pool = yaml.safe_load(path.read_text())
    where = str(path)
    if pool.get("apiVersion") != POOL_API or pool.get("kind") != "InferencePool":
        problems.append(f"{where}: expected {POOL_API} InferencePool, got {pool.get('apiVersion')} {pool.get('kind')}")
    spec = pool.get("spec") or {}
    problems.unknown(f"{where}: spec", spec, POOL_SPEC_FIELDS)
    deployment = yaml.safe_load((repo / "deploy/kubernetes/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{where}: selector {selector} does not select the Deployment's pods ({labels})")
    ports = {p.get("containerPort") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    for i, port in enumerate(spec.get("targetPorts") or []):
        problems.unknown(f"{where}: spec.targetPorts[{i}]", port, {"number"})
        if port.get("number") not in ports:
            problems.append(f"{where}: targetPorts[{i}] {port.get('number')} is no container port ({sorted(ports)})")
    picker = spec.get("endpointPickerRef") or {}
    problems.unknown(f"{where}: spec.endpointPickerRef", picker, PICKER_REF_FIELDS)
    if not picker.get("name") or not isinstance((picker.get("port") or {}).get("number"), int):
        problems.append(f"{where}: endpointPickerRef needs a name and port.number")
    if picker.get("failureMode") not in (None, "FailOpen", "FailClose"):
        problems.append(f"{where}: endpointPickerRef.failureMode {picker['failureMode']!r}: FailOpen or FailClose")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent.parent)
    repo = parser.parse_args().repo
    problems = Problems()
    check_epp(repo, problems)
    check_pool(repo, problems)
    for p in problems:
        print(f"check-gateway: {p}", file=sys.stderr)
    if problems:
        return 1
    print("check-gateway: deploy/gateway: endpoint picker config (llm-d.ai/v1alpha1) and InferencePool ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
