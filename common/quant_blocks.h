// Block-level dequantization and quantization of the block-quantized dtypes
// (layouts in common/dtype.h). ConvertToF32 / ConvertFromF32 call these; the
// CPU kernels' scalar references and the GGUF reader (model/gguf) share them
// rather than keeping copies.
//
// Dequantization (quant_dequant.cc) is plain f32 arithmetic in the order
// common/dtype.h writes, built without FMA contraction, so it is
// reproducible and bit-exact with gguf-py.
//
// Quantization (quant_quantize.cc): the 32-element types use ggml's reference
// rounding (common/dtype.h, ConvertFromF32). The k-quants are fitted per
// sub-block, then per super-block:
//   1. Each sub-block (16 or 32 elements) gets the scale s (and for q2_K,
//      q4_K, q5_K the min m >= 0, x ~ s * q - m) with the least squared error
//      found by a small search: the levels are assigned by rounding with
//      each of 11 trial scales around the range / levels estimate, the best
//      scale (and min) for those levels is solved in closed form (least
//      squares, min clamped to >= 0), and the best trial is refined by two
//      rounds of re-assigning and re-solving. Symmetric types (q3_K, q6_K:
//      q in [-L, L - 1]) try both signs, so the largest magnitude can use
//      the extra negative level.
//   2. The sub-block scales (and mins) are quantized against the
//      super-block's f16 d (and dmin): d = max |s| / (levels of the scale
//      field), each scale rounded to the nearest integer level (q3_K maps
//      the largest magnitude to -32, using the 6-bit field's extra negative
//      level; q6_K scales are int8 in [-127, 127]).
//   3. Every element is rounded to the nearest level of its stored
//      (quantized) sub-block scale and min.
// common/dtype_quant_test.cc measures the RMS error on Gaussian data against
// the error of min/max rounding with unquantized scales; against ggml's own
// reference quantizers (quantize_row_*_ref, built outside the tree) on the
// same N(0, 1) data the k-quants' RMS error is 0.90 (q2_K) to 0.99 (q4_K)
// of theirs, and q5_0 / q5_1 give the same bytes (bench/RESULTS.md).
//
// Thread-safety: pure functions.
#ifndef LATENTKV_COMMON_QUANT_BLOCKS_H_
#define LATENTKV_COMMON_QUANT_BLOCKS_H_

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::quant {

// Dequantizes `blocks` whole blocks of quantized `type` at `src` into
// blocks * DTypeBlockElems(type) floats at `dst`.
void DequantizeBlocks(DType type, const uint8_t* src, int64_t blocks,
                      float* dst);

// Quantizes blocks * DTypeBlockElems(type) floats into `blocks` blocks.
void QuantizeBlocks(DType type, const float* src, int64_t blocks, uint8_t* dst);

// Sub-block j's (j < 8) 6-bit scale and min of a q4_K / q5_K super-block
// from its 12 scale bytes (common/dtype.h).
void UnpackScaleMinK4(const uint8_t* scales12, int j, int* sc, int* mn);
// The inverse: packs 8 scales and 8 mins (each < 64) into 12 bytes.
void PackScaleMinK4(const uint8_t sc[8], const uint8_t mn[8],
                    uint8_t* scales12);
// The 16 6-bit scales of a q3_K super-block (stored values, before the bias
// of 32 is subtracted) from its 12 scale bytes.
void UnpackScalesQ3K(const uint8_t* scales12, uint8_t sc[16]);
// The inverse: packs 16 6-bit scales (each < 64) into 12 bytes.
void PackScalesQ3K(const uint8_t sc[16], uint8_t* scales12);

}  // namespace latentkv::quant

#endif  // LATENTKV_COMMON_QUANT_BLOCKS_H_
