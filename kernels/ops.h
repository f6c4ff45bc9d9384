// CPU compute kernels of the latentkv engine.
//
// These are the reference (and the fast CPU) implementations of every op the
// model forward needs. They work on raw host pointers with the shapes written
// beside each argument; they know nothing about models, caches or gRPC.
// Row-major everywhere. Thread-safety: every function is reentrant; functions
// may use OpenMP/OpenBLAS threads internally.
#ifndef LATENTKV_KERNELS_OPS_H_
#define LATENTKV_KERNELS_OPS_H_

#include <cstdint>

#include "common/dtype.h"

namespace latentkv::kernels {

using ::latentkv::DType;

// How a weight matrix W [rows, cols] lies in memory.
enum class WeightLayout : uint8_t {
  // W[r, c] at element r * cols + c.
  kRowMajor = 0,
  // Panels of 16 rows (PackWeights): panel p = r / 16 starts at element
  // p * cols * 16 and holds, for each column c, the 16 values of its rows
  // W[16p .. 16p + 15, c] contiguously (zero past `rows`). f32 in row order;
  // bf16 in the order 0-3, 8-11, 4-7, 12-15 (what AVX2's per-lane unpacks
  // turn into rows 0-7 and 8-15). Only f32 and bf16.
  kPanels16 = 1,
};

// A weight matrix W [rows, cols] (rows = output features, cols = input
// features) in `dtype` and `layout`. Not owning. Block-quantized dtypes (q8_0,
// q4_0, q4_1, q5_0, q5_1, q2_K .. q6_K; common/dtype.h) are row-major only,
// cols a multiple of DTypeBlockElems (32; 256 for the k-quants), row r at
// byte r * DTypeRowBytes(dtype, cols).
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  WeightLayout layout = WeightLayout::kRowMajor;
};

// True when MatMul is faster on panels than on row-major weights of `dtype`
// on this CPU: AVX2 + FMA without AVX-512 (whose kernels read rows), f32 or
// bf16 (bench/RESULTS.md has the measurements). False for f16 and the
// quantized dtypes, which have no panel layout.
bool PrefersPanels(DType dtype);

// Bytes of w's matrix in the kPanels16 layout (rows rounded up to 16).
int64_t PanelBytes(const WeightView& w);

// Copies row-major f32 or bf16 `w` into `dst` (PanelBytes(w) bytes, 32-byte
// aligned) as panels and returns the view of the copy. Every op taking a
// WeightView accepts either layout with the same results.
WeightView PackPanels(const WeightView& w, void* dst);

// y[n, w.rows] = x[n, w.cols] * W^T. Panels: the AVX2 panel kernels
// (kernels/cpu/gemm_avx2.h) at every n, else a portable loop. Row-major f32
// weights: our streaming kernels at decode sizes (AVX-512: n == 1; AVX2 +
// FMA: n <= 16), OpenBLAS sgemm otherwise. bf16 weights: the AVX-512 BF16
// kernels, else the AVX2 kernels (n <= 64; conversion + sgemm beyond), else a
// portable loop. f16 weights: conversion + sgemm. Quantized weights (q8_0,
// q4_0, q4_1, q5_0, q5_1 and the k-quants q2_K .. q6_K; x stays f32, the
// result is the f32 product with the exact dequantized weights) on AVX2 +
// FMA + F16C CPUs: n = 1 a fused dequantize-and-dot kernel reading each row
// once, several row streams per thread; 2 <= n < 48 tiles of rows
// dequantized into L2 and multiplied by the f32 rows kernel; larger n the
// tiles dequantized into panels for the panel micro-kernel; other CPUs a
// portable loop (kernels/cpu/quant.h, quant_k.h).
// (kernels/cpu/internal.h has the measured reasons.) Threads: OpenMP over
// output rows once n * rows * cols
// >= 2^18 (smaller products stay on the calling thread). On first use OpenBLAS
// is set to one thread (process-wide) so its pool does not fight the OpenMP
// team.
// How MatMul multiplies f32 activations with block-quantized weights.
enum class ActivationQuant {
  // Exact: f32 activations against the dequantized weights (the result is
  // the f32 product with ConvertToF32(W)).
  kF32,
  // Each input row quantized per block of 32 to int8 with an f32 scale
  // (round to nearest, scale = max|x| / 127), integer dot products with
  // the weights' integer values, f32 block scales: faster prefill and
  // batches, with the error bound of kernels/cpu/quant_q8.h. Only where
  // the AVX2 int8 kernels apply (inputs >= MatMulOptions::q8_min_inputs,
  // AVX2 CPUs); other products stay exact.
  kQ8,
};
struct MatMulOptions {
  ActivationQuant activations = ActivationQuant::kF32;
  // kQ8: products with fewer inputs keep the exact path (one-input decode
  // is faster in the fused f32 kernels). 1 quantizes every product, as
  // llama.cpp does (how docs/QUALITY.md measures the perplexity cost).
  int64_t q8_min_inputs = 2;
};

