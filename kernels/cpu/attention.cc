// Paged attention (online softmax over per-head page lists) over pools of
// any KV dtype (pages of other dtypes are converted to f32 one at a time).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_tiled.h"
#include "kernels/cpu/fast_exp.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// Per-thread buffers of one AttendOne call: the page's scores and, for
// non-f32 pools, the page's K and V converted to f32.
struct AttendScratch {
  std::vector<float> scores, k, v;
  void Size(const PagedAttentionArgs& a) {
    if (static_cast<int32_t>(scores.size()) < a.page_size) {
      scores.resize(a.page_size);
    }
    if (a.kv_dtype != DType::kF32) {
      k.resize(static_cast<size_t>(a.page_size) * a.d_qk);
      v.resize(static_cast<size_t>(a.page_size) * a.d_vo);
    }
  }
};

// Attention of one query row of one head over the page list
// kv_indices[p_begin, p_end) (the last page holds `last_len` slots).
// Writes out[d_vo]; zeros when no slot is visible.
// Built for AVX-512, AVX2 and baseline x86-64, chosen at load time.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3",
                             "default"))) void
AttendOne(const PagedAttentionArgs& a, int32_t kv_head, const float* q,
          int32_t q_pos, int32_t p_begin, int32_t p_end, int32_t last_len,
          float* out, AttendScratch* scratch) {
  float* scores = scratch->scores.data();
  const bool convert = a.kv_dtype != DType::kF32;
  const int64_t elem = DTypeSize(a.kv_dtype);
  const float k_scale = a.k_scale == nullptr ? 1.0f : a.k_scale[kv_head];
  const float v_scale = a.v_scale == nullptr ? 1.0f : a.v_scale[kv_head];
  const int32_t d_qk = a.d_qk;
  const int32_t d_vo = a.d_vo;
  const int32_t ps = a.page_size;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // Keys at positions <= oldest_hidden are outside the sliding window.
  const int64_t oldest_hidden =
      a.window > 0 ? int64_t{q_pos} - a.window : int64_t{INT32_MIN} - 1;
  float m = kNegInf;
  float l = 0.0f;
  std::memset(out, 0, sizeof(float) * d_vo);
  for (int32_t p = p_begin; p < p_end; ++p) {
    const int64_t page = a.kv_indices[p];
    const int32_t len = p == p_end - 1 ? std::clamp(last_len, 0, ps) : ps;
    const int32_t* pos = a.pos_pool + page * ps;
    const float* k;
    const float* v;
    if (convert) {
      KvToF32(static_cast<const char*>(a.k_pool) + page * ps * d_qk * elem,
              a.kv_dtype, int64_t{len} * d_qk, k_scale, scratch->k.data());
      KvToF32(static_cast<const char*>(a.v_pool) + page * ps * d_vo * elem,
              a.kv_dtype, int64_t{len} * d_vo, v_scale, scratch->v.data());
      k = scratch->k.data();
      v = scratch->v.data();
    } else {
      k = static_cast<const float*>(a.k_pool) + page * ps * d_qk;
      v = static_cast<const float*>(a.v_pool) + page * ps * d_vo;
    }
    float page_max = kNegInf;
    int32_t s = 0;
    // Four dot products per pass over q (masked afterwards).
    for (; s + 4 <= len; s += 4) {
      const float* k0 = k + static_cast<int64_t>(s) * d_qk;
      const float* k1 = k0 + d_qk;
      const float* k2 = k1 + d_qk;
      const float* k3 = k2 + d_qk;
      float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
      for (int32_t i = 0; i < d_qk; ++i) {
        d0 += q[i] * k0[i];
        d1 += q[i] * k1[i];
        d2 += q[i] * k2[i];
        d3 += q[i] * k3[i];
      }
      const float dots[4] = {d0, d1, d2, d3};
      for (int j = 0; j < 4; ++j) {
        scores[s + j] = pos[s + j] > q_pos || pos[s + j] <= oldest_hidden
                            ? kNegInf
                            : dots[j] * a.scale;
        page_max = std::max(page_max, scores[s + j]);
      }
    }
    for (; s < len; ++s) {
      if (pos[s] > q_pos || pos[s] <= oldest_hidden) {
        scores[s] = kNegInf;
        continue;
      }
      const float* ks = k + static_cast<int64_t>(s) * d_qk;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int32_t i = 0; i < d_qk; ++i) dot += q[i] * ks[i];
      scores[s] = dot * a.scale;
      page_max = std::max(page_max, scores[s]);
    }
    if (page_max == kNegInf) continue;  // nothing visible in this page
    if (page_max > m) {
      const float corr = std::exp(m - page_max);  // 0 when m == -inf
      l *= corr;
#pragma omp simd
      for (int32_t i = 0; i < d_vo; ++i) out[i] *= corr;
      m = page_max;
    }
    // Weights of the whole page at once (masked slots weigh 0).
#pragma omp simd
    for (int32_t s = 0; s < len; ++s) {
      const float w = internal::ExpNonPositive(scores[s] - m);
      scores[s] = scores[s] == kNegInf ? 0.0f : w;
    }
    // Four slots per pass over `out` (masked ones add 0 * finite values):
    // with head dims of 8-64 one slot per pass is bound by storing and
    // reloading `out`.
    s = 0;
    for (; s + 4 <= len; s += 4) {
      const float w0 = scores[s], w1 = scores[s + 1], w2 = scores[s + 2],
                  w3 = scores[s + 3];
      l += (w0 + w1) + (w2 + w3);
      const float* v0 = v + static_cast<int64_t>(s) * d_vo;
      const float* v1 = v0 + d_vo;
      const float* v2 = v1 + d_vo;
      const float* v3 = v2 + d_vo;
#pragma omp simd
      for (int32_t i = 0; i < d_vo; ++i) {
        out[i] += (w0 * v0[i] + w1 * v1[i]) + (w2 * v2[i] + w3 * v3[i]);
      }
    }
    for (; s < len; ++s) {
      const float w = scores[s];
      if (w == 0.0f) continue;
      l += w;
      const float* vs = v + static_cast<int64_t>(s) * d_vo;
#pragma omp simd
      for (int32_t i = 0; i < d_vo; ++i) out[i] += w * vs[i];
    }
  }
  if (l > 0.0f) {
    const float inv = 1.0f / l;
#pragma omp simd
    for (int32_t i = 0; i < d_vo; ++i) out[i] *= inv;
  }
}

