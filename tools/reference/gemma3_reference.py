#!/usr/bin/env python3
"""An independent float64 forward of a Gemma 3 GGUF, and its expectations.

    gemma3_reference.py MODEL.gguf TEXT_FILE OUT.json

Written from the architecture's description (HF transformers'
modeling_gemma3.py and the Gemma 3 technical report), not from latentkv's
engine: numpy float64 on the weights gguf-py (PyPI `gguf` 0.17.1)
dequantizes, and a SentencePiece tokenizer built by the `sentencepiece`
package (0.2.x) from the GGUF's vocabulary (pieces, scores, types; BPE, byte
fallback, no dummy prefix, whitespace escaped, identity normalizer: how
Gemma's tokenizer.model is set up).

Writes OUT.json with, for a few chat prompts: the prompt's text, its token
ids, the greedy continuation (16 tokens, stopping early at
<end_of_turn>/<eos>) and its text as SentencePiece decodes it; and for the first 256 tokens of TEXT_FILE (after BOS):
the ids and the per-token negative log-likelihoods, with their mean and the
perplexity. The C++ test tests/integration/gemma3_test.cc holds latentkv to
these (tokens equal, perplexity within 0.1%).

Architecture, per HF (GGUF norm weights already hold HF's 1 + w):
  x = embed[ids] * sqrt(hidden)
  per layer: h = rms(x) * attn_norm; q, k, v = h Wq, h Wk, h Wv (1 KV head of
    key_length 256); q, k = rms(q) * q_norm, rms(k) * k_norm per head; RoPE
    (rotate half) with base 10000 on sliding layers and rope.freq_base on
    global ones (every sixth layer: 5, 11, 17); scores * key_length^-0.5;
    causal, and on sliding layers keys with q_pos - k_pos >= window hidden;
    x += rms(attn Wo) * post_attention_norm;
    h = rms(x) * ffn_norm; x += rms((gelu_tanh(h Wg) * h Wu) Wd) * post_ffw_norm
  logits = (rms(x) * output_norm) embed^T
"""
import json
import math
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from sentencepiece import SentencePieceProcessor
from sentencepiece import sentencepiece_model_pb2 as spm

PROMPTS = [
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
    "<start_of_turn>model\n",
    "<start_of_turn>user\nWrite one sentence about the sea.<end_of_turn>\n"
    "<start_of_turn>model\n",
    "<start_of_turn>user\nList three colours.<end_of_turn>\n"
    "<start_of_turn>model\n",
    "The quick brown fox",
]
GREEDY_TOKENS = 16
PPL_TOKENS = 256


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def tokenizer(reader):
    m = spm.ModelProto()
    tokens = field(reader, "tokenizer.ggml.tokens")
    scores = field(reader, "tokenizer.ggml.scores")
    types = field(reader, "tokenizer.ggml.token_type")
    for piece, score, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece = piece
        p.score = score
        p.type = {1: p.NORMAL, 2: p.UNKNOWN, 3: p.CONTROL, 4: p.USER_DEFINED,
                  5: p.UNUSED, 6: p.BYTE}[ty]
    m.trainer_spec.model_type = spm.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = field(reader, "tokenizer.ggml.unknown_token_id")
    m.trainer_spec.bos_id = field(reader, "tokenizer.ggml.bos_token_id")
    m.trainer_spec.eos_id = field(reader, "tokenizer.ggml.eos_token_id")
    m.trainer_spec.pad_id = field(reader, "tokenizer.ggml.padding_token_id")
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(
        field(reader, "tokenizer.ggml.add_space_prefix"))
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    sp = SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp, tokens


def encode(sp, vocab, text):
    """Control tokens written in the text (<start_of_turn>) are matched first,
    as HF tokenizers and llama.cpp do with special tokens; the rest goes
    through SentencePiece."""
    specials = {"<start_of_turn>": vocab.index("<start_of_turn>"),
                "<end_of_turn>": vocab.index("<end_of_turn>")}
    ids = []
    while text:
        cut = min((text.find(s), s) for s in specials if s in text) \
            if any(s in text for s in specials) else (len(text), None)
        if cut[0] > 0:
            ids += sp.EncodeAsIds(text[:cut[0]])
        if cut[1] is None:
            break
        ids.append(specials[cut[1]])
        text = text[cut[0] + len(cut[1]):]
    return ids


