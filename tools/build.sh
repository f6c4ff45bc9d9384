#!/usr/bin/env bash
# Configures and builds latentkv into ./build (Release). With the CUDA
# toolkit present (/usr/local/cuda/bin/nvcc, or nvcc on PATH) the build also
# compiles the CUDA backend and the NCCL transport (-DLATENTKV_WITH_CUDA=ON,
# sm_90); their tests carry the labels gpu / multigpu and need a GPU to run.
# LATENTKV_WITH_CUDA=OFF in the environment forces a CPU-only build.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${LATENTKV_WITH_CUDA:-auto}
if [[ "$cuda" == auto ]]; then
  if [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null; then
    cuda=ON
  else
    cuda=OFF
    echo "build.sh: no CUDA toolkit found: building the CPU backend only" >&2
  fi
fi
cmake -G Ninja -S . -B build -DCMAKE_BUILD_TYPE=Release \
  -DLATENTKV_WITH_CUDA="$cuda" "$@" >/dev/null
cmake --build build -j"$(nproc)"
