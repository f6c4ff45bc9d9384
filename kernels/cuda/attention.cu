// Latent paged attention (attention.cuh).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace latentkv::kernels::cuda {
namespace {

struct AttnParams {
  int32_t n_heads, n_kv_heads, d_qk, d_vo, page_size;
  int32_t group, rows_per_tile, lanes, q_tiles, chunk, splits;
  float scale;
  int32_t window;  // 0: full causal; else keys at pos <= q_pos - window hidden
  const int32_t* q_indptr;
  const float* q;
  const int32_t* q_pos;
  const int32_t* kv_indptr;
  const int32_t* kv_indices;
  const int32_t* kv_last;
  const void* k_pool;
  const void* v_pool;
  const int32_t* pos_pool;
  const float* k_scale;
  const float* v_scale;
  float* out;       // [total_q, n_heads, d_vo] when splits == 1
  float* partials;  // [total_q, n_heads, splits, d_vo + 2] otherwise
};

constexpr float kNegInf = -INFINITY;

template <typename E>
__global__ void PagedAttentionKernel(AttnParams p) {
  using T = typename E::Storage;
  extern __shared__ float smem[];
  const int32_t lanes = p.lanes, chunk = p.chunk;
  const int32_t dqk = p.d_qk, dvo = p.d_vo;
  // Rows of k_s and p_s are padded by one float: the score loop's threads
  // read different slots' keys at the same column, and the softmax's
  // threads different lanes' scores at the same slot (no bank conflicts).
  const int32_t kst = dqk + 1, pst = chunk + 1;
  float* q_s = smem;                 // [lanes, dqk]
  float* acc_s = q_s + lanes * dqk;  // [lanes, dvo]
  float* k_s = acc_s + lanes * dvo;  // [chunk, dqk + 1]
  float* v_s = k_s + chunk * kst;    // [chunk, dvo]
  float* p_s = v_s + chunk * dvo;    // [lanes, chunk + 1]
  float* m_s = p_s + lanes * pst;    // [lanes]
  float* l_s = m_s + lanes;          // [lanes]
  float* c_s = l_s + lanes;          // [lanes] rescale of this step
  int32_t* kpos_s = reinterpret_cast<int32_t*>(c_s + lanes);  // [chunk]
  int32_t* qpos_s = kpos_s + chunk;                           // [lanes]

  const int64_t bx = blockIdx.x;
  const int32_t tile = static_cast<int32_t>(bx % p.q_tiles);
  const int64_t seq_head = bx / p.q_tiles;
  const int32_t kvh = static_cast<int32_t>(seq_head % p.n_kv_heads);
  const int64_t seq = seq_head / p.n_kv_heads;
  const int32_t split = blockIdx.y;
  const int32_t row_begin = p.q_indptr[seq];
  const int32_t rows = p.q_indptr[seq + 1] - row_begin;
  const int32_t r0 = tile * p.rows_per_tile;
  if (r0 >= rows) return;  // the whole block leaves
  const int32_t nrows = min(p.rows_per_tile, rows - r0);
  const int32_t active = nrows * p.group;
  const int tid = threadIdx.x, nt = blockDim.x;

  for (int32_t i = tid; i < active * dqk; i += nt) {
    const int32_t lane = i / dqk, d = i % dqk;
    const int64_t t = row_begin + r0 + lane / p.group;
    const int32_t h = kvh * p.group + lane % p.group;
    q_s[i] = p.q[(t * p.n_heads + h) * dqk + d];
  }
  for (int32_t i = tid; i < active * dvo; i += nt) acc_s[i] = 0.0f;
  for (int32_t i = tid; i < active; i += nt) {
    m_s[i] = kNegInf;
    l_s[i] = 0.0f;
    qpos_s[i] = p.q_pos[row_begin + r0 + i / p.group];
  }

  const int64_t list = seq * p.n_kv_heads + kvh;
  const int32_t pb = p.kv_indptr[list], pe = p.kv_indptr[list + 1];
  const PageRange range = SplitPages(pe - pb, p.splits, split);
  const int32_t sb = pb + range.begin, se = pb + range.end;
  const int32_t ps = p.page_size;
  const float ks = p.k_scale == nullptr ? 1.0f : p.k_scale[kvh];
  const float vs = p.v_scale == nullptr ? 1.0f : p.v_scale[kvh];
  const T* kp = static_cast<const T*>(p.k_pool);
  const T* vp = static_cast<const T*>(p.v_pool);

  for (int32_t pg = sb; pg < se; ++pg) {
    const int64_t page = p.kv_indices[pg];
    const int32_t len = pg == pe - 1 ? max(0, min(p.kv_last[list], ps)) : ps;
    for (int32_t c0 = 0; c0 < len; c0 += chunk) {
      const int32_t cl = min(chunk, len - c0);
      const int64_t slot0 = page * ps + c0;
      __syncthreads();  // the previous chunk is consumed
      for (int32_t i = tid; i < cl * dqk; i += nt) {
        k_s[(i / dqk) * kst + i % dqk] = LoadKv<E>(kp + slot0 * dqk, i, ks);
      }
      for (int32_t i = tid; i < cl * dvo; i += nt) {
        v_s[i] = LoadKv<E>(vp + slot0 * dvo, i, vs);
      }
      for (int32_t i = tid; i < cl; i += nt) kpos_s[i] = p.pos_pool[slot0 + i];
      __syncthreads();
      // Scores of every (lane, slot); masked slots are -inf.
      for (int32_t i = tid; i < active * cl; i += nt) {
        const int32_t lane = i / cl, s = i % cl;
        float v = kNegInf;
        const int32_t qp = qpos_s[lane];
        if (kpos_s[s] <= qp &&
            (p.window <= 0 || int64_t{kpos_s[s]} > int64_t{qp} - p.window)) {
          const float* qr = q_s + lane * dqk;
          const float* kr = k_s + s * kst;
          float dot = 0.0f;
          for (int32_t d = 0; d < dqk; ++d) dot = fmaf(qr[d], kr[d], dot);
          v = dot * p.scale;
        }
        p_s[lane * pst + s] = v;
      }
      __syncthreads();
      // Online softmax per lane: new max, rescale, weights of this chunk.
      for (int32_t lane = tid; lane < active; lane += nt) {
        float* pr = p_s + lane * pst;
        float mx = kNegInf;
        for (int32_t s = 0; s < cl; ++s) mx = fmaxf(mx, pr[s]);
        const float m_old = m_s[lane];
        const float m_new = fmaxf(m_old, mx);
        float corr = 1.0f, sum = 0.0f;
        if (m_new != kNegInf) {
          corr = m_old == kNegInf ? 0.0f : __expf(m_old - m_new);
          for (int32_t s = 0; s < cl; ++s) {
            const float w = pr[s] == kNegInf ? 0.0f : __expf(pr[s] - m_new);
            pr[s] = w;
            sum += w;
          }
        } else {
          for (int32_t s = 0; s < cl; ++s) pr[s] = 0.0f;
        }
        l_s[lane] = l_s[lane] * corr + sum;
        m_s[lane] = m_new;
        c_s[lane] = corr;
      }
      __syncthreads();
      for (int32_t i = tid; i < active * dvo; i += nt) {
        const int32_t lane = i / dvo, d = i % dvo;
        const float* pr = p_s + lane * pst;
        float a = acc_s[i] * c_s[lane];
        for (int32_t s = 0; s < cl; ++s) a = fmaf(pr[s], v_s[s * dvo + d], a);
        acc_s[i] = a;
      }
    }
  }
  __syncthreads();
  if (p.splits == 1) {
    for (int32_t i = tid; i < active * dvo; i += nt) {
      const int32_t lane = i / dvo, d = i % dvo;
      const int64_t t = row_begin + r0 + lane / p.group;
      const int32_t h = kvh * p.group + lane % p.group;
      const float l = l_s[lane];
      p.out[(t * p.n_heads + h) * dvo + d] = l > 0.0f ? acc_s[i] / l : 0.0f;
    }
    return;
  }
  const int32_t stride = dvo + 2;
  for (int32_t i = tid; i < active * stride; i += nt) {
    const int32_t lane = i / stride, d = i % stride;
    const int64_t t = row_begin + r0 + lane / p.group;
    const int32_t h = kvh * p.group + lane % p.group;
    float* dst = p.partials + ((t * p.n_heads + h) * p.splits + split) * stride;
    dst[d] = d < dvo ? acc_s[lane * dvo + d] : d == dvo ? m_s[lane] : l_s[lane];
  }
}

// One block per (row, head): merges the splits' partials.
__global__ void MergeSplitsKernel(const float* partials, int32_t splits,
                                  int32_t dvo, float* out) {
  const int64_t rh = blockIdx.x;
  const int32_t stride = dvo + 2;
  const float* part = partials + rh * splits * stride;
  float m = kNegInf;
  for (int32_t s = 0; s < splits; ++s) m = fmaxf(m, part[s * stride + dvo]);
  float l = 0.0f;
  if (m != kNegInf) {
    for (int32_t s = 0; s < splits; ++s) {
      const float ms = part[s * stride + dvo];
      if (ms != kNegInf) l += part[s * stride + dvo + 1] * __expf(ms - m);
    }
  }
  for (int32_t d = threadIdx.x; d < dvo; d += blockDim.x) {
    float a = 0.0f;
    if (l > 0.0f) {
      for (int32_t s = 0; s < splits; ++s) {
        const float ms = part[s * stride + dvo];
        if (ms != kNegInf) a += part[s * stride + d] * __expf(ms - m);
      }
      a /= l;
    }
    out[rh * dvo + d] = a;
  }
}

template <typename E>
cudaError_t LaunchTyped(const AttnParams& p, const AttentionLaunch& l,
                        cudaStream_t stream) {
  if (l.smem_bytes > (48 << 10)) {
    // Above 48 KiB a kernel must opt in (per device; a cheap host call).
    const cudaError_t e = cudaFuncSetAttribute(
        PagedAttentionKernel<E>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(l.smem_bytes));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(l.grid_x),
                  static_cast<unsigned>(l.splits));
  PagedAttentionKernel<E><<<grid, l.threads, l.smem_bytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

std::string AttentionRunner::Run(const PagedAttentionArgs& a,
                                 const DeviceLimits& limits,
                                 cudaStream_t stream) {
  if (a.num_seqs <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0) return "";
  AttentionShape shape{a.num_seqs,  a.n_heads, a.n_kv_heads, a.d_qk,     a.d_vo,
                       a.page_size, a.total_q, a.max_q_rows, a.max_pages};
  if (shape.total_q <= 0 || shape.max_q_rows <= 0 || shape.max_pages <= 0) {
    // No hints: read the index arrays back.
    std::vector<int32_t> qi(a.num_seqs + 1);
    std::vector<int32_t> ki(int64_t{a.num_seqs} * a.n_kv_heads + 1);
    cudaError_t e = cudaMemcpyAsync(qi.data(), a.q_indptr, qi.size() * 4,
                                    cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) {
      e = cudaMemcpyAsync(ki.data(), a.kv_indptr, ki.size() * 4,
                          cudaMemcpyDeviceToHost, stream);
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) {
      return std::string("reading the index arrays back: ") +
             cudaGetErrorString(e);
    }
    shape.total_q = qi.back();
    shape.max_q_rows = 0;
    for (int32_t s = 0; s < a.num_seqs; ++s) {
      shape.max_q_rows = std::max(shape.max_q_rows, qi[s + 1] - qi[s]);
    }
    shape.max_pages = 0;
    for (size_t i = 0; i + 1 < ki.size(); ++i) {
      shape.max_pages = std::max(shape.max_pages, ki[i + 1] - ki[i]);
    }
  }
  if (shape.total_q <= 0) return "";
  const AttentionPlan plan = PlanAttention(shape, limits);
  if (!plan.error.empty()) return "PagedAttention: " + plan.error;
  const AttentionLaunch& l = plan.launch;
  AttnParams p{a.n_heads,
               a.n_kv_heads,
               a.d_qk,
               a.d_vo,
               a.page_size,
               l.group,
               l.rows_per_tile,
               l.lanes,
               l.q_tiles,
               l.chunk,
               l.splits,
               a.scale,
               a.window,
               a.q_indptr,
               a.q,
               a.q_pos,
               a.kv_indptr,
               a.kv_indices,
               a.kv_last_page_len,
               a.k_pool,
               a.v_pool,
               a.pos_pool,
               a.k_scale,
               a.v_scale,
               a.out,
               nullptr};
  if (l.splits > 1) {
    p.partials = static_cast<float*>(
        partials_.Get(l.partial_floats * int64_t{sizeof(float)}, stream));
    if (p.partials == nullptr) {
      return "PagedAttention: out of device memory for split partials";
    }
  }
  cudaError_t e = cudaSuccess;
  if (!VisitKvElem(a.kv_dtype, [&](auto elem) {
        e = LaunchTyped<decltype(elem)>(p, l, stream);
      })) {
    return "PagedAttention: not a KV dtype";
  }
  if (e != cudaSuccess)
    return std::string("PagedAttention: ") + cudaGetErrorString(e);
  if (l.splits > 1) {
    const int64_t rh = int64_t{shape.total_q} * a.n_heads;
    MergeSplitsKernel<<<static_cast<unsigned>(rh), 64, 0, stream>>>(
        p.partials, l.splits, a.d_vo, a.out);
    e = cudaGetLastError();
    if (e != cudaSuccess)
      return std::string("MergeSplits: ") + cudaGetErrorString(e);
  }
  return "";
}

}  // namespace latentkv::kernels::cuda
