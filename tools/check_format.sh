#!/usr/bin/env bash
# Fails when a C++ file differs from clang-format (Google style, .clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.cc' '*.h' '*.cu' '*.cuh' 2>/dev/null || find . -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' | grep -v '^./build')
bad=0
for f in $files; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not clang-formatted: $f"
    bad=1
  fi
done
if [ $bad -ne 0 ]; then
  echo "run: clang-format -i <files>"
  exit 1
fi
echo "clang-format: ok"
