// Tensor-parallel sharding of a loaded model (Megatron-style).
//
// Rank r of a group of `size` holds query heads [r*nh/size, (r+1)*nh/size),
// the KV heads they read, [r*nkv/size, ...), and intermediate features
// [r*I/size, ...):
//   q_proj, k_proj, v_proj, gate_proj, up_proj: their rows (column-parallel);
//   o_proj, down_proj: their columns (row-parallel; each rank's product is a
//   partial sum that the group all-reduces);
//   embeddings, LM head and norms: replicated (views of the same tensors).
// Replicating the LM head costs each rank the full vocabulary product but
// needs no all-gather of logits; at the sizes served here the head is small
// next to the layers. Requires nkv % size == 0 (so every rank keeps whole GQA
// groups), nh % size == 0 and I % size == 0.
// The sharded config has num_heads, num_kv_heads and intermediate_size per
// rank and explicit per-layer latent dims, so the engine runs it unchanged.
#ifndef LATENTKV_MODEL_SHARD_H_
#define LATENTKV_MODEL_SHARD_H_

#include <memory>

#include "absl/status/statusor.h"
#include "model/weights.h"

namespace latentkv::model {

// InvalidArgument when the shapes do not divide or rank is outside
// [0, size). The result shares `full` (keeps it alive) for replicated
// tensors and owns copies of the slices.
absl::StatusOr<std::shared_ptr<const ModelWeights>> ShardForTensorParallel(
    std::shared_ptr<const ModelWeights> full, int rank, int size);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_SHARD_H_
