#!/usr/bin/env bash
# Lint the balancer and gateway configurations (make lint-deploy, part of make ci-docker):
#   - YAML syntax of every file under deploy/ (Envoy, endpoint picker, InferencePool, Swarm stack, Kubernetes)
#   - the Swarm stack against the compose-spec schema (check-jsonschema) and, where Docker is installed,
#     by the Docker CLI itself (`docker stack config`, no swarm needed)
#   - nginx -t on a test copy (replica names replaced by 127.0.0.1 ports: nginx resolves names at start)
#   - haproxy -c on the config as shipped (servers found by DNS at run time, init-addr none)
#   - the endpoint picker config (llm-d.ai/v1alpha1) and InferencePool: scripts/check-gateway.py
# nginx and haproxy come from Debian's packages (apt-get install nginx haproxy); each check is skipped,
# with a message, where the tool is missing.
#   - Envoy (no Debian package, no PyPI build): a strict parse against Envoy's v3 API messages
#     (scripts/check-envoy.py, envoy-data-plane); `envoy --mode validate` where Envoy is installed
set -euo pipefail

cd "$(dirname "$0")/.."
LINT_DIR=${1:-.lint}
PY="$LINT_DIR/venv/bin/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# YAML syntax (PyYAML comes with kubernetes-validate).
"$PY" - deploy <<'PYEOF'
import pathlib, sys, yaml
bad = 0
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.y*ml")):
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
        if not any(d is not None for d in docs):
            raise ValueError("no YAML document")
    except Exception as e:  # noqa: BLE001 - report every file
        print(f"lint-deploy: {path}: {e}")
        bad += 1
    else:
        print(f"lint-deploy: {path}: YAML ok ({len(docs)} document(s))")
sys.exit(1 if bad else 0)
PYEOF

# The gateway files: the endpoint picker config and the InferencePool against the llm-d router's schema.
"$PY" scripts/check-gateway.py

# Envoy.
"$PY" scripts/check-envoy.py deploy/envoy/envoy.yaml
if command -v envoy >/dev/null; then
    envoy --mode validate -c deploy/envoy/envoy.yaml
fi

# The Swarm stack.
MODELS_DIR=/models "$LINT_DIR/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/swarm/stack.yaml
if command -v docker >/dev/null; then
    (cd deploy/swarm && MODELS_DIR=/models docker stack config -c stack.yaml >/dev/null)
    echo "lint-deploy: deploy/swarm/stack.yaml: docker stack config ok"
fi

# nginx: a copy whose upstreams are local ports, checked by nginx itself.
if command -v nginx >/dev/null; then
    sed -e 's/scorer-\([0-9]\):8080/127.0.0.1:1808\1/' \
        -e "s|pid /tmp/nginx-llama-scorer.pid|pid $tmp/nginx.pid|" deploy/nginx/nginx.conf >"$tmp/nginx.conf"
    nginx -t -q -c "$tmp/nginx.conf" -e stderr
    echo "lint-deploy: deploy/nginx/nginx.conf: nginx -t ok"
else
    echo "lint-deploy: nginx not installed, deploy/nginx/nginx.conf not checked"
fi

# HAProxy, as shipped.
if command -v haproxy >/dev/null; then
    haproxy -c -q -f deploy/haproxy/haproxy.cfg
    echo "lint-deploy: deploy/haproxy/haproxy.cfg: haproxy -c ok"
else
    echo "lint-deploy: haproxy not installed, deploy/haproxy/haproxy.cfg not checked"
fi
