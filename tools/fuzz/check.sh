#!/usr/bin/env bash
# Builds the libFuzzer targets into ./build-fuzz (clang++-14, ASan + UBSan;
# only the libraries the parsers need) and runs the `fuzz` ctests: the seeds
# (tools/fuzz/seed.sh), then every target for LATENTKV_FUZZ_SECONDS (15 s)
# each, two at a time. tools/test.sh runs it after the main tests; see
# docs/FUZZING.md. Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -G Ninja -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DLATENTKV_FUZZ=ON "$@" >/dev/null
cmake --build build-fuzz --target fuzz_all -j"$(nproc)"
cd build-fuzz
ctest --output-on-failure -j"$(nproc)" -L '^fuzz$'
