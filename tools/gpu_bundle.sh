#!/usr/bin/env bash
# Packs what the GPU machine needs into .gpu_bundle/ (git-ignored), from a
# CUDA build in ./build (tools/build.sh with the CUDA toolkit present): the
# executables of every ctest test labelled gpu or multigpu (found through
# `ctest --show-only=json-v1`), bench/gpu_bench, the CLI, worker,
# coordinator and kvstore binaries (an end-to-end `serve --device cuda`),
# every shared library they load that is not glibc's, the CUDA toolkit's or
# the driver's (ldd; libstdc++/libgcc_s go to lib/fallback, used there only
# when the machine's own are too old), stripped; the stories260K model and
# the text excerpt the tests read (SmolLM2's 94 MB GGUF does not fit); the
# paths the test binaries have baked in (LATENTKV_SHARED_DIR,
# LATENTKV_BINARY_DIR), which tools/gpu_check.sh links to the bundle there.
# All of it goes into one xz tarball, .gpu_bundle/bundle.tar.xz, which must
# stay under 60 MiB (the device tool carries at most 64 MiB with the tree).
#
# Usage (here, on the build machine; nothing runs on a GPU):
#   flock /tmp/latentkv-build.lock ninja -C build   # a complete CUDA build
#   tools/gpu_bundle.sh                             # writes .gpu_bundle/
# then, on the lent GPU machine (device tool `run`, carrying .gpu_bundle):
#   run(command="bash tools/gpu_check.sh", carry=[".gpu_bundle"], timeout_s=540)
# Env: BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
out=.gpu_bundle
limit_mib=60
die() {
  echo "gpu_bundle: ERROR: $*" >&2
  exit 1
}

[[ -f "$build/CMakeCache.txt" ]] || die "no $build/CMakeCache.txt: build first"
grep -q '^LATENTKV_WITH_CUDA:BOOL=ON' "$build/CMakeCache.txt" ||
  die "$build is not a CUDA build (tools/build.sh with the CUDA toolkit)"
shared_dir=$(sed -n 's/^LATENTKV_SHARED_DIR:PATH=//p' "$build/CMakeCache.txt")
binary_dir=$(cd "$build" && pwd)
[[ -f "$shared_dir/models/stories260K/stories260K.bin" ]] ||
  die "no stories260K under $shared_dir/models"

stage="$build/gpu_bundle_stage"
rm -rf "$stage"
mkdir -p "$stage"/{bin,tests,lib/fallback,shared/models,shared/text}

# 1. The gpu / multigpu tests: one line per (label, executable) with the
#    gtest filter of exactly its tests of that label.
(cd "$build" && ctest --show-only=json-v1) >"$stage/ctest.json"
python3 - "$stage" <<'EOF'
import collections, json, os, sys
stage = sys.argv[1]
tests = json.load(open(os.path.join(stage, "ctest.json")))["tests"]
not_built = sorted({t["name"] for t in tests if "command" not in t})
if not_built:
    sys.exit("gpu_bundle: ERROR: not built (run ninja -C build): "
             + " ".join(not_built))
groups = collections.OrderedDict()  # (label, executable) -> [test names]
for t in tests:
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    labels = props.get("LABELS", [])
    label = ("multigpu" if "multigpu" in labels else
             "gpu" if "gpu" in labels else None)
    if label is None:
        continue
    cmd = t["command"]
    filters = [a.split("=", 1)[1] for a in cmd[1:]
               if a.startswith("--gtest_filter=")]
    if not filters:
        sys.exit(f"gpu_bundle: ERROR: {t['name']} is not a gtest test: {cmd}")
    groups.setdefault((label, cmd[0]), []).append(filters[0])
if not groups:
    sys.exit("gpu_bundle: ERROR: ctest lists no gpu/multigpu test")
names = {}
with open(os.path.join(stage, "tests.tsv"), "w") as f, \
        open(os.path.join(stage, "test_exes.txt"), "w") as g:
    for (label, exe), names_of in groups.items():
        base = os.path.basename(exe)
        if names.setdefault(base, exe) != exe:
            sys.exit(f"gpu_bundle: ERROR: two test binaries named {base}")
        flt = ":".join(names_of)
        if len(flt) > 100000:  # one argument must stay under 128 KiB
            flt = "*/cuda:*/cuda_*"
        f.write(f"{label}\t{base}\t{len(names_of)}\t{flt}\n")
        g.write(exe + "\n")
        print(f"  {label:8s} {base:28s} {len(names_of):4d} tests")