// PagedAttention by tiles (attention_tiled.h): one task per (sequence, KV
// head, block of query rows), the costliest (last rows, most pages) first.
void PagedAttentionTiled(const PagedAttentionArgs& a, int32_t group,
                         int64_t work) {
  struct Task {
    int32_t seq, kvh;
    int64_t t0, t1;
  };
  const int64_t block = internal::TiledAttentionRows(group);
  std::vector<Task> tasks;
  for (int32_t s = 0; s < a.num_seqs; ++s) {
    for (int64_t t0 = a.q_indptr[s]; t0 < a.q_indptr[s + 1]; t0 += block) {
      const int64_t t1 = std::min<int64_t>(t0 + block, a.q_indptr[s + 1]);
      for (int32_t h = 0; h < a.n_kv_heads; ++h)
        tasks.push_back({s, h, t0, t1});
    }
  }
  const int64_t n = static_cast<int64_t>(tasks.size());
  auto run = [&](int64_t i, internal::TiledAttentionScratch* scratch) {
    const Task& t = tasks[n - 1 - i];
    const int64_t idx = static_cast<int64_t>(t.seq) * a.n_kv_heads + t.kvh;
    internal::AttendTileAvx2(a, t.kvh, t.t0, t.t1, a.kv_indptr[idx],
                             a.kv_indptr[idx + 1], a.kv_last_page_len[idx],
                             scratch);
  };
  if (work < internal::kParallelMinWork || n < 2 || omp_in_parallel() ||
      omp_get_max_threads() < 2) {
    thread_local internal::TiledAttentionScratch scratch;
    for (int64_t i = 0; i < n; ++i) run(i, &scratch);
    return;
  }
#pragma omp parallel
  {
    thread_local internal::TiledAttentionScratch scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) run(i, &scratch);
  }
}

}  // namespace

namespace internal {

bool TiledAttentionApplies(const PagedAttentionArgs& a) {
  return a.d_qk % 8 == 0 && a.d_vo % 8 == 0 && a.page_size > 0 &&
         CpuHasAvx2Fma();
}

int64_t TiledAttentionRows(int32_t group) {
  return std::clamp<int64_t>((24 + group - 1) / std::max(group, 1), 1, 16);
}

}  // namespace internal

void PagedAttention(const PagedAttentionArgs& a) {
  if (a.num_seqs <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0) return;
  const int64_t total_q = a.q_indptr[a.num_seqs];
  if (total_q <= 0) return;
  const int32_t group = std::max(1, a.n_heads / a.n_kv_heads);

  // Work estimate: visited slots x (d_qk + d_vo), summed over query rows.
  int64_t work = 0;
  for (int32_t s = 0; s < a.num_seqs; ++s) {
    const int64_t rows = a.q_indptr[s + 1] - a.q_indptr[s];
    const int64_t pages =
        a.kv_indptr[(s + 1) * a.n_kv_heads] - a.kv_indptr[s * a.n_kv_heads];
    work += rows * pages * group * a.page_size * (a.d_qk + a.d_vo);
  }

  if (internal::TiledAttentionApplies(a)) {
    PagedAttentionTiled(a, group, work);
    return;
  }
  const int64_t tasks = total_q * a.n_heads;
  auto run = [&](int64_t task, AttendScratch* scratch) {
    const int64_t t = task / a.n_heads;
    const int32_t h = static_cast<int32_t>(task % a.n_heads);
    // Sequence of row t: last s with q_indptr[s] <= t.
    const int32_t seq = static_cast<int32_t>(
        std::upper_bound(a.q_indptr, a.q_indptr + a.num_seqs + 1, t) -
        a.q_indptr - 1);
    const int32_t kvh = std::min(h / group, a.n_kv_heads - 1);
    const int64_t idx = static_cast<int64_t>(seq) * a.n_kv_heads + kvh;
    AttendOne(a, kvh, a.q + (t * a.n_heads + h) * a.d_qk, a.q_pos[t],
              a.kv_indptr[idx], a.kv_indptr[idx + 1], a.kv_last_page_len[idx],
              a.out + (t * a.n_heads + h) * a.d_vo, scratch);
  };

  if (work < internal::kParallelMinWork || tasks < 2 || omp_in_parallel() ||
      omp_get_max_threads() < 2) {
    thread_local AttendScratch scratch;
    scratch.Size(a);
    for (int64_t task = 0; task < tasks; ++task) run(task, &scratch);
    return;
  }
#pragma omp parallel
  {
    AttendScratch scratch;
    scratch.Size(a);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) run(task, &scratch);
  }
}

}  // namespace latentkv::kernels
