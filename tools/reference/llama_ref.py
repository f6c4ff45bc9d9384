#!/usr/bin/env python3
"""Float64 numpy reference for latentkv model directories.

Independent of the C++ engine: it parses config.json, model.safetensors and
the llama2.c tokenizer (tokenizer.bin) by hand, and runs a whole-sequence
Llama forward in float64 (per-layer d_qk / d_vo, GQA, HF rotate-half RoPE with
the standard or frequency-aware table or the layer's rotary_inv_freq tensor,
tied or untied head). Only numpy and the standard library are used.

Perplexity protocol (--mode lines):
  * every non-empty line of the text file (split on "\\n", the newline removed)
    is one document; its tokens are [BOS] + encode(line);
  * every token after BOS is predicted exactly once;
  * the predicted targets t_1..t_n are cut into groups of at most window-1;
    a group t_k..t_{k+m-1} is predicted from the input [BOS, t_k, ...,
    t_{k+m-2}] at positions 0..m-1 (so the first group is the plain
    [BOS, t_1, ...] prefix and later groups restart from BOS);
  * ppl = exp(mean NLL over all predicted tokens of all documents).
Prints "tokens=<predicted tokens> ppl=<ppl, 8 significant digits>".

Tokenizer (llama2.c's encode): a single space is prepended to non-empty text,
the text is split into UTF-8 code points, a code point missing from the
vocabulary becomes byte-fallback tokens (id = byte + 3), then the adjacent
pair whose concatenation is in the vocabulary with the highest score is merged
repeatedly (the first such pair on ties). encode() adds no BOS. When a string
occurs twice in the vocabulary the lowest id is used.

RoPE tables are rounded to float32, as the engine holds them (and as HF and
llama2.c compute them); everything else is float64.

Usage:
  llama_ref.py --model DIR --text FILE [--mode lines] [--window N]
               [--max-lines N] [--tokenizer FILE]
  llama_ref.py --model DIR --generate "Once upon a time" [--steps N]
  llama_ref.py --model DIR --encode "some text"
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np


# ---------------------------------------------------------------------------
# config.json


def _int(cfg, key, default=None, required=False):
    v = cfg.get(key)
    if v is None:
        if required:
            raise ValueError(f'config.json: key "{key}": missing')
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise ValueError(f'config.json: key "{key}": expected an integer')
    return int(v)


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json"), "r", encoding="utf-8") as f:
        cfg = json.load(f)
    c = {}
    c["hidden"] = _int(cfg, "hidden_size", required=True)
    c["inter"] = _int(cfg, "intermediate_size", required=True)
    c["layers"] = _int(cfg, "num_hidden_layers", required=True)
    c["heads"] = _int(cfg, "num_attention_heads", required=True)
    c["vocab"] = _int(cfg, "vocab_size", required=True)
    c["kv_heads"] = _int(cfg, "num_key_value_heads", c["heads"])
    c["max_pos"] = _int(cfg, "max_position_embeddings", 2048)
    c["eps"] = float(cfg.get("rms_norm_eps") if cfg.get("rms_norm_eps") is not None else 1e-5)
    # The engine holds rms_norm_eps as a float32.
    c["eps"] = float(np.float32(c["eps"]))
    c["theta"] = float(cfg.get("rope_theta") if cfg.get("rope_theta") is not None else 10000.0)
    c["tied"] = bool(cfg.get("tie_word_embeddings") or False)
    scheme = cfg.get("rope_scheme") or "standard"
    if scheme not in ("standard", "frequency_aware"):
        raise ValueError(f'config.json: key "rope_scheme": unknown scheme {scheme!r}')
    c["scheme"] = scheme

    def token_id(key, default):
        v = cfg.get(key)
        if v is None:
            return default
        if isinstance(v, list):
            v = v[0]
        return int(v)

    c["bos"] = token_id("bos_token_id", 1)
    c["eos"] = token_id("eos_token_id", 2)
    base = _int(cfg, "head_dim", None)
    if base is None and c["hidden"] % c["heads"] == 0:
        base = c["hidden"] // c["heads"]
    for key, ratio_key, out in (("qk_head_dim", "reduce_ratio_qk", "dqk"),
                                ("vo_head_dim", "reduce_ratio_vo", "dvo")):
        v = cfg.get(key)
        if v is None:
            ratio = _int(cfg, ratio_key, 1)
            if base is None or base % ratio:
                raise ValueError(f'config.json: key "{key}": cannot derive head dim')
            dims = [base // ratio] * c["layers"]
        elif isinstance(v, list):
            if len(v) != c["layers"]:
                raise ValueError(f'config.json: key "{key}": list length != num_hidden_layers')
            dims = [int(x) for x in v]
        else:
            dims = [int(v)] * c["layers"]
        c[out] = dims
    if c["heads"] % c["kv_heads"]:
        raise ValueError('config.json: key "num_key_value_heads": does not divide num_attention_heads')
    return c


# ---------------------------------------------------------------------------
# safetensors


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} beyond the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    tensors = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        shape = tuple(int(d) for d in e["shape"])
        buf = data[begin:end]
        dt = e["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32).astype(np.float64)
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: size mismatch")
        tensors[name] = a.reshape(shape)
    return tensors


# ---------------------------------------------------------------------------
# The model


def default_inv_freq(c, layer):
    d = c["dqk"][layer]
    if c["scheme"] == "standard":
        e = np.arange(0, d, 2, dtype=np.float64) / d
    else:
        e = np.concatenate([np.arange(d // 4, 3 * d // 4, 2),
                            np.arange(3 * d // 4, d, 1)]).astype(np.float64) / d
    return np.power(float(c["theta"]), -e)


class Model:
    def __init__(self, model_dir):
        self.c = c = load_config(model_dir)
        t = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        D, I = c["hidden"], c["inter"]

        def get(name, shape):
            if name not in t:
                raise ValueError(f"{name}: missing tensor")
            if tuple(t[name].shape) != tuple(shape):
                raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t[name].shape)}")
            return t[name]

        self.embed = get("model.embed_tokens.weight", (c["vocab"], D))
        self.layers = []
        for l in range(c["layers"]):
            p = f"model.layers.{l}."
            dqk, dvo = c["dqk"][l], c["dvo"][l]
            L = {
                "attn_norm": get(p + "input_layernorm.weight", (D,)),
                "q": get(p + "self_attn.q_proj.weight", (c["heads"] * dqk, D)),
                "k": get(p + "self_attn.k_proj.weight", (c["kv_heads"] * dqk, D)),
                "v": get(p + "self_attn.v_proj.weight", (c["kv_heads"] * dvo, D)),
                "o": get(p + "self_attn.o_proj.weight", (D, c["heads"] * dvo)),
                "ffn_norm": get(p + "post_attention_layernorm.weight", (D,)),
                "gate": get(p + "mlp.gate_proj.weight", (I, D)),
                "up": get(p + "mlp.up_proj.weight", (I, D)),
                "down": get(p + "mlp.down_proj.weight", (D, I)),
            }
            inv = None
            for suffix in ("self_attn.rotary_inv_freq", "self_attn.rotary_emb.inv_freq"):
                if p + suffix in t:
                    inv = get(p + suffix, (dqk // 2,))
                    break
            if inv is None:
                inv = default_inv_freq(c, l)
            # f32 tables, as the engine (and HF, and llama2.c) hold them.
            L["inv_freq"] = inv.astype(np.float32).astype(np.float64)
            self.layers.append(L)
        self.norm = get("model.norm.weight", (D,))
        if c["tied"]:
            self.head = self.embed
        else:
            self.head = get("lm_head.weight", (c["vocab"], D))

    def _rms(self, x, w):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.c["eps"]) * w

    def logits(self, ids, positions=None):
        """Logits [len(ids), vocab] for one causal sequence."""
        c = self.c
        ids = np.asarray(ids, dtype=np.int64)
        m = len(ids)
        pos = np.arange(m, dtype=np.float64) if positions is None else np.asarray(positions, np.float64)
        nh, nkv = c["heads"], c["kv_heads"]
        group = nh // nkv
        mask = np.triu(np.full((m, m), -np.inf), k=1)
        x = self.embed[ids].copy()
        for l, L in enumerate(self.layers):
            dqk, dvo = c["dqk"][l], c["dvo"][l]
            h = self._rms(x, L["attn_norm"])
            q = (h @ L["q"].T).reshape(m, nh, dqk)
            k = (h @ L["k"].T).reshape(m, nkv, dqk)
            v = (h @ L["v"].T).reshape(m, nkv, dvo)
            ang = pos[:, None] * L["inv_freq"][None, :]  # [m, dqk/2]
            cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

            def rope(a):
                a1, a2 = a[..., :dqk // 2], a[..., dqk // 2:]
                return np.concatenate([a1 * cos - a2 * sin, a2 * cos + a1 * sin], axis=-1)

            q, k = rope(q), rope(k)
            k = np.repeat(k, group, axis=1)  # head h uses kv head h // group
            v = np.repeat(v, group, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(dqk) + mask[None]
            s = s - s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", p, v).reshape(m, nh * dvo)
            x = x + o @ L["o"].T
            h = self._rms(x, L["ffn_norm"])
            g = h @ L["gate"].T
            u = h @ L["up"].T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ L["down"].T
        x = self._rms(x, self.norm)
        return x @ self.head.T


# ---------------------------------------------------------------------------
# llama2.c tokenizer


class Tokenizer:
    def __init__(self, path, vocab_size):
        with open(path, "rb") as f:
            raw = f.read()
        off = 4
        self.tokens, self.scores = [], []
        for _ in range(vocab_size):
            score, n = struct.unpack_from("<fi", raw, off)
            off += 8
            self.tokens.append(raw[off:off + n])
            self.scores.append(float(score))
            off += n
        self.ids = {}
        for i, t in enumerate(self.tokens):
            self.ids.setdefault(t, i)

    def encode(self, text):
        if not text:
            return []
        data = (" " + text).encode("utf-8")
        toks = []
        # Split into UTF-8 code points as llama2.c does (a lead byte and its
        # continuation bytes, at most 4).
        i = 0
        while i < len(data):
            j = i + 1
            while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            cp = data[i:j]
            if cp in self.ids:
                toks.append(self.ids[cp])
            else:
                toks.extend(b + 3 for b in cp)
            i = j
        while True:
            best, best_id, best_i = -1e10, -1, -1
            for i in range(len(toks) - 1):
                mid = self.ids.get(self.tokens[toks[i]] + self.tokens[toks[i + 1]])
                if mid is not None and self.scores[mid] > best:
                    best, best_id, best_i = self.scores[mid], mid, i
            if best_i < 0:
                break
            toks[best_i:best_i + 2] = [best_id]
        return toks

    def piece(self, prev, tok):
        s = self.tokens[tok]
        if prev == 1 and s.startswith(b" "):
            s = s[1:]
        if len(s) == 6 and s.startswith(b"<0x") and s.endswith(b">"):
            try:
                return bytes([int(s[3:5], 16)])
            except ValueError:
                pass
        return s


# ---------------------------------------------------------------------------


def perplexity(model, tok, lines, window):
    bos = model.c["bos"]
    total_nll, count = 0.0, 0
    for line in lines:
        targets = tok.encode(line)
        for k in range(0, len(targets), window - 1):
            group = targets[k:k + window - 1]
            inp = [bos] + group[:-1]
            lg = model.logits(inp)
            mx = lg.max(axis=-1, keepdims=True)
            lse = (mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=-1)))
            nll = lse - lg[np.arange(len(group)), group]
            total_nll += float(nll.sum())
            count += len(group)
    return count, math.exp(total_nll / count) if count else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text")
    ap.add_argument("--mode", default="lines", choices=["lines"])
    ap.add_argument("--window", type=int, default=0, help="default: max_position_embeddings")
    ap.add_argument("--max-lines", type=int, default=0, help="0: all non-empty lines")
    ap.add_argument("--tokenizer", help="default: <model>/tokenizer.bin")
    ap.add_argument("--generate", help="greedy decoding from this prompt")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--encode", help="print the token ids of this text")
    args = ap.parse_args()

    t0 = time.time()
    model = Model(args.model)
    tok = Tokenizer(args.tokenizer or os.path.join(args.model, "tokenizer.bin"), model.c["vocab"])
    if args.encode is not None:
        print(" ".join(str(t) for t in tok.encode(args.encode)))
        return 0
    if args.generate is not None:
        ids = [model.c["bos"]] + tok.encode(args.generate)
        out = b""
        for i in range(1, len(ids)):
            out += tok.piece(ids[i - 1], ids[i])
        while len(ids) < min(args.steps, model.c["max_pos"]):
            nxt = int(np.argmax(model.logits(ids)[-1]))
            if nxt == model.c["bos"] or nxt == model.c["eos"]:
                break
            out += tok.piece(ids[-1], nxt)
            ids.append(nxt)
        print(out.decode("utf-8", errors="replace"))
        return 0
    if not args.text:
        ap.error("--text is required for perplexity")
    window = args.window or model.c["max_pos"]
    if window < 2:
        ap.error("--window must be at least 2")
    with open(args.text, "rb") as f:
        text = f.read().decode("utf-8")
    lines = [ln for ln in text.split("\n") if ln]
    if args.max_lines > 0:
        lines = lines[:args.max_lines]
    count, ppl = perplexity(model, tok, lines, window)
    print(f"tokens={count} ppl={ppl:.8g}")
    print(f"# {len(lines)} documents, window {window}, {time.time() - t0:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
