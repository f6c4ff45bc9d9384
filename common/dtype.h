// Element types of tensors held in memory (weights, KV pages) and the
// conversions between them. Shared by the model loader and the kernels.
#ifndef LATENTKV_COMMON_DTYPE_H_
#define LATENTKV_COMMON_DTYPE_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace latentkv {

enum class DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Bytes per element of `t`.
int DTypeSize(DType t);
// "f32", "bf16", "f16".
std::string_view DTypeName(DType t);
// Inverse of DTypeName; nullopt for an unknown name.
std::optional<DType> ParseDType(std::string_view name);

// bf16 conversion rounds to nearest even; NaN stays NaN.
uint16_t F32ToBf16(float x);
float Bf16ToF32(uint16_t x);
// IEEE half; rounds to nearest even, overflow becomes inf.
uint16_t F32ToF16(float x);
float F16ToF32(uint16_t x);

// Converts n elements from `src` (in `from`) to f32.
void ConvertToF32(const void* src, DType from, int64_t n, float* dst);
// Converts n f32 elements to `to` (dst holds n * DTypeSize(to) bytes).
void ConvertFromF32(const float* src, int64_t n, DType to, void* dst);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_DTYPE_H_
