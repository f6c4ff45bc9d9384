#!/usr/bin/env bash
# Installs the Debian 12 packages latentkv builds and tests with (no-op when
# they are all present). Uses sudo when not root. clang-14 with its
# compiler-rt (libFuzzer, ASan, UBSan) and OpenMP runtime builds the fuzz
# targets (tools/fuzz/check.sh).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libopenblas-dev nlohmann-json3-dev libsentencepiece-dev
  libgtest-dev libgmock-dev libbenchmark-dev libgloo-dev libxxhash-dev clang-format
  libcpp-httplib-dev prometheus-cpp-dev curl iproute2
  clang-14 libclang-rt-14-dev libomp-14-dev
  python3 python3-numpy python3-matplotlib python3-regex
  python3-pip python3-yaml python3-jsonschema)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
