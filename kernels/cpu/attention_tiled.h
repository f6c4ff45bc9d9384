// Tiled paged attention for AVX2 + FMA CPUs (PagedAttention, ops.h, takes
// it when it applies). Internal to the CPU kernels.
//
// Why tiles: one query row at a time (attention.cc's AttendOne) reads every
// K and V page once per row and per query head, and computes the dot
// products of causally hidden keys before masking them. In a prefill chunk
// (rows t0..t1 of one sequence) and under GQA (group query heads per KV
// head) those rows and heads share the same pages: a tile takes
// rows x group query vectors (M of them) of one KV head, and per page
//   - scores blocks of up to 4 queries x 2 slots (2 x 4, 1 x 8 for
//     fewer rows) as 8 vector accumulators over d_qk, each K row loaded
//     once per block, then reduced 8 at a time by one hadd tree;
//   - masks (causal, sliding window, past the page's length), updates each
//     row's online softmax (running max, sum) and weights;
//   - adds weights x V into the rows' outputs, 3 rows x 32 dims at a time;
// pages no row of the tile can see (all their keys in the rows' future or
// out of their windows) are skipped without a product.
//
// Each (row, head)'s arithmetic is the same whatever tile holds it: its
// scores sum 8 lanes over d_qk in order and then the lanes by one fixed
// tree, its outputs sum over slots in order, and a page
// it cannot see changes nothing. So results do not depend on how prefill is
// chunked or how many sequences share a step (the engine's tests rely on
// that), though they differ from AttendOne's by f32 rounding.
//
// attention_tiled_avx2.cc, built with -mavx2 -mfma; call only when
// TiledAttentionApplies. This header must stay free of intrinsics.
#ifndef LATENTKV_KERNELS_CPU_ATTENTION_TILED_H_
#define LATENTKV_KERNELS_CPU_ATTENTION_TILED_H_

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace latentkv::kernels::internal {

// True when the tiled kernel serves `a`: AVX2 + FMA and head dims that are
// multiples of 8 (other shapes, e.g. small latent dims, take AttendOne).
bool TiledAttentionApplies(const PagedAttentionArgs& a);

// Query rows per tile for `group` query heads per KV head (about 24 query
// vectors a tile; at least 1).
int64_t TiledAttentionRows(int32_t group);

// Per-thread buffers of the tiled kernel (sized on use).
struct TiledAttentionScratch {
  std::vector<float> k, v, scores, out, max, sum;
  std::vector<const float*> q;
  std::vector<int32_t> pos;
  std::vector<int64_t> live;
};

// Rows [t0, t1) of a.q (all of one sequence) x the query heads of KV head
// kvh, over the page list a.kv_indices[p_begin, p_end) whose last page holds
// last_len slots; writes their a.out rows (zeros where no key is visible).
void AttendTileAvx2(const PagedAttentionArgs& a, int32_t kvh, int64_t t0,
                    int64_t t1, int32_t p_begin, int32_t p_end,
                    int32_t last_len, TiledAttentionScratch* scratch);

}  // namespace latentkv::kernels::internal

#endif  // LATENTKV_KERNELS_CPU_ATTENTION_TILED_H_
