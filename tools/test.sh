#!/usr/bin/env bash
# The test command: installs dependencies, builds, checks formatting and runs
# every CPU test (labels unit and integration). Tests labelled gpu need a GPU
# and are listed as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
tools/check_format.sh
cd build
gpu=$(ctest -N -L gpu | sed -n 's/^Total Tests: //p')
echo "gpu-labelled tests skipped on this machine: ${gpu:-0}"
ctest --output-on-failure -j2 -LE gpu --timeout 600
