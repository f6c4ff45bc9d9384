#!/usr/bin/env bash
# README command one: install, build, convert stories260K, start a local
# cluster (coordinator + one worker) on 127.0.0.1, stream a real request over
# gRPC, and shut the cluster down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${LATENTKV_SHARED:-$(cd .. && pwd)/shared}
tools/install_deps.sh
tools/build.sh
MODEL=build/models/stories260K
build/bin/latentkv convert --from llama2c \
  --checkpoint "$SHARED/models/stories260K/stories260K.bin" \
  --tokenizer "$SHARED/models/stories260K/tok512.bin" --out "$MODEL"
ADDR_FILE=$(mktemp -u /tmp/latentkv-demo-XXXXXX.addr)
build/bin/latentkv serve --model "$MODEL" --port 0 --port-file "$ADDR_FILE" &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s "$ADDR_FILE" ] && break; sleep 0.1; done
ADDR=$(cat "$ADDR_FILE")
echo "--- cluster up on $ADDR; streaming a completion over gRPC ---"
build/bin/latentkv generate --server "$ADDR" --prompt "Once upon a time" --max-tokens 200
echo "--- shutting down ---"
kill -INT $SERVE
wait $SERVE
trap - EXIT
rm -f "$ADDR_FILE"
