#!/bin/bash
# Puts llguidance's C library (tools/llguidance-requirements.txt: the pinned
# PyPI wheel's llguidance/_lib.abi3.so) at DEST_DIR/libllguidance.so.
#   tools/fetch_llguidance.sh DEST_DIR
# The wheel is downloaded once into ${LATENTKV_LLGUIDANCE_CACHE:-
# ~/.cache/latentkv-llguidance} (pip checks its sha256). Run by CMake when
# the build is configured; exit 1 (and a message) when it cannot be fetched:
# the build then has no structured output.
set -euo pipefail
dest=$1
src=$(cd "$(dirname "$0")/.." && pwd)
req=$src/tools/llguidance-requirements.txt
cache=${LATENTKV_LLGUIDANCE_CACHE:-$HOME/.cache/latentkv-llguidance}
py=$(command -v python3 || true)
if [ -z "$py" ]; then
  echo "fetch_llguidance: no python3 (for pip)" >&2
  exit 1
fi
mkdir -p "$cache" "$dest"
if ! ls "$cache"/llguidance-1.8.0-*.whl > /dev/null 2>&1; then
  if ! "$py" -m pip download --quiet --no-input --disable-pip-version-check \
      --no-deps --only-binary=:all: --require-hashes --platform \
      manylinux_2_31_x86_64 --python-version 3.11 -r "$req" -d "$cache"; then
    echo "fetch_llguidance: cannot download the pinned wheel from PyPI" >&2
    exit 1
  fi
fi
whl=$(ls "$cache"/llguidance-1.8.0-*.whl | head -1)
# Check the hash here too: the cache may predate a change of pin.
want=$(grep -o 'sha256:[0-9a-f]*' "$req" | cut -d: -f2)
have=$(sha256sum "$whl" | cut -d' ' -f1)
if [ "$want" != "$have" ]; then
  echo "fetch_llguidance: $whl has sha256 $have, want $want" >&2
  rm -f "$whl"
  exit 1
fi
"$py" - "$whl" "$dest/libllguidance.so" <<'PY'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    data = z.read("llguidance/_lib.abi3.so")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, out)
PY
echo "fetch_llguidance: $dest/libllguidance.so (llguidance 1.8.0)"
