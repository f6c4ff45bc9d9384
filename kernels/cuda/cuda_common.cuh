// Device helpers shared by the CUDA kernels: element conversions of the KV
// and weight dtypes (bit-for-bit the host conversions of common/dtype.h),
// block dequantization (ggml's q8_0, q4_0, q4_1 layouts), warp reductions,
// and the launch-error check.
#ifndef LATENTKV_KERNELS_CUDA_CUDA_COMMON_CUH_
#define LATENTKV_KERNELS_CUDA_CUDA_COMMON_CUH_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::kernels::cuda {

// Element storage types of the templated kernels (one per DType).
struct F32Elem {
  using Storage = float;
};
struct Bf16Elem {
  using Storage = uint16_t;
};
struct F16Elem {
  using Storage = uint16_t;
};
struct Fp8Elem {
  using Storage = uint8_t;
};

__device__ __forceinline__ float Bf16ToF32Dev(uint16_t x) {
  return __uint_as_float(static_cast<uint32_t>(x) << 16);
}
__device__ __forceinline__ uint16_t F32ToBf16Dev(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((u >> 16) | 0x40);
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float F16ToF32Dev(uint16_t x) {
  return __half2float(__ushort_as_half(x));
}
__device__ __forceinline__ uint16_t F32ToF16Dev(float x) {
  return __half_as_ushort(__float2half_rn(x));
}
// OCP FP8 E4M3 (common/dtype.h): same algorithm as F32ToF8E4M3.
__device__ __forceinline__ uint8_t F32ToF8E4M3Dev(float x) {
  const uint32_t u = __float_as_uint(x);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7f;
  if (a >= 0x43e00000u) return sign | 0x7e;
  if (a < 0x3c800000u) {
    const float t = __fadd_rn(__uint_as_float(a), 16384.0f);
    return sign | static_cast<uint8_t>(__float_as_uint(t) - 0x46800000u);
  }
  const uint32_t rounded = a + 0x7ffffu + ((a >> 20) & 1u);
  return sign | static_cast<uint8_t>((rounded >> 20) - ((127 - 7) << 3));
}
__device__ __forceinline__ float F8E4M3ToF32Dev(uint8_t x) {
  const uint32_t sign = static_cast<uint32_t>(x & 0x80) << 24;
  const uint32_t e = (x >> 3) & 0xf, m = x & 7;
  uint32_t mag;
  if (e == 0xf && m == 7) {
    mag = 0x7fc00000u;  // NaN
  } else if (e == 0) {
    mag = __float_as_uint(static_cast<float>(m) * 0.001953125f);
  } else {
    mag = ((e + 127 - 7) << 23) | (m << 20);
  }
  return __uint_as_float(mag | sign);
}

// Loads element i of a KV page (times the head's scale for fp8).
template <typename E>
__device__ __forceinline__ float LoadKv(const typename E::Storage* p, int64_t i,
                                        float scale);
template <>
__device__ __forceinline__ float LoadKv<F32Elem>(const float* p, int64_t i,
                                                 float) {
  return p[i];
}
template <>
__device__ __forceinline__ float LoadKv<Bf16Elem>(const uint16_t* p, int64_t i,
                                                  float) {
  return Bf16ToF32Dev(p[i]);
}
template <>
__device__ __forceinline__ float LoadKv<F16Elem>(const uint16_t* p, int64_t i,
                                                 float) {
  return F16ToF32Dev(p[i]);
}
template <>
__device__ __forceinline__ float LoadKv<Fp8Elem>(const uint8_t* p, int64_t i,
                                                 float scale) {
  return F8E4M3ToF32Dev(p[i]) * scale;
}

// Stores f32 `x` as element i of a KV page (fp8: of x * inv_scale).
template <typename E>
__device__ __forceinline__ void StoreKv(typename E::Storage* p, int64_t i,
                                        float x, float inv_scale);
template <>
__device__ __forceinline__ void StoreKv<F32Elem>(float* p, int64_t i, float x,
                                                 float) {
  p[i] = x;
}
template <>
__device__ __forceinline__ void StoreKv<Bf16Elem>(uint16_t* p, int64_t i,
                                                  float x, float) {
  p[i] = F32ToBf16Dev(x);
}
template <>
__device__ __forceinline__ void StoreKv<F16Elem>(uint16_t* p, int64_t i,
                                                 float x, float) {
  p[i] = F32ToF16Dev(x);
}
template <>
__device__ __forceinline__ void StoreKv<Fp8Elem>(uint8_t* p, int64_t i, float x,
                                                 float inv_scale) {
  p[i] = F32ToF8E4M3Dev(x * inv_scale);
}

// Unaligned little-endian f16 field of a packed quantized block.
__device__ __forceinline__ float BlockHalf(const uint8_t* p) {
  return F16ToF32Dev(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// Dequantizes element j (< 32) of one block (common/dtype.h layouts).
// kind: 3 q8_0, 4 q4_0, 5 q4_1 (the DType values).
template <int kKind>
__device__ __forceinline__ float DequantElem(const uint8_t* block, int j) {
  if constexpr (kKind == 3) {
    return BlockHalf(block) *
           static_cast<float>(static_cast<int8_t>(block[2 + j]));
  } else if constexpr (kKind == 4) {
    const uint8_t b = block[2 + (j & 15)];
    const int q = j < 16 ? (b & 15) : (b >> 4);
    return static_cast<float>(q - 8) * BlockHalf(block);
  } else {
    const uint8_t b = block[4 + (j & 15)];
    const int q = j < 16 ? (b & 15) : (b >> 4);
    return __fadd_rn(__fmul_rn(static_cast<float>(q), BlockHalf(block)),
                     BlockHalf(block + 2));
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  }
  return v;
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks of `threads` for a grid-stride loop over `count` elements, capped
// at 65535 * 16 (the loops stride over the rest).
inline unsigned GridFor(int64_t count, int threads = 256) {
  const int64_t b = CeilDiv(count, threads);
  return static_cast<unsigned>(b < 65535 * 16 ? b : 65535 * 16);
}

// Calls f(E{}) with the element type of KV dtype `dtype` (F32Elem,
// Bf16Elem, F16Elem or Fp8Elem); false for a dtype that is not a KV dtype.
template <typename F>
bool VisitKvElem(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32:
      f(F32Elem{});
      return true;
    case DType::kBF16:
      f(Bf16Elem{});
      return true;
    case DType::kF16:
      f(F16Elem{});
      return true;
    case DType::kF8E4M3:
      f(Fp8Elem{});
      return true;
    default:
      return false;
  }
}

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_CUDA_COMMON_CUH_