EOF
sort -u "$stage/test_exes.txt" -o "$stage/test_exes.txt"

# 2. Executables, stripped.
bins=("$build/bench/gpu_bench")
for b in latentkv latentkv-worker latentkv-coordinator latentkv-kvstore; do
  bins+=("$build/bin/$b")
done
for b in "${bins[@]}"; do
  [[ -x "$b" ]] || die "missing $b (build it)"
  strip --strip-unneeded -o "$stage/bin/$(basename "$b")" "$b"
done
while read -r exe; do
  [[ -x "$exe" ]] || die "missing test binary $exe"
  strip --strip-unneeded -o "$stage/tests/$(basename "$exe")" "$exe"
  bins+=("$exe")
done <"$stage/test_exes.txt"

# 3. Shared libraries (by soname, as the loader looks them up).
is_system() {  # glibc, the CUDA toolkit and the driver: the GPU machine's own
  case "$1" in
  linux-vdso.so* | ld-linux* | libc.so* | libm.so* | libdl.so* | \
    libpthread.so* | librt.so* | libutil.so* | libresolv.so* | libanl.so* | \
    libmvec.so* | libnsl.so*) return 0 ;;
  libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | \
    libnccl.so* | libnvrtc* | libnvJitLink* | libcufft* | libcurand* | \
    libcusparse* | libcusolver* | libcupti* | libnvToolsExt* | \
    libnvidia-*) return 0 ;;
  esac
  [[ "$2" == /usr/local/cuda* ]]
}
declare -A seen=()
for b in "${bins[@]}"; do
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    [[ "$path" == "not" ]] && die "$b: $name not found by ldd"
    [[ -n "${seen[$name]:-}" ]] && continue
    seen[$name]=1
    is_system "$name" "$path" && continue
    dest="$stage/lib"
    [[ "$name" == libstdc++.so* || "$name" == libgcc_s.so* ]] &&
      dest="$stage/lib/fallback"
    strip --strip-unneeded -o "$dest/$name" "$(readlink -f "$path")"
  done < <(ldd "$b")
done

# 4. Data the tests read, and the paths baked into the binaries.
cp -r "$shared_dir/models/stories260K" "$stage/shared/models/"
cp "$shared_dir"/text/* "$stage/shared/text/"
for m in "$shared_dir"/models/*/; do
  [[ "$m" == */stories260K/ ]] ||
    echo "  not bundled: $m ($(du -sh "$m" | cut -f1); over the budget)"
done
{
  echo "LATENTKV_SHARED_DIR=$shared_dir"
  echo "LATENTKV_BINARY_DIR=$binary_dir"
  echo "BUNDLE_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "BUNDLE_DIRTY=$(git status --porcelain 2>/dev/null | wc -l)"
  echo "BUNDLE_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$stage/paths.env"
mv "$stage/tests.tsv" "$stage/tests/tests.tsv"
rm "$stage/ctest.json" "$stage/test_exes.txt"

# 5. Pack and check the size.
rm -rf "$out"
mkdir -p "$out"
tar -C "$stage" -cf - . | xz -6 -T2 >"$out/bundle.tar.xz"
(cd "$stage" && find . -type f -printf '%10s %p\n' | sort -k2) >"$out/MANIFEST.txt"
raw=$(du -sb "$stage" | cut -f1)
packed=$(stat -c %s "$out/bundle.tar.xz")
tree=$(git ls-files -z --cached --others --exclude-standard |
  xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "gpu_bundle: $(wc -l <"$out/MANIFEST.txt") files, $(mib "$raw") MiB" \
  "unpacked, $(mib "$packed") MiB packed (limit $limit_mib MiB);" \
  "working tree $(mib "$tree") MiB"
((packed <= limit_mib * 1048576)) ||
  die "bundle is $packed bytes, over $limit_mib MiB"
((packed + tree <= 64 * 1048576)) ||
  die "bundle + working tree ($((packed + tree)) bytes) over the 64 MiB a run carries"
rm -rf "$stage"
echo "gpu_bundle: wrote $out/bundle.tar.xz (run tools/gpu_check.sh there)"
