#!/usr/bin/env python3
"""Expected dequantizations of ggml's Q5_0, Q5_1 and k-quant blocks.

    ggml_quants_reference.py OUT_DIR

Writes OUT_DIR/<type>.bin for q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K:
the blocks (seeded random bytes, plus edge blocks: every quant field 0, every
one all ones, the largest and a subnormal f16 scale, negative scales and
mins), then the float32 values that gguf-py (PyPI `gguf`, version pinned in
model/gguf/CMakeLists.txt's comment) dequantizes them to, little-endian.
model/gguf/ggml_quants_test.cc checks latentkv's C++ dequantization against
these files bit for bit: a second implementation (numpy's float32
arithmetic), not latentkv's own.
"""
import os
import sys

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize

# Byte offsets of the f16 fields of each layout (ggml's structs).
HALVES = {"Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82], "Q3_K": [108],
          "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
EDGE_HALVES = [0x7BFF, 0x0001, 0xFBFF, 0x3C00, 0xBC00, 0x0000]  # 65504, ...


def blocks(name, rng):
    elems, size = GGML_QUANT_SIZES[T[name]]
    count = 64 if elems == 32 else 16
    b = rng.integers(0, 256, size=(count, size), dtype=np.uint8)
    halves = HALVES[name]
    for i in range(count):
        for off in halves:
            # A finite scale: exponent below 31 (no inf/NaN).
            h = int(rng.integers(0, 0x7C00)) | (int(rng.integers(0, 2)) << 15)
            if i < len(EDGE_HALVES):
                h = EDGE_HALVES[i]
            b[i, off:off + 2] = np.frombuffer(np.uint16(h).tobytes(), np.uint8)
    # Edge blocks: all quant bits 0, then all 1 (scales kept as drawn).
    keep = np.zeros(size, bool)
    for off in halves:
        keep[off:off + 2] = True
    b[-2, ~keep] = 0
    b[-1, ~keep] = 0xFF
    return b


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261206)
    for name in ["Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
        b = blocks(name, rng)
        y = dequantize(b.reshape(-1), T[name]).astype("<f4")
        assert np.all(np.isfinite(y)), name
        path = os.path.join(out, name.replace("_K", "_k").lower() + ".bin")
        with open(path, "wb") as f:
            f.write(b.tobytes())
            f.write(y.tobytes())
        print(path, b.shape, y.size)


if __name__ == "__main__":
    main()
