// Element types of tensors held in memory (weights, KV pages) and the
// conversions between them. Shared by the model loader and the kernels.
//
// Float types (f32, bf16, f16) hold one value per element. The block-quantized
// types follow ggml's public block formats: a tensor row of n elements (n a
// multiple of 32) is n / 32 consecutive blocks of 32 elements, no padding,
// packed byte-wise (little-endian f16 scales, unaligned):
//   q8_0: {f16 d; int8 q[32]}            34 bytes, x[j] = d * q[j]
//   q4_0: {f16 d; uint8 qs[16]}          18 bytes, x[j] = ((qs[j] & 15) - 8) *
//   d,
//                                          x[j + 16] = ((qs[j] >> 4) - 8) * d
//   q4_1: {f16 d; f16 m; uint8 qs[16]}   20 bytes, x[j] = (qs[j] & 15) * d + m,
//                                          x[j + 16] = (qs[j] >> 4) * d + m
// (j < 16 for the 4-bit types). Dequantized values are computed in f32:
// q * d is exact there, q4_1 then adds m with one rounding.
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
};

// Elements per quantization block of the block-quantized types.
inline constexpr int kQuantBlockElems = 32;

// True for q8_0, q4_0 and q4_1.
bool IsBlockQuantized(DType t);
// Elements per block: 1 for float types, 32 for the quantized ones.
int DTypeBlockElems(DType t);
// Bytes per block: the element size for float types; 34, 18, 20 for q8_0,
// q4_0, q4_1.
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

// "f32", "bf16", "f16", "q8_0", "q4_0", "q4_1", "fp8_e4m3".
std::string_view DTypeName(DType t);
// Inverse of DTypeName; nullopt for an unknown name.
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
// dequantizes n / 32 blocks (n a multiple of 32, LATENTKV_CHECK).
void ConvertToF32(const void* src, DType from, int64_t n, float* dst);
// Converts n f32 elements to `to` (dst holds DTypeRowBytes(to, n) bytes).
// Quantized types (n a multiple of 32) use ggml's reference rounding, per
// block with amax = max |x|:
//   q8_0: d = amax / 127, q = round(x / d) (half away from zero);
//   q4_0: d = v / -8 with v the value of largest magnitude,
//         q = min(15, trunc(x / d + 8.5));
//   q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - m) / d + 0.5));
// x / d is computed as x * (1 / d) with the unrounded d, and a block with
// d = 0 gets q = 0 (q4_0: 8, which decodes to 0). The stored d, m are f16.
void ConvertFromF32(const float* src, int64_t n, DType to, void* dst);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_DTYPE_H_