void MatMul(const float* x, int64_t n, const WeightView& w, float* y,
            const MatMulOptions& options = {});

// ys[i][n, ws[i].rows] = x[n, cols] * ws[i]^T for i < count: several
// products of the same input (Q/K/V, gate/up) in one parallel region, which
// saves the threads' sleep/wake between them (f32, bf16 and quantized
// groups of one dtype and cols). Same results as MatMul.
void MatMulGroup(const float* x, int64_t n, const WeightView* ws,
                 float* const* ys, int count,
                 const MatMulOptions& options = {});

// Per-head linear maps: y[t, h, :] = maps[h] x[t, h, :] for t < n, h <
// heads, with x [n, heads, din], maps [heads, dout, din] (row-major, head h's
// [dout, din] matrix at h * dout * din) and y [n, heads, dout]. Used after
// the q/k norms of a KV-Latent model whose norms act on the source head
// (ModelConfig::qk_norm_dim). Each output is the f32 product MatMul gives
// (the heads go through MatMul one at a time). y must not overlap x.
void MapHeads(const float* x, int64_t n, int64_t heads, int64_t din,
              const float* maps, int64_t dout, float* y);

// y[n, dim] = x[n, dim] / sqrt(mean(x^2) + eps) * weight[dim]. y may alias x.
void RmsNorm(const float* x, const float* weight, int64_t n, int64_t dim,
             float eps, float* y);

// Rotary embedding on the first `rope_dims` channels of each head (partial
// RoPE, HF's partial_rotary_factor layout), rotate-half pairing within them:
// channel j (j < rope_dims/2) pairs with channel j + rope_dims/2 and is
// rotated by angle positions[t] * inv_freq[j]; channels [rope_dims, d) are
// position-free and left unchanged.
// x: [n, heads, d] in place; positions: [n]; inv_freq: [rope_dims/2].
// 0 <= rope_dims <= d, rope_dims even.
void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d, int64_t rope_dims,
               const int32_t* positions, const float* inv_freq);

// A layer's rotary table as the engine's callers pass it around: the rotated
// channel count and its inverse frequencies [dims / 2] (host or device memory,
// as the caller's backend needs).
struct RopeTable {
  const float* inv_freq = nullptr;
  int64_t dims = 0;
};

// out[i] = silu(gate[i]) * up[i] for i < n. out may alias gate.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);

// out[i] = gelu_tanh(gate[i]) * up[i] for i < n (GeGLU with PyTorch's tanh
// approximation: gelu_tanh(g) = g/2 * (1 + tanh(sqrt(2/pi) * (g + 0.044715
// g^3)))). out may alias gate.
void GeluTanhGlu(const float* gate, const float* up, int64_t n, float* out);

// y[i] += x[i] for i < n.
void AddInPlace(float* y, const float* x, int64_t n);

// y[t, i] += bias[i] for t < n, i < dim (projection biases).
void AddRowBias(float* y, const float* bias, int64_t n, int64_t dim);

// x[i] *= s for i < n.
void Scale(float* x, int64_t n, float s);

// out[r] = the index of the largest value of row r of x [rows, cols]: the
// lowest index on ties, NaN never chosen, 0 when no value exceeds -inf
// (the greedy choice of worker/engine/sampler.h, bit for bit).
void ArgmaxRows(const float* x, int64_t rows, int64_t cols, int32_t* out);