class Gemma3:
    def __init__(self, reader):
        a = "gemma3."
        self.hidden = int(field(reader, a + "embedding_length"))
        self.layers = int(field(reader, a + "block_count"))
        self.heads = int(field(reader, a + "attention.head_count"))
        self.kv_heads = int(field(reader, a + "attention.head_count_kv"))
        self.hd = int(field(reader, a + "attention.key_length"))
        self.eps = float(field(reader, a + "attention.layer_norm_rms_epsilon"))
        self.theta = float(field(reader, a + "rope.freq_base"))
        self.window = int(field(reader, a + "attention.sliding_window"))
        self.w = {}
        for t in reader.tensors:
            arr = dequantize(t.data, t.tensor_type).astype(np.float64)
            shape = [int(d) for d in reversed(t.shape)]
            self.w[t.name] = arr.reshape(shape if len(shape) > 1 else -1)

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, base):
        half = self.hd // 2
        inv = base ** (-np.arange(0, half, dtype=np.float64) * 2 / self.hd)
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        lo, hi = x[..., :half], x[..., half:]
        return np.concatenate([lo * c - hi * s, hi * c + lo * s], axis=-1)

    def logits(self, ids):
        n = len(ids)
        pos = np.arange(n, dtype=np.float64)
        emb = self.w["token_embd.weight"]
        x = emb[ids] * math.sqrt(self.hidden)
        g = self.heads // self.kv_heads
        for l in range(self.layers):
            p = f"blk.{l}."
            w = lambda name: self.w[p + name]
            local = l % 6 != 5
            h = self.rms(x, w("attn_norm.weight"))
            q = (h @ w("attn_q.weight").T).reshape(n, self.heads, self.hd)
            k = (h @ w("attn_k.weight").T).reshape(n, self.kv_heads, self.hd)
            v = (h @ w("attn_v.weight").T).reshape(n, self.kv_heads, self.hd)
            q = self.rms(q, w("attn_q_norm.weight"))
            k = self.rms(k, w("attn_k_norm.weight"))
            base = 10000.0 if local else self.theta
            q, k = self.rope(q, pos, base), self.rope(k, pos, base)
            dist = pos[:, None] - pos[None, :]
            hidden = dist < 0
            if local:
                hidden |= dist >= self.window
            att = np.zeros((n, self.heads, self.hd))
            for hh in range(self.heads):
                s = q[:, hh, :] @ k[:, hh // g, :].T / math.sqrt(self.hd)
                s[hidden] = -np.inf
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                att[:, hh, :] = s @ v[:, hh // g, :]
            o = att.reshape(n, -1) @ w("attn_output.weight").T
            x = x + self.rms(o, w("post_attention_norm.weight"))
            h = self.rms(x, w("ffn_norm.weight"))
            gt = h @ w("ffn_gate.weight").T
            up = h @ w("ffn_up.weight").T
            gelu = 0.5 * gt * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                           (gt + 0.044715 * gt ** 3)))
            d = (gelu * up) @ w("ffn_down.weight").T
            x = x + self.rms(d, w("post_ffw_norm.weight"))
        return self.rms(x, self.w["output_norm.weight"]) @ emb.T


def main():
    model_path, text_path, out_path = sys.argv[1:4]
    reader = GGUFReader(model_path)
    sp, vocab = tokenizer(reader)
    bos = int(field(reader, "tokenizer.ggml.bos_token_id"))
    stop = {int(field(reader, "tokenizer.ggml.eos_token_id")),
            vocab.index("<end_of_turn>")}
    model = Gemma3(reader)
    out = {"model_sha256_prefix": None, "greedy": [], "perplexity": {}}
    for text in PROMPTS:
        ids = [bos] + encode(sp, vocab, text)
        gen = []
        for _ in range(GREEDY_TOKENS):
            lg = model.logits(ids + gen)[-1]
            top = np.argsort(-lg)[:2]
            gen.append(int(top[0]))
            # Record how decisive each choice was (f32 engines can only be
            # held to choices with a clear margin).
            out.setdefault("margins", []).append(float(lg[top[0]] - lg[top[1]]))
            if gen[-1] in stop:
                break
        out["greedy"].append({"prompt": text, "ids": ids, "continuation": gen,
                              "text": sp.DecodeIds(gen)})
        print(text.replace("\n", "\\n"), "->", gen, repr(sp.DecodeIds(gen)),
              flush=True)
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    # Held-out text: a stretch from the middle of the file.
    start = len(text) // 2
    ids = [bos] + encode(sp, vocab, text[start:start + 4000])[:PPL_TOKENS]
    lg = model.logits(ids)
    m = lg.max(axis=1, keepdims=True)
    logz = (m[:, 0] + np.log(np.exp(lg - m).sum(axis=1)))
    nll = [float(logz[i] - lg[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    out["perplexity"] = {"text_offset": start, "ids": ids, "nll": nll,
                         "mean_nll": float(np.mean(nll)),
                         "perplexity": float(math.exp(np.mean(nll)))}
    print("perplexity", out["perplexity"]["perplexity"])
    del out["model_sha256_prefix"]
    with open(out_path, "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
