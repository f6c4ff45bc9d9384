#!/usr/bin/env bash
# Writes the fuzz targets' seed inputs into OUT/<target>/ (the `fuzz_seeds`
# ctest fixture runs it before the `fuzz` tests; docs/FUZZING.md): seeds the
# fuzz build's seedgen derives from the real files in SHARED (a toy GGUF
# with all of SmolLM2's metadata keys, its tokenizer.json and chat template,
# stories260K converted) or builds with the real encoders (KV transfer
# streams, codebook blobs, kvstore Put requests); the real files themselves
# where they are small (tok512.bin, stories260K.bin) or a bounded prefix
# (the 98 MB GGUF: its first 256 KiB); request bodies around lines of the
# TinyStories excerpt. Committed seeds live in tests/fuzz/corpus/.
# Usage: seed.sh OUT SHARED SEEDGEN
set -euo pipefail
out=$1 shared=$2 seedgen=$3
rm -rf "$out"
mkdir -p "$out"
"$seedgen" "$out" "$shared"
models="$shared/models"
gguf="$models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$gguf" ]]; then
  head -c 262144 "$gguf" >"$out/fuzz_gguf/smollm2_prefix"
fi
if [[ -d "$models/stories260K" ]]; then
  mkdir -p "$out/fuzz_llama2c_tokenizer" "$out/fuzz_llama2c_checkpoint"
  cp "$models/stories260K/tok512.bin" "$out/fuzz_llama2c_tokenizer/"
  cp "$models/stories260K/stories260K.bin" "$out/fuzz_llama2c_checkpoint/"
fi
text="$shared/text/tinystories_train_excerpt.txt"
if [[ -f "$text" ]]; then
  python3 - "$text" "$out" <<'PY'
import json, os, sys
text, out = sys.argv[1], sys.argv[2]
lines = [l.strip() for l in open(text, encoding="utf-8") if l.strip()][:6]
for d in ("fuzz_openai_request", "fuzz_http_request"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
for i, line in enumerate(lines):
    chat = {"messages": [{"role": "system", "content": "Tell stories."},
                         {"role": "user", "content": line}],
            "max_tokens": 32, "temperature": 0.7, "stream": i % 2 == 0,
            "stream_options": {"include_usage": True}}
    completion = {"prompt": line, "max_tokens": 16, "stop": ["\n", "The end"],
                  "seed": i, "top_k": 40, "kv_cache_mode": "compressed"}
    for name, body, mode, path in (("chat", chat, b"\x01", "/v1/chat/completions"),
                                   ("completion", completion, b"\x00", "/v1/completions")):
        data = json.dumps(body).encode()
        with open(os.path.join(out, "fuzz_openai_request", f"{name}{i}"), "wb") as f:
            f.write(mode + data)
        req = (f"POST {path}\r\nAuthorization: Bearer sk-fuzz-0123456789abcdef\r\n"
               f"Origin: https://app.example.com\r\n\r\n").encode() + data
        with open(os.path.join(out, "fuzz_http_request", f"{name}{i}"), "wb") as f:
            f.write(req)
PY
fi
echo "seeds in $out: $(find "$out" -type f | wc -l) files"
