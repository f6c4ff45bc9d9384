// The seam between the engine and a KV residency policy (which tokens each
// layer's cache keeps, and in what form), and the registry that picks one by
// name (ResidencyOptions::policy, the --kv_policy flag).
//
// A ResidencyPolicy is the server-wide, immutable side, shared by every
// sequence that uses it; SequencePolicy is one sequence's state, driven by
// the model runner after each layer's attention and by the engine at
// admission, transfer and preemption. The engine and the runner know only
// these two interfaces. Built in: "spindle" (SpindleKV eviction and
// codebooks with PyramidKV budgets, sequence_residency.h), which also serves
// a predefined capacity with policy "none".
// Thread-safety: the registry is thread-safe; a ResidencyPolicy is immutable;
// a SequencePolicy belongs to the engine thread.
#ifndef LATENTKV_WORKER_RESIDENCY_RESIDENCY_POLICY_H_
#define LATENTKV_WORKER_RESIDENCY_RESIDENCY_POLICY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/kv/kv_pools.h"
#include "worker/residency/policy.h"

namespace latentkv::worker {

// A scratch pool laid out like one layer of a KvCache (pages of page_size
// slots: K [d_qk] roped, V [d_vo], position), holding reconstructed tokens
// for one attention call. Host memory, reused across layers.
struct AttentionScratch {
  int32_t page_size = 0, d_qk = 0, d_vo = 0;
  int32_t pages = 0;
  std::vector<float> k, v;
  std::vector<int32_t> pos;
  void Reset(int32_t ps, int32_t dqk, int32_t dvo);
  // Appends one token (k roped) in a fresh page when the last one is full.
  void Push(const float* k_row, const float* v_row, int32_t p, int64_t* used);
};

class SequencePolicy {
 public:
  virtual ~SequencePolicy() = default;
  // Forgets everything (after a preemption the sequence is recomputed from
  // an empty cache).
  virtual void Reset() = 0;
  // The prompt's KV arrived already processed (transferred): no prompt-end
  // work happens here.
  virtual void MarkPromptIn() = 0;
  // Adds/loads the policy's own state (beyond the rows) to/from a transfer
  // snapshot; ImportState refuses state of another plan (InvalidArgument).
  virtual void ExportState(const KvCache& cache, KvPools& pools,
                           const SequenceKv& kv, KvSnapshot* snap) const = 0;
  virtual absl::Status ImportState(KvCache& cache, KvPools& pools,
                                   SequenceKv& kv, const KvSnapshot& snap) = 0;
  // After layer `layer`'s attention of a chunk: q [len, n_heads, d_qk] its
  // roped queries at positions pos [len]; rope the layer's RoPE table (host
  // memory; partial rotary: kernels/ops.h). May drop or re-encode that
  // layer's slots (only that layer).
  virtual absl::Status AfterLayer(KvCache& cache, KvPools& pools,
                                  SequenceKv& kv, int32_t layer, const float* q,
                                  const int32_t* pos, int32_t len,
                                  kernels::RopeTable rope) = 0;
  // True when attention in `layer` must read AppendCodebookView instead of
  // the page list alone (tokens held in another form).
  virtual bool ReadsCodebook(const SequenceKv& kv, int32_t layer) const = 0;
  // Appends every token of each KV head of `layer` to `scratch` and their
  // ragged description (one entry per KV head).
  virtual absl::Status AppendCodebookView(
      const KvCache& cache, KvPools& pools, const SequenceKv& kv, int32_t layer,
      kernels::RopeTable rope, AttentionScratch* scratch,
      std::vector<int32_t>* indptr, std::vector<int32_t>* indices,
      std::vector<int32_t>* last_page_len) const = 0;
  // Bytes of K/V data this sequence holds in `layer`.
  virtual int64_t LayerDataBytes(const KvCache& cache, const SequenceKv& kv,
                                 int32_t layer) const = 0;
  // Slots dropped so far, summed over layers and KV heads.
  virtual int64_t evicted_slots() const = 0;
};

// The model a policy serves.
struct ResidencyModel {
  int32_t num_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  std::vector<int32_t> d_qk;  // [num_layers]
  // Empty, or [num_layers] attention windows (0: global; config.window()).
  std::vector<int32_t> window;
};

class ResidencyPolicy {
 public:
  virtual ~ResidencyPolicy() = default;
  // The name it was created under.
  virtual const std::string& name() const = 0;
  // One line per layer of what it does (latentkv inspect).
  virtual std::string Describe() const = 0;
  // Per-layer token capacities for SequenceKv::SetCapacity (empty or 0:
  // unbounded).
  virtual const std::vector<int64_t>& capacities() const = 0;
  // OK when it can run on these pools (backend and KV dtype), else
  // FailedPrecondition naming what it needs.
  virtual absl::Status CheckPools(const KvPools& pools) const = 0;
  // A new sequence's state, for a prompt of prompt_len (> 0) tokens.
  virtual std::unique_ptr<SequencePolicy> NewSequence(
      int64_t prompt_len) const = 0;
};

using ResidencyPolicyFactory =
    std::function<absl::StatusOr<std::shared_ptr<const ResidencyPolicy>>(
        const ResidencyOptions& options, const ResidencyModel& model)>;

// Makes `name` selectable (replacing an earlier factory of that name).
void RegisterResidencyPolicy(const std::string& name,
                             ResidencyPolicyFactory factory);
// The registered names, sorted.
std::vector<std::string> RegisteredResidencyPolicies();
// The policy options.policy names, or null when the options change nothing
// (policy "none" without a capacity or bounded windows: a full cache).
// Policy "none" with a capacity or windows runs them through "spindle".
// InvalidArgument for an unknown name (listing the registered ones) or options
// the policy refuses.
absl::StatusOr<std::shared_ptr<const ResidencyPolicy>> CreateResidencyPolicy(
    const ResidencyOptions& options, const ResidencyModel& model);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_RESIDENCY_RESIDENCY_POLICY_H_
