// KV pool ops: typed writes, slot moves, packed row gather/scatter and the
// KV dtype conversions (kernels/ops.h).
#include <bit>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/internal.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

float HeadScale(const float* scales, int64_t head) {
  return scales == nullptr ? 1.0f : scales[head];
}

}  // namespace

// Vectorized for AVX-512 / AVX2 (+F16C) / baseline, chosen at load time.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3",
                             "default"))) void
KvToF32(const void* src, DType dtype, int64_t n, float scale, float* dst) {
  switch (dtype) {
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        dst[i] = std::bit_cast<float>(static_cast<uint32_t>(s[i]) << 16);
      }
      return;
    }
    case DType::kF16:
      if (internal::CpuHasF16c()) {
        internal::F16ToF32F16c(static_cast<const uint16_t*>(src), n, dst);
        return;
      }
      break;
    case DType::kF8E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      if (internal::CpuHasAvx2Fma()) {
        internal::F8E4M3ToF32Avx2(s, n, scale, dst);
        return;
      }
      for (int64_t i = 0; i < n; ++i) dst[i] = F8E4M3ToF32(s[i]) * scale;
      return;
    }
    default:
      LATENTKV_CHECK(IsKvDType(dtype),
                     "KvToF32: ", std::string(DTypeName(dtype)),
                     " is not a KV dtype");
      break;
  }
  // f32, and f16 without F16C: the common conversions.
  ConvertToF32(src, dtype, n, dst);
}

void KvFromF32(const float* src, int64_t n, DType dtype, float scale,
               void* dst) {
  if (dtype != DType::kF8E4M3) {
    LATENTKV_CHECK(IsKvDType(dtype),
                   "KvFromF32: ", std::string(DTypeName(dtype)),
                   " is not a KV dtype");
    ConvertFromF32(src, n, dtype, dst);
    return;
  }
  const float inv = 1.0f / scale;
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = F32ToF8E4M3(src[i] * inv);
}

void WriteKv(const float* k, const float* v, const int32_t* pos, int64_t n,
             const int64_t* slot, const KvPoolView& pool) {
  const int32_t nkv = pool.n_kv_heads, dqk = pool.d_qk, dvo = pool.d_vo;
  const int64_t e = DTypeSize(pool.dtype);
  auto* kp = static_cast<char*>(pool.k);
  auto* vp = static_cast<char*>(pool.v);
  for (int64_t t = 0; t < n; ++t) {
    for (int32_t h = 0; h < nkv; ++h) {
      const int64_t row = t * nkv + h;
      const int64_t s = slot[row];
      KvFromF32(k + row * dqk, dqk, pool.dtype, HeadScale(pool.k_scale, h),
                kp + s * dqk * e);
      KvFromF32(v + row * dvo, dvo, pool.dtype, HeadScale(pool.v_scale, h),
                vp + s * dvo * e);
      pool.pos[s] = pos[t];
    }
  }
}

void GatherKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                  void* rows) {
  const int64_t e = DTypeSize(pool.dtype);
  const int64_t kb = e * pool.d_qk, vb = e * pool.d_vo, rb = 4 + kb + vb;
  const auto* kp = static_cast<const char*>(pool.k);
  const auto* vp = static_cast<const char*>(pool.v);
  auto* out = static_cast<char*>(rows);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    char* r = out + i * rb;
    std::memcpy(r, pool.pos + s, 4);
    std::memcpy(r + 4, kp + s * kb, kb);
    std::memcpy(r + 4 + kb, vp + s * vb, vb);
  }
}

void ScatterKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                   const void* rows) {
  const int64_t e = DTypeSize(pool.dtype);
  const int64_t kb = e * pool.d_qk, vb = e * pool.d_vo, rb = 4 + kb + vb;
  auto* kp = static_cast<char*>(pool.k);
  auto* vp = static_cast<char*>(pool.v);
  const auto* in = static_cast<const char*>(rows);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    const char* r = in + i * rb;
    std::memcpy(pool.pos + s, r, 4);
    std::memcpy(kp + s * kb, r + 4, kb);
    std::memcpy(vp + s * vb, r + 4 + kb, vb);
  }
}

void MoveKvSlots(const KvPoolView& pool, const int64_t* src, const int64_t* dst,
                 int64_t n) {
  if (n <= 0) return;
  // Gather every source first, then scatter: the list may read a slot that
  // an earlier entry writes (in-place compaction).
  thread_local std::vector<char> staging;
  staging.resize(
      static_cast<size_t>(n * KvRowBytes(pool.dtype, pool.d_qk, pool.d_vo)));
  GatherKvRows(pool, src, n, staging.data());
  ScatterKvRows(pool, dst, n, staging.data());
}

}  // namespace latentkv::kernels
