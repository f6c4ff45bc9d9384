#!/usr/bin/env bash
# Runs every GPU check of latentkv on a lent GPU machine, from the bundle
# that tools/gpu_bundle.sh packed here (.gpu_bundle/bundle.tar.xz), in under
# 8 minutes: the gpu-labelled test binaries (multigpu ones only with more
# than one GPU) with the gtest filter of exactly their gpu tests (at most
# 200 s together), bench/gpu_bench, tools/bench/sdpa_bench.py (PyTorch SDPA
# on the same shapes) and an end-to-end `latentkv generate/serve --device
# cuda` on stories260K. Every step has its own timeout inside a global
# budget, and a failure never stops the next step. Writes under $OUT (8
# files at most: what the device tool brings back): summary.md, env.txt, tests.log, e2e.log,
# bench.log, gpu_bench.json, gpu_bench.md, sdpa_bench.json; prints the
# summary table last. Exit status: 0 when every step passed, else 1.
#
# Usage, from the build machine (after tools/gpu_bundle.sh):
#   device tool: run(command="bash tools/gpu_check.sh",
#                    carry=[".gpu_bundle"], timeout_s=540)
# Env: OUT (default /tmp/latentkv-gpu-check-out), GPU_CHECK_BUDGET_S (default 450),
# GPU_CHECK_SKIP (space-separated: tests e2e gpu_bench sdpa),
# GPU_CHECK_E2E_DEVICE (default cuda; cpu tests the script without a GPU).
# The test binaries read ../shared and build/bin at the absolute paths baked
# in at build time (LATENTKV_SHARED_DIR, LATENTKV_BINARY_DIR; no run-time
# override): where those paths do not exist here, they are made symlinks to
# the bundle's copies.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
out=${OUT:-/tmp/latentkv-gpu-check-out}
budget=${GPU_CHECK_BUDGET_S:-450}
skip=" ${GPU_CHECK_SKIP:-} "
mkdir -p "$out"
start=$(date +%s)
bundle=/tmp/latentkv-gpu-bundle
work=/tmp/latentkv-gpu-work
rm -rf "$bundle" "$work"
mkdir -p "$bundle" "$work"
steps="$work/steps.tsv" # name, status, seconds, note
: >"$steps"
env_log="$out/env.txt"

note() { echo "== $*" | tee -a "$env_log"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$steps"; }
elapsed() { echo $(($(date +%s) - start)); }

# run_step NAME TIMEOUT RESERVE LOG CMD...: runs CMD with at most TIMEOUT
# seconds, fewer if the budget minus RESERVE (kept for later steps) is
# smaller; appends its output to LOG and its status to the step table, with
# the output of `$NOTE_FN LOG` (one line, if NOTE_FN is set) as the note.
run_step() {
  local name=$1 limit=$2 reserve=$3 log=$4
  shift 4
  local left=$((budget - $(elapsed) - reserve))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then
    record "$name" SKIPPED 0 "no time left in the ${budget}s budget"
    return 1
  fi
  echo "===== $name (timeout ${limit}s) =====" >>"$log"
  local t0 rc
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t0)) status=PASS
  if ((rc == 124 || rc == 137)); then
    status=TIMEOUT
  elif ((rc != 0)); then
    status="FAIL(rc=$rc)"
  fi
  echo "===== $name: $status in ${dt}s =====" >>"$log"
  local note=""
  [[ -n "${NOTE_FN:-}" ]] && note=$("$NOTE_FN" "$log" | tr '\t\n' '  ')
  record "$name" "$status" "$dt" "$note"
  return "$rc"
}

# --- the machine and the bundle ----------------------------------------------
: >"$env_log"
note "date $(date -u +%FT%TZ), host $(hostname), repo $root"
nvidia-smi 2>&1 | tee -a "$env_log"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
note "GPUs: $ngpu; $(ldd --version 2>&1 | head -1)"
tarball=.gpu_bundle/bundle.tar.xz
if [[ ! -f "$tarball" ]]; then
  note "no $tarball: run tools/gpu_bundle.sh and carry .gpu_bundle"
  exit 1
fi
if command -v xz >/dev/null; then
  tar -C "$bundle" -xJf "$tarball"
else
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    "$tarball" "$bundle"
fi || {
  note "could not unpack $tarball"
  exit 1
}
cat "$bundle/paths.env" >>"$env_log"
# shellcheck disable=SC1091
source "$bundle/paths.env"

# Our binaries' libraries: the bundle's, then the CUDA toolkit's; whatever
# ldd still misses is searched for on this machine (e.g. libnccl in
# python's nvidia-* packages). Only our binaries get this LD_LIBRARY_PATH
# (python3 and torch keep their own).
lkv_ld="$bundle/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib \
  /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d "$d" ]] && lkv_ld="$lkv_ld:$d"
