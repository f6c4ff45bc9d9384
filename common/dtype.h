// Element types of tensors held in memory (weights, KV pages) and the
// conversions between them. Shared by the model loader and the kernels.
//
// Float types (f32, bf16, f16) hold one value per element. The block-quantized
// types follow ggml's public block formats: a tensor row of n elements is
// n / B consecutive blocks of B elements (B = DTypeBlockElems: 32, or 256 for
// the k-quants' super-blocks), no padding, packed byte-wise (little-endian f16
// scales, unaligned). With q the stored unsigned field of an element:
//   q8_0: {f16 d; int8 q[32]}           34 bytes, x[j] = d * q[j]
//   q4_0: {f16 d; uint8 qs[16]}         18 bytes,
//         x[j] = ((qs[j] & 15) - 8) * d, x[j + 16] = ((qs[j] >> 4) - 8) * d
//   q4_1: {f16 d; f16 m; uint8 qs[16]}  20 bytes,
//         x[j] = (qs[j] & 15) * d + m, x[j + 16] = (qs[j] >> 4) * d + m
//   q5_0: {f16 d; uint8 qh[4]; uint8 qs[16]}        22 bytes: element j < 16
//         takes the low nibble of qs[j] and bit j of qh (as bit 4), element
//         j + 16 the high nibble and bit j + 16; x = d * (q - 16)
//   q5_1: {f16 d; f16 m; uint8 qh[4]; uint8 qs[16]} 24 bytes, the same q,
//         x = d * q + m
//   q2_K: {uint8 scales[16]; uint8 qs[64]; f16 d, dmin}            84 bytes:
//         16 sub-blocks of 16 elements, sub-block s with scale
//         sc = scales[s] & 15 and min mn = scales[s] >> 4; element
//         128h + 32t + l (h < 2, t < 4, l < 32) has
//         q = (qs[32h + l] >> 2t) & 3; x = (d * sc) * q - dmin * mn
//   q3_K: {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d} 110 bytes:
//         16 sub-blocks of 16 with 6-bit scales sc (low 4 bits: scales[s] & 15
//         for s < 8, scales[s - 8] >> 4 for s >= 8; high 2 bits: bits 2(s / 4)
//         and 2(s / 4) + 1 of scales[8 + s % 4]); element 128h + 32t + l has
//         q = ((qs[32h + l] >> 2t) & 3) - (bit 4h + t of hmask[l] ? 0 : 4);
//         x = (d * (sc - 32)) * q
//   q4_K: {f16 d, dmin; uint8 scales[12]; uint8 qs[128]}           144 bytes:
//         8 sub-blocks of 32 with 6-bit scales sc and mins mn (s < 4:
//         sc = scales[s] & 63, mn = scales[s + 4] & 63; s >= 4: low 4 bits
//         from scales[s + 4] & 15 and >> 4, high 2 from scales[s - 4] >> 6
//         and scales[s] >> 6);
//         element 64g + l (l < 32) is the low nibble of qs[32g + l] (sub-block
//         2g), element 64g + 32 + l its high nibble (sub-block 2g + 1);
//         x = (d * sc) * q - dmin * mn
//   q5_K: {f16 d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}
//         176 bytes: q4_K's q plus bit 4 from bit s of qh[l] for element
//         32s + l of sub-block s
//   q6_K: {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d}    210 bytes:
//         16 sub-blocks of 16 (sub-block s = element / 16, int8 scale sc);
//         element 128h + 32t + l (t < 4) takes the low (t < 2) or high (t >= 2)
//         nibble of ql[64h + 32(t % 2) + l] and bits 2t, 2t + 1 of
//         qh[32h + l] as bits 4, 5; x = (d * sc) * (q - 32)
// (j < 16 for the 32-element types). Dequantized values are computed in f32
// in the order written (products first; no fused multiply-add): every
// product is exact there (few significant bits), so each value rounds at
// most once (the q4_1 / q5_1 / q2_K / q4_K / q5_K offset). The k-quant and
// q5 formats are bit-exact with gguf-py's dequantization
// (model/gguf/ggml_quants_test.cc).
#ifndef LATENTKV_COMMON_DTYPE_H_
#define LATENTKV_COMMON_DTYPE_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace latentkv {

enum class DType : int {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kQ8_0 = 3,
  kQ4_0 = 4,
  kQ4_1 = 5,
  // OCP FP8 E4M3 ("e4m3fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits;
  // no infinities, S.1111.111 is NaN, largest finite 448. Only for KV pools
  // (with a per-(layer, KV head) scale), never for weights.
  kF8E4M3 = 6,
  // ggml's 5-bit and k-quant formats (above): weights only.
  kQ5_0 = 7,
  kQ5_1 = 8,
  kQ2_K = 9,
  kQ3_K = 10,
  kQ4_K = 11,
  kQ5_K = 12,
  kQ6_K = 13,
};

