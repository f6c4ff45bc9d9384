// Per-layer KV residency policies: which tokens each layer's cache of a
// sequence keeps, and in what form.
//
//  - SpindleKV (Tang et al., ACL 2025): deep layers evict by SnapKV scores
//    (attention mass of the last `window` prompt queries, max-pooled), with a
//    PyramidKV-style budget that decreases linearly with depth; shallow layers
//    keep every token but store K (pre-RoPE) and V as codebook entries.
//  - Predefined KV capacity (Niu et al., arXiv 2411.15785): a per-layer bound
//    on the tokens each KV head holds; a layer that reaches it evicts by the
//    same window scores before it can grow further, so a sequence of any
//    length runs in bounded KV memory.
//
// GQA: every query head of a group scores the group's KV head on its own, and
// the kept set is the union of the heads' rankings taken round-robin (rank 0
// of every head, then rank 1, ...) until the budget is filled, so no head's
// choice is averaged away while the cache stays one copy per KV head.
//
// Control-plane only: no device code. A ResidencyPlan is immutable and shared
// by every sequence that uses it.
#ifndef LATENTKV_WORKER_RESIDENCY_POLICY_H_
#define LATENTKV_WORKER_RESIDENCY_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace latentkv::worker {

enum class LayerPolicy {
  kFull,      // keep every token as it is
  kEvict,     // SnapKV eviction to a budget after the prompt
  kCodebook,  // keep every token as codebook entries (K pre-RoPE, V)
};

struct ResidencyOptions {
  // "none" (full cache) or "spindle" (eviction + codebooks).
  std::string policy = "none";
  // SpindleKV: mean fraction of the prompt's tokens each eviction layer keeps
  // once the prompt is in; (0, 1]. 1 keeps everything.
  double budget = 0.4;
  // PyramidKV shape: the deepest eviction layer keeps mean / beta, the
  // shallowest 2 * mean - mean / beta, linearly between; >= 1 (1: uniform).
  double pyramid_beta = 20.0;
  // SnapKV observation window l_w: the last `window` queries score the cached
  // slots, and their own tokens are always kept. > 0.
  int32_t window = 32;
  // Max-pool width over a head's slot scores (keeps neighbours of heavy
  // hitters); odd, >= 1 (1: no pooling).
  int32_t pool_kernel = 7;
  // SpindleKV: the first `codebook_layers` layers use codebooks; -1 picks
  // the default, num_layers / 4 rounded up (at least 1 when num_layers > 1).
  int32_t codebook_layers = -1;
  // Codebook cosine thresholds for K and V (a vector joins a codeword when
  // cos > theta); in (0, 1]; 1 merges nothing.
  float theta_k = 0.98f;
  float theta_v = 0.95f;
  // Predefined capacity per layer in tokens per KV head: empty or one value
  // (all layers) or one per layer; 0 = unbounded. Applies with any policy.
  std::vector<int64_t> capacity;
  // When a layer reaches its capacity it evicts down to capacity - slack
  // (amortises the compaction); 0 picks max(1, capacity / 8).
  int64_t capacity_slack = 0;
  // Sliding-window layers (the model's attention windows W, Gemma 3's local
  // layers) get a capacity of 2W tokens per KV head: when a head reaches it,
  // the tokens no later query can see (positions <= last + 1 - W) are
  // dropped, so those layers hold at most 2W tokens whatever the length.
  // Sequences with a residency plan do not share cached prefixes, so false
  // keeps those layers whole (and prefix caching) at the cost of memory.
  bool bound_windows = true;

  // True when these options change anything: a policy other than "none",
  // or a positive capacity on some layer. False means a full cache (but see
  // ResidencyPlan::CreateIfEnabled: windows enable a plan too).
  bool enabled() const;
};

// Parses "A" or "A,B,C" into capacities; InvalidArgument on bad numbers.
absl::StatusOr<std::vector<int64_t>> ParseCapacityList(const std::string& s);

class ResidencyPlan {
 public:
  // Validates `options` for a model with `num_layers` layers, `n_heads`
  // query heads and `n_kv_heads` KV heads: InvalidArgument naming the field.
  // `windows`: empty, or per layer the model's attention window (0: global).
  static absl::StatusOr<std::shared_ptr<const ResidencyPlan>> Create(
      const ResidencyOptions& options, int32_t num_layers, int32_t n_heads,
      int32_t n_kv_heads, const std::vector<int32_t>& windows = {});
  // Create() when options.enabled() or a window is bounded, else null (a
  // full cache; nothing to validate).
  static absl::StatusOr<std::shared_ptr<const ResidencyPlan>> CreateIfEnabled(
      const ResidencyOptions& options, int32_t num_layers, int32_t n_heads,
      int32_t n_kv_heads, const std::vector<int32_t>& windows = {});
  // True when `options` with the model's `windows` need a plan.
  static bool Needed(const ResidencyOptions& options,
                     const std::vector<int32_t>& windows);

  const ResidencyOptions& options() const { return options_; }
  int32_t num_layers() const { return static_cast<int32_t>(layers_.size()); }
  int32_t group() const { return group_; }
  LayerPolicy policy(int32_t layer) const { return layers_[layer]; }
  // Capacities per layer (0 = unbounded), for SequenceKv::SetCapacity.
  const std::vector<int64_t>& capacities() const { return capacity_; }
  // Tokens a layer evicts down to when it reaches its capacity.
  int64_t CapacityTarget(int32_t layer) const;
  // The attention window a layer's capacity drops tokens behind (0: none).
  int32_t window(int32_t layer) const { return windows_[layer]; }
  // Tokens an eviction layer keeps once a prompt of `prompt_len` tokens is
  // in (PyramidKV linear schedule over the eviction layers, at least the
  // window, at most the prompt); prompt_len for other layers.
  int64_t PromptBudget(int32_t layer, int64_t prompt_len) const;
  // True when the plan changes nothing (no eviction, no capacity; codebook
  // layers still re-encode K/V unless both thetas are 1).
  bool keeps_everything() const;
  // One line: policy per layer, budgets and capacities.
  std::string Describe() const;

 private:
  ResidencyPlan() = default;
  ResidencyOptions options_;
  int32_t group_ = 1;
  std::vector<LayerPolicy> layers_;
  std::vector<int64_t> capacity_;
  std::vector<int32_t> windows_;     // bounded attention windows (0: none)
  std::vector<int32_t> evict_rank_;  // rank among eviction layers, or -1
  int32_t num_evict_ = 0;
};

// SnapKV selection for one KV head. scores: [group, n] window attention mass
// of each query head over the head's n slots (kernels::WindowAttentionScores);
// k_pos: [n] the slots' positions, ascending. Keeps every slot with position
// >= window_first_pos (the observation window; when those alone exceed
// `budget`, the latest `budget` of them), then fills up to `budget` slots by
// round-robin over the query heads' rankings of max-pooled scores (ties: the
// earlier slot). Returns ascending slot indices; all n when n <= budget.
std::vector<int64_t> SelectSlots(const float* scores, int32_t group, int64_t n,
                                 const int32_t* k_pos, int64_t budget,
                                 int32_t window_first_pos, int32_t pool_kernel);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_RESIDENCY_POLICY_H_