done
all_bins=("$bundle"/bin/* "$bundle"/tests/*)
missing() { # sonames ldd cannot find for any of our binaries
  for b in "${all_bins[@]}"; do
    [[ "$b" == *.tsv ]] && continue
    LD_LIBRARY_PATH="$lkv_ld" ldd "$b" 2>/dev/null |
      awk '/=> not found/ {print $1}'
  done | sort -u
}
for lib in $(missing); do
  found=$(find /usr/local /usr/lib /usr/lib64 /opt -name "$lib" \
    \( -type f -o -type l \) 2>/dev/null | head -1)
  if [[ -n "$found" ]]; then
    note "found $lib at $found"
    lkv_ld="$lkv_ld:$(dirname "$found")"
  else
    note "NOT FOUND on this machine: $lib"
  fi
done
if LD_LIBRARY_PATH="$lkv_ld" ldd "$bundle/bin/latentkv" 2>&1 |
  grep -q "GLIBCXX\|CXXABI\|GCC_[0-9]"; then
  note "this machine's libstdc++ is older than the build's: using the bundle's"
  lkv_ld="$bundle/lib/fallback:$lkv_ld"
fi
note "LD_LIBRARY_PATH for latentkv binaries: $lkv_ld"
LD_LIBRARY_PATH="$lkv_ld" ldd "$bundle/bin/gpu_bench" >>"$env_log" 2>&1

# The absolute paths baked into the test binaries.
link_baked() { # link_baked PATH TARGET
  if [[ -e "$1" ]]; then
    note "$1 exists here; left as it is"
  else
    mkdir -p "$(dirname "$1")" && ln -s "$2" "$1" && note "linked $1 -> $2"
  fi
}
link_baked "$LATENTKV_SHARED_DIR" "$bundle/shared"
link_baked "$LATENTKV_BINARY_DIR/bin" "$bundle/bin"
[[ -f "$LATENTKV_SHARED_DIR/models/stories260K/stories260K.bin" ]] ||
  note "WARNING: no stories260K under $LATENTKV_SHARED_DIR: tests will fail"

# --- gpu tests ------------------------------------------------------------------
# shellcheck disable=SC2317  # called through NOTE_FN
gtest_note() { # gtest's own counts
  grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$1" | tr -s ' ' |
    paste -sd' ' -
}
if [[ "$skip" != *" tests "* ]]; then
  : >"$out/tests.log"
  tests_end=$(($(elapsed) + 200)) # the tests' share of the budget
  while IFS=$'\t' read -r label exe count filter; do
    name="test:$exe ($count $label)"
    if [[ "$label" == multigpu ]] && ((ngpu < 2)); then
      record "$name" SKIPPED 0 "needs 2+ GPUs, $ngpu here"
      continue
    fi
    mkdir -p "$work/$exe" && cd "$work/$exe" || exit 1
    reserve=$((budget - tests_end))
    ((reserve < 0)) && reserve=0
    log="$work/test_$exe.log"
    NOTE_FN=gtest_note run_step "$name" 150 "$reserve" "$log" \
      env LD_LIBRARY_PATH="$lkv_ld" "$bundle/tests/$exe" \
      --gtest_filter="$filter" --gtest_color=no
    [[ -f "$log" ]] && cat "$log" >>"$out/tests.log"
    cd "$root" || exit 1
  done <"$bundle/tests/tests.tsv"
fi

# --- benchmarks -------------------------------------------------------------------
# shellcheck disable=SC2317  # called through NOTE_FN
bench_note() { grep -o -E '(QueryDevice|MeasureCopyBandwidth|ERROR) .*' "$1" |
  tail -1 | cut -c1-160; }
# shellcheck disable=SC2317  # called through NOTE_FN
sdpa_note() { grep -o 'sdpa_bench: skipped: .*' "$1" | tail -1; }
if [[ "$skip" != *" gpu_bench "* ]]; then
  NOTE_FN=bench_note run_step "gpu_bench" 300 90 "$out/bench.log" \
    env LD_LIBRARY_PATH="$lkv_ld" "$bundle/bin/gpu_bench" --out_dir="$out"
fi
if [[ "$skip" != *" sdpa "* ]]; then
  NOTE_FN=sdpa_note run_step "sdpa_bench.py (torch)" 60 30 "$out/bench.log" \
    env PYTHONUNBUFFERED=1 python3 "$root/tools/bench/sdpa_bench.py" \
    --out "$out/sdpa_bench.json"
fi

# --- end to end: CLI generate (cpu vs cuda) and serve on cuda (last: the
# gpu_serving_test binary covers it too) ------------------------------------------
if [[ "$skip" != *" e2e "* ]]; then
  cat >"$work/e2e.sh" <<'EOF'
set -u
B=$1 W=$2 D=$3
m=$W/s260k
p="Once upon a time"
s=$B/shared/models/stories260K
"$B/bin/latentkv" convert --from llama2c --checkpoint "$s/stories260K.bin" \
  --tokenizer "$s/tok512.bin" --out "$m" || exit 1
for dev in cpu "$D"; do
  echo "-- generate --device $dev"
  "$B/bin/latentkv" generate --model "$m" --device "$dev" --prompt "$p" \
    --max-tokens 48 --temperature 0 >"$W/gen_$dev.txt" || exit 2
  cat "$W/gen_$dev.txt"
done
echo "-- serve --device $D"
"$B/bin/latentkv" serve --model "$m" --device "$D" --port 0 \
  --port-file "$W/port" &
pid=$!
trap 'kill -INT $pid 2>/dev/null' EXIT
for _ in $(seq 60); do [[ -s "$W/port" ]] && break; sleep 1; done
[[ -s "$W/port" ]] || { echo "serve did not start"; exit 3; }
"$B/bin/latentkv" generate --server "$(cat "$W/port")" --prompt "$p" \
  --max-tokens 48 --temperature 0 >"$W/gen_serve.txt" || exit 4
cat "$W/gen_serve.txt"
kill -INT $pid
wait $pid || { echo "serve exited with $?"; exit 5; }
trap - EXIT
cmp -s "$W/gen_cpu.txt" "$W/gen_$D.txt" && echo "$D text == cpu text" ||
  echo "$D text != cpu text"
cmp -s "$W/gen_$D.txt" "$W/gen_serve.txt" && echo "serve text == local" ||
  echo "serve text != local"
EOF
  # shellcheck disable=SC2317  # called through NOTE_FN
  e2e_note() { grep -E '^[a-z]+ text [!=]= ' "$1" | paste -sd';' -; }
  e2e_dev=${GPU_CHECK_E2E_DEVICE:-cuda}
  NOTE_FN=e2e_note run_step "e2e: generate cpu/$e2e_dev, serve $e2e_dev" \
    60 0 "$out/e2e.log" env LD_LIBRARY_PATH="$lkv_ld" bash "$work/e2e.sh" \
    "$bundle" "$work" "$e2e_dev"
fi

# --- summary ----------------------------------------------------------------------
python3 - "$steps" "$out" "$(elapsed)" >"$out/summary.md" <<'EOF'
import json, os, sys
steps, out, secs = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
def f(x, fmt):
    return "-" if x is None else fmt % x
print(f"# GPU check ({secs} s)\n")
rows = [l.rstrip("\n").split("\t") for l in open(steps) if l.strip()]
print(table(["step", "status", "s", "note"], rows))
ours, torch = load("gpu_bench.json"), load("sdpa_bench.json")
tcases = {c["name"]: c for c in torch.get("cases", [])}
print(f"HBM copy GB/s: ours {f(ours.get('hbm_copy_gbs'), '%.0f')}, "
      f"torch {f(torch.get('hbm_copy_gbs'), '%.0f')}"
      f"{'; torch skipped: ' + torch['skipped'] if 'skipped' in torch else ''}\n")
rows = []
for c in ours.get("attention", []):
    t = tcases.get(c["name"], {})
    speed = t["ms"] / c["ms"] if t.get("ms") and c.get("ms") else None
    rows.append([c["name"], f(c.get("ms"), "%.4f"), f(c.get("gbs"), "%.0f"),
                 f(c.get("pct_hbm"), "%.1f"), f(c.get("tflops"), "%.1f"),
                 "yes" if c.get("ok") else "NO", f(t.get("ms"), "%.4f"),
                 f(t.get("gbs"), "%.0f"), f(speed, "%.2f")])
if rows:
    print("Paged attention (goal: decode >= 70% of HBM copy GB/s)\n")
    print(table(["case", "ms", "GB/s", "%HBM", "TFLOP/s", "ok", "torch ms",
                 "torch GB/s", "torch ms / ours"], rows))
rows = [[d["model"], d["batch"], f(d.get("ctx"), "%.0f"),
         f(d.get("step_ms"), "%.2f"), f(d.get("tok_s"), "%.1f"),
         f(d.get("roofline_tok_s"), "%.1f"), f(d.get("pct_roofline"), "%.1f")]
        for d in ours.get("decode", [])]
if rows:
    print("Decode (goal >= 60% of roofline)\n")
    print(table(["model", "batch", "ctx", "step ms", "tok/s", "roofline",
                 "%"], rows))
rows = [[c["config"], c["kv_bytes_per_token"], f(c.get("weights_gb"), "%.1f"),
         c["seqs_computed"], c["seqs_allocated"]]
        for c in ours.get("capacity", [])]
if rows:
    print(f"Concurrent sequences at {ours['capacity'][0]['context']} tokens\n")
    print(table(["KV", "bytes/token", "weights GB", "computed", "allocated"],
                rows))
for e in ours.get("errors", []) + torch.get("errors", []):
    print(f"- ERROR {e}")
EOF
[[ -s "$out/summary.md" ]] || column -t -s$'\t' "$steps" >"$out/summary.md"
echo
cat "$out/summary.md"
if cut -f2 "$steps" | grep -qv -e '^PASS$' -e '^SKIPPED$'; then exit 1; fi
exit 0