// out[i, :] = x[rows[i], :] for i < n; x: [*, dim], rows: [n]. out must not
// overlap x.
void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t n,
                float* out);

// Embedding lookup: out[t, :] = table[tokens[t], :] converted to f32.
// table: [vocab, dim] in `table.dtype` (table.rows = vocab, table.cols = dim),
// any dtype: quantized rows are dequantized (dim a multiple of 32).
void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
           float* out);

// Standard RoPE inverse frequencies: inv_freq[j] = base^(-2j/d), j < d/2.
void RopeInvFreqStandard(int64_t d, double base, float* inv_freq);

// KV-Latent frequency-aware table: with e = concat(arange(d/4, 3d/4, 2),
// arange(3d/4, d, 1)) / d, inv_freq[j] = base^(-e[j]), j < d/2. d must be a
// multiple of 4.
void RopeInvFreqFrequencyAware(int64_t d, double base, float* inv_freq);

// One layer's KV pool (backend memory): pages of `page_size` token slots of
// one KV head each. K [num_pages, page_size, d_qk] and V [num_pages,
// page_size, d_vo] in `dtype` (f32, bf16, f16 or fp8_e4m3), the absolute
// position of every slot in pos [num_pages, page_size] (int32). A flat slot
// id is page * page_size + offset. fp8 stores fp8(x / scale[h]) for a slot
// of KV head h (k_scale / v_scale: [n_kv_heads], unused for other dtypes);
// bf16 and f16 round to nearest even.
struct KvPoolView {
  DType dtype = DType::kF32;
  int32_t page_size = 0;
  int32_t n_kv_heads = 0;
  int32_t d_qk = 0;
  int32_t d_vo = 0;
  void* k = nullptr;
  void* v = nullptr;
  int32_t* pos = nullptr;
  const float* k_scale = nullptr;  // [n_kv_heads], fp8 only
  const float* v_scale = nullptr;  // [n_kv_heads], fp8 only
};

// Paged attention over per-(sequence, kv head) page lists, FlashInfer-style
// ragged description, over one layer's pool (KvPoolView; any KV dtype, read
// as f32 values times the head's scale). A query at position p attends to
// every cached slot of its sequence whose position is <= p (causal by
// position, so eviction of arbitrary tokens keeps the mask right). GQA: query
// head h reads KV head h / (n_heads / n_kv_heads).
struct PagedAttentionArgs {
  int32_t num_seqs = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t d_qk = 0;
  int32_t d_vo = 0;
  int32_t page_size = 0;
  float scale = 1.0f;  // usually 1/sqrt(d_qk)
  // Sliding window: 0 for full causal attention; W > 0 hides keys at
  // positions <= q_pos - W (a query sees (q_pos - W, q_pos]).
  int32_t window = 0;
  const int32_t* q_indptr = nullptr;    // [num_seqs + 1] query rows per seq
  const float* q = nullptr;             // [total_q, n_heads, d_qk] (roped)
  const int32_t* q_pos = nullptr;       // [total_q] absolute query positions
  const int32_t* kv_indptr = nullptr;   // [num_seqs * n_kv_heads + 1]
  const int32_t* kv_indices = nullptr;  // [kv_indptr[last]] page ids
  const int32_t* kv_last_page_len = nullptr;  // [num_seqs * n_kv_heads]
  DType kv_dtype = DType::kF32;               // of k_pool and v_pool
  const void* k_pool = nullptr;               // [num_pages, page_size, d_qk]
  const void* v_pool = nullptr;               // [num_pages, page_size, d_vo]
  const int32_t* pos_pool = nullptr;          // [num_pages, page_size]
  const float* k_scale = nullptr;             // [n_kv_heads], fp8 only
  const float* v_scale = nullptr;             // [n_kv_heads], fp8 only
  float* out = nullptr;                       // [total_q, n_heads, d_vo]
  // Host-side hints of the launch size, known to the caller's step plan:
  // total_q == q_indptr[num_seqs], max_q_rows >= the query rows of every
  // sequence, max_pages >= the pages of every (sequence, KV head) list. A
  // device backend sizes its grid from them instead of reading the index
  // arrays back (a synchronizing copy); 0 means unknown (then it does read
  // them). The CPU ignores them.
  int32_t total_q = 0;
  int32_t max_q_rows = 0;
  int32_t max_pages = 0;