// Elements per quantization block of q8_0, q4_0, q4_1, q5_0 and q5_1.
inline constexpr int kQuantBlockElems = 32;
// Elements per super-block of the k-quants (q2_K .. q6_K).
inline constexpr int kKQuantBlockElems = 256;

// True for q8_0, q4_0, q4_1, q5_0, q5_1 and q2_K .. q6_K.
bool IsBlockQuantized(DType t);
// True for the k-quants q2_K .. q6_K.
bool IsKQuant(DType t);
// Elements per block: 1 for float types, 256 for the k-quants, 32 for the
// other quantized types.
int DTypeBlockElems(DType t);
// Bytes per block: the element size for float types; 34, 18, 20, 22, 24 for
// q8_0, q4_0, q4_1, q5_0, q5_1; 84, 110, 144, 176, 210 for q2_K .. q6_K.
int DTypeBlockBytes(DType t);
// Bytes of n consecutive elements (a row of n columns). n must be a multiple
// of DTypeBlockElems(t) (LATENTKV_CHECK).
int64_t DTypeRowBytes(DType t, int64_t n);

// Bytes per element of a float type `t`. LATENTKV_CHECK-fails for a
// block-quantized type (which has no per-element size: use DTypeRowBytes).
int DTypeSize(DType t);
// True for the element types a KV cache may hold: f32, bf16, f16, fp8_e4m3.
bool IsKvDType(DType t);
// Bytes of one KV slot as the pools store it and transfers carry it: an
// int32 position, then K [d_qk] and V [d_vo] in `dtype` (a KV dtype).
int64_t KvRowBytes(DType dtype, int32_t d_qk, int32_t d_vo);

// "f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "fp8_e4m3", "q5_0", "q5_1",
// "q2_K", "q3_K", "q4_K", "q5_K", "q6_K" (ggml's spelling).
std::string_view DTypeName(DType t);
// Inverse of DTypeName (the k-quants also in lower case, "q4_k"); nullopt
// for an unknown name.
std::optional<DType> ParseDType(std::string_view name);

// bf16 conversion rounds to nearest even; NaN stays NaN.
uint16_t F32ToBf16(float x);
float Bf16ToF32(uint16_t x);
// IEEE half; rounds to nearest even, overflow becomes inf.
uint16_t F32ToF16(float x);
float F16ToF32(uint16_t x);
// FP8 E4M3: rounds to nearest even and saturates to +-448 (the finite
// range; what CUDA's __nv_cvt_float_to_fp8 does with __NV_SATFINITE); NaN
// becomes NaN (0x7f with the sign).
uint8_t F32ToF8E4M3(float x);
float F8E4M3ToF32(uint8_t x);
inline constexpr float kF8E4M3Max = 448.0f;

// Converts n elements from `src` (in `from`) to f32. Quantized types:
// dequantizes n / B blocks (n a multiple of DTypeBlockElems, LATENTKV_CHECK).
void ConvertToF32(const void* src, DType from, int64_t n, float* dst);
// Converts n f32 elements to `to` (dst holds DTypeRowBytes(to, n) bytes).
// Quantized types (n a multiple of DTypeBlockElems) use ggml's reference
// rounding for the 32-element types, per block with amax = max |x|:
//   q8_0: d = amax / 127, q = round(x / d) (half away from zero);
//   q4_0: d = v / -8 with v the value of largest magnitude,
//         q = min(15, trunc(x / d + 8.5));
//   q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - m) / d + 0.5));
//   q5_0: d = v / -16, q = min(31, trunc(x / d + 16.5));
//   q5_1: d = (max - min) / 31, m = min, q = min(31, trunc((x - m) / d + 0.5));
// x / d is computed as x * (1 / d) with the unrounded d, and a block with
// d = 0 gets q = 0 (q4_0: 8, q5_0: 16, which decode to 0). The stored d, m
// are f16. The k-quants search each sub-block's scale (and min) for the
// least squared error, then quantize the sub-block scales against the
// super-block's f16 d (and dmin) and round every element to the nearest
// level of the stored scale (common/quant_blocks.h describes the search).
// Non-finite inputs give unspecified (but well-formed) blocks.
void ConvertFromF32(const float* src, int64_t n, DType to, void* dst);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_DTYPE_H_
