#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time: the `fuzz` ctests
# (tests/fuzz/CMakeLists.txt) call it; docs/FUZZING.md shows longer runs.
# Fails (non-zero) on any crash, sanitizer report, leak, timeout (-timeout)
# or memory blow-up (-rss_limit_mb); the input is saved under WORK/artifacts.
# Usage: run.sh FUZZER SECONDS MAX_LEN WORK SEEDS CORPUS [DICT]
#   WORK    the target's working corpus (new inputs are added here)
#   SEEDS   seeds written by tools/fuzz/seed.sh (skipped when absent)
#   CORPUS  committed inputs (tests/fuzz/corpus/<target>), crash inputs too
set -euo pipefail
bin=$1 seconds=$2 max_len=$3 work=$4 seeds=$5 corpus=$6 dict=${7:-}
mkdir -p "$work" "$work.artifacts"
dirs=("$work")
for d in "$seeds" "$corpus"; do
  if [[ -d "$d" ]]; then dirs+=("$d"); fi
done
args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
  -max_len="$max_len" -print_final_stats=1
  -artifact_prefix="$work.artifacts/")
if [[ -n "$dict" ]]; then args+=(-dict="$dict"); fi
echo "$bin ${args[*]} ${dirs[*]}"
exec "$bin" "${args[@]}" "${dirs[@]}"
