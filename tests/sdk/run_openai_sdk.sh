#!/bin/bash
# Runs the official OpenAI Python SDK (tests/sdk/openai_sdk_check.py)
# against a real `latentkv serve` on 127.0.0.1 with the SmolLM2 GGUF on
# default flags (what a new user downloads and serves).
#   tests/sdk/run_openai_sdk.sh BIN_DIR SHARED_DIR
# The SDK and its dependencies come from PyPI, pinned by version and sha256
# (tests/sdk/requirements.txt), downloaded once into
# ${LATENTKV_SDK_CACHE:-~/.cache/latentkv-sdk} and unpacked there for
# PYTHONPATH (nothing installed). Exit 77 (ctest: skipped) when they cannot
# be fetched (no network) or no CPython 3.11 is here.
set -euo pipefail
bin=$1
shared=$2
src=$(cd "$(dirname "$0")/../.." && pwd)
cache=${LATENTKV_SDK_CACHE:-$HOME/.cache/latentkv-sdk}
py=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" > /dev/null &&
     "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$p
    break
  fi
done
if [ -z "$py" ]; then
  echo "openai sdk test: needs CPython 3.11 (the pinned wheels'); skipped" >&2
  exit 77
fi
stamp=$cache/site/.requirements.sha256
want=$(sha256sum "$src/tests/sdk/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2> /dev/null)" != "$want" ]; then
  rm -rf "$cache/wheels" "$cache/site"
  mkdir -p "$cache/wheels"
  if ! "$py" -m pip download --quiet --no-input --disable-pip-version-check \
      --no-deps --only-binary=:all: --require-hashes \
      -r "$src/tests/sdk/requirements.txt" -d "$cache/wheels"; then
    echo "openai sdk test: cannot download the pinned SDK from PyPI; skipped" >&2
    exit 77
  fi
  "$py" - "$cache" <<'PY'
import glob, os, sys, zipfile
cache = sys.argv[1]
site = os.path.join(cache, "site")
os.makedirs(site, exist_ok=True)
for wheel in glob.glob(os.path.join(cache, "wheels", "*.whl")):
    with zipfile.ZipFile(wheel) as w:
        w.extractall(site)
PY
  echo "$want" > "$stamp"
fi

dir=$(mktemp -d /tmp/latentkv-sdk-XXXXXX)
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then
    kill -INT "$serve_pid" 2> /dev/null || true
    wait "$serve_pid" 2> /dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
gguf=$shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
# An HTTP port below the ephemeral range, free a moment ago.
port=$("$py" -c 'import random, socket
while True:
    p = random.randint(10000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()')
"$bin/latentkv" serve --model "$gguf" --port 0 \
  --port-file "$dir/addr" --http-port "$port" > "$dir/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 600); do
  [ -s "$dir/addr" ] && break
  kill -0 "$serve_pid" 2> /dev/null || { cat "$dir/serve.log"; exit 1; }
  sleep 0.1
done
[ -s "$dir/addr" ] || { cat "$dir/serve.log"; exit 1; }
# -S: only the pinned packages (an older brotli in the interpreter's own
# site-packages broke httpx2's decoder).
PYTHONPATH=$cache/site "$py" -S "$src/tests/sdk/openai_sdk_check.py" \
  "http://127.0.0.1:$port/v1" SmolLM2-135M-Instruct.Q4_1
