#!/bin/bash
# A short guidellm run (vLLM's benchmark client) against `latentkv serve`
# with the SmolLM2 GGUF on default flags: the check that a third-party
# OpenAI-API load tester runs end to end (README "guidellm"). Manual, not
# in CI: guidellm pulls torch, transformers and datasets (~5 GB).
#   tools/run_guidellm.sh BIN_DIR SHARED_DIR OUT_DIR [STREAMS] [REQUESTS]
# guidellm comes from PyPI at the pinned version into
# ${LATENTKV_GUIDELLM_VENV:-~/.cache/latentkv-guidellm}; its synthetic
# prompts are counted with the model's own tokenizer (tokenizer.json that
# `latentkv convert` writes from the GGUF), offline.
set -euo pipefail
bin=$1
shared=$2
out=$3
streams=${4:-4}
requests=${5:-40}
venv=${LATENTKV_GUIDELLM_VENV:-$HOME/.cache/latentkv-guidellm}
if [ ! -x "$venv/bin/guidellm" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet guidellm==0.8.1
fi
mkdir -p "$out"
gguf=$shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"$bin/latentkv" convert --from gguf --checkpoint "$gguf" \
  --out "$out/tokenizer" > /dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/latentkv" serve --model "$gguf" --port 0 --http-port "$port" \
  --served-model-name smollm2 > "$out/serve.log" 2>&1 &
serve_pid=$!
trap 'kill -INT $serve_pid 2> /dev/null || true; wait $serve_pid 2> /dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  kill -0 "$serve_pid" 2> /dev/null || { cat "$out/serve.log"; exit 1; }
  sleep 0.5
done
HF_HUB_OFFLINE=1 "$venv/bin/guidellm" run \
  --backend "kind=openai_http,target=http://127.0.0.1:$port,model=smollm2" \
  --profile "kind=concurrent,streams=$streams" \
  --constraint "kind=max_requests,count=$requests" \
  --data kind=synthetic_text,prompt_tokens=256,output_tokens=64 \
  --tokenizer "kind=hf_auto,model=$out/tokenizer" \
  --output "kind=json,path=$out/guidellm.json" --disable-progress \
  | tee "$out/guidellm.txt"