  // Sets the pool fields (and page_size, n_kv_heads, d_qk, d_vo) from `p`.
  void SetPool(const KvPoolView& p) {
    page_size = p.page_size;
    n_kv_heads = p.n_kv_heads;
    d_qk = p.d_qk;
    d_vo = p.d_vo;
    kv_dtype = p.dtype;
    k_pool = p.k;
    v_pool = p.v;
    pos_pool = p.pos;
    k_scale = p.k_scale;
    v_scale = p.v_scale;
  }
};
void PagedAttention(const PagedAttentionArgs& a);

// Writes token rows into pool slots, converting to the pool's dtype.
// slot[t * n_kv_heads + h] is the flat slot of token t, KV head h.
// k: [n, n_kv_heads, d_qk]; v: [n, n_kv_heads, d_vo]; pos: [n].
void WriteKv(const float* k, const float* v, const int32_t* pos, int64_t n,
             const int64_t* slot, const KvPoolView& pool);

// Moves slot rows (K, V and position) within one pool: src[i] -> dst[i] for
// i < n, as if every source were read before any destination is written
// (compaction after eviction and copy-on-write are one list). Destinations
// are distinct; a source and its destination belong to the same KV head.
void MoveKvSlots(const KvPoolView& pool, const int64_t* src, const int64_t* dst,
                 int64_t n);

// Packs the rows of `n` slots, as stored (no conversion):
// rows [n, KvRowBytes(pool.dtype, d_qk, d_vo)] (common/dtype.h) = int32
// position, K, V.
void GatherKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                  void* rows);
// The inverse: writes packed rows into slots.
void ScatterKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                   const void* rows);

// Converts n values stored in a KV dtype (fp8 times `scale`) to f32.
void KvToF32(const void* src, DType dtype, int64_t n, float scale, float* dst);
// Converts n f32 values to a KV dtype (fp8: of x / scale, saturating).
void KvFromF32(const float* src, int64_t n, DType dtype, float scale,
               void* dst);

// SnapKV attention-mass scores of one (sequence, layer, KV head)'s cached
// slots. q: [n_w, group, d_qk] the roped window queries of the `group` query
// heads reading this KV head, at positions q_pos [n_w]; k: [n, d_qk] the
// head's roped cached keys at positions k_pos [n]. For each query head g and
// window row w: softmax over the slots visible to it (k_pos <= q_pos[w]) of
// scale * q.k; scores[g, s] = sum over w of that probability (0 where never
// visible). scores: [group, n]. Accumulates in double.
void WindowAttentionScores(const float* q, const int32_t* q_pos, int64_t n_w,
                           int32_t group, const float* k, const int32_t* k_pos,
                           int64_t n, int32_t d_qk, float scale, float* scores);

// WindowAttentionScores over keys read from a KV pool: the `n` slots
// `slots` [n] of KV head `head` (K converted to f32 with the head's scale);
// also writes their positions to k_pos [n]. scores: [group, n].
void WindowScoresFromPool(const KvPoolView& pool, int32_t head,
                          const int64_t* slots, int64_t n, const float* q,
                          const int32_t* q_pos, int64_t n_w, int32_t group,
                          float scale, float* scores, int32_t* k_pos);

// Measures streaming read bandwidth (bytes/s) of this machine with `threads`
// threads over a buffer of `bytes`; used by benchmarks for the roofline.
double MeasureReadBandwidth(int64_t bytes, int threads);

// Measures this machine's f32 multiply-add peak (FLOP/s, one FMA = 2) with
// `threads` threads on the widest vectors the CPU kernels use (AVX2 FMA; 0
// on CPUs without it): the compute roofline of the benchmarks.
double MeasureComputePeak(int threads);

}  // namespace latentkv::kernels

#endif  // LATENTKV_KERNELS_OPS_H_
