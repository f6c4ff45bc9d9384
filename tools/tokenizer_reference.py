#!/usr/bin/env python3
"""An independent byte-level BPE tokenizer, the oracle of bpe_tokenizer_test.

Pure Python (stdlib + the `regex` module, which knows \\p{L}): it reads the
vocabulary straight from a GGUF file's metadata, cuts special tokens
(control and user-defined types) out of the text with a leftmost-longest
regex alternation, pre-tokenizes with the real regex patterns of HF
tokenizers / llama.cpp, and merges with the classic GPT-2 `bpe` loop (the
lowest-ranked pair, every occurrence, until none is left). It shares no code
with the C++ tokenizer.

Usage:
  tokenizer_reference.py --gguf MODEL.gguf --pre smollm[,gpt2,...] \\
      --input IN --output OUT [--ignore-merges]
IN holds one JSON string per line. OUT gets, for each pre-tokenizer and each
input line, one JSON object {"pre", "text", "ids", "pieces"}: ids as
Encode(text, add_bos=False) gives them, pieces the pre-tokens of the whole
text (special tokens not cut out).
"""

import argparse
import json
import struct
import sys

try:
    import regex
except ImportError:
    sys.exit("tokenizer_reference.py needs the Python `regex` module "
             "(Debian: python3-regex)")

GPT2 = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
        r"""|\s+(?!\S)|\s+""")
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"""
          r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

GPT2_RE = regex.compile(GPT2)
LLAMA3_RE = regex.compile(LLAMA3)
QWEN2_RE = regex.compile(QWEN2)
DIGIT_RE = regex.compile(r"(\p{N})")


def read_gguf_metadata(path):
    """The metadata key/values of a GGUF (v2/v3, little endian) file."""
    f = open(path, "rb")

    def rd(fmt):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, f.read(size))[0]

    def rs():
        return f.read(rd("Q")).decode("utf-8")

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f",
              7: "?", 10: "Q", 11: "q", 12: "d"}

    def rv(t):
        if t in scalar:
            return rd(scalar[t])
        if t == 8:
            return rs()
        if t == 9:
            elem = rd("I")
            return [rv(elem) for _ in range(rd("Q"))]
        raise ValueError("unknown GGUF type %d" % t)

    if f.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    rd("I")  # version
    rd("Q")  # tensor count
    meta = {}
    for _ in range(rd("Q")):
        key = rs()
        meta[key] = rv(rd("I"))
    return meta


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("\u00a1"), ord("\u00ac") + 1)) +
          list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def split_isolated(pattern, text):
    """HF Split(behavior=Isolated): matches and the gaps between them."""
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        out.append(m.group())
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def pre_tokenize(pre, text):
    if pre in ("gpt2", "default"):
        return split_isolated(GPT2_RE, text)
    if pre == "smollm":
        out = []
        for part in DIGIT_RE.split(text):
            if part:
                out.extend(split_isolated(GPT2_RE, part)
                           if not DIGIT_RE.fullmatch(part) else [part])
        return out
    if pre == "llama3":
        return split_isolated(LLAMA3_RE, text)
    if pre == "qwen2":
        return split_isolated(QWEN2_RE, text)
    raise ValueError("unknown pre-tokenizer " + pre)


class Reference:
    def __init__(self, meta, ignore_merges):
        self.tokens = meta["tokenizer.ggml.tokens"]
        types = meta.get("tokenizer.ggml.token_type", [1] * len(self.tokens))
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {}
        for rank, m in enumerate(meta.get("tokenizer.ggml.merges", [])):
            a, b = m.split(" ")
            self.ranks[(a, b)] = rank
        self.byte_map = bytes_to_unicode()
        self.ignore_merges = ignore_merges
        specials = sorted((t for t, ty in zip(self.tokens, types)
                           if ty in (3, 4) and t), key=len, reverse=True)
        self.special_re = (regex.compile("(" + "|".join(
            regex.escape(s) for s in specials) + ")") if specials else None)
        self.cache = {}

    def bpe(self, word):
        """The classic GPT-2 loop over a tuple of symbols."""
        word = list(word)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if (i + 1 < len(word) and word[i] == best[0] and
                        word[i + 1] == best[1]):
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode_piece(self, piece):
        mapped = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
        if mapped not in self.cache:
            if self.ignore_merges and mapped in self.ids:
                self.cache[mapped] = [self.ids[mapped]]
            else:
                self.cache[mapped] = [self.ids[s] for s in self.bpe(mapped)]
        return self.cache[mapped]

    def encode(self, pre, text):
        parts = self.special_re.split(text) if self.special_re else [text]
        ids = []
        for k, part in enumerate(parts):
            if k % 2 == 1:  # a special token (the captured group)
                ids.append(self.ids[part])
            elif part:
                for piece in pre_tokenize(pre, part):
                    ids.extend(self.encode_piece(piece))
        return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--pre", required=True,
                    help="comma-separated: gpt2, smollm, llama3, qwen2")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--ignore-merges", action="store_true")
    args = ap.parse_args()
    meta = read_gguf_metadata(args.gguf)
    if meta.get("tokenizer.ggml.model") != "gpt2":
        sys.exit("not a byte-level BPE (gpt2) tokenizer")
    ref = Reference(meta, args.ignore_merges)
    with open(args.input, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f if line.strip()]
    with open(args.output, "w", encoding="utf-8") as out:
        for pre in args.pre.split(","):
            for text in texts:
                out.write(json.dumps({
                    "pre": pre, "text": text, "ids": ref.encode(pre, text),
                    "pieces": pre_tokenize(pre, text)}) + "\n")


if __name__ == "__main__":
    main()
