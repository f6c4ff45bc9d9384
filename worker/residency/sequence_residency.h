// One sequence's residency state: the window of its latest queries per
// layer, and the evictions the ResidencyPlan asks for, applied to its
// SequenceKv as the model runner finishes each layer of a forward chunk.
//
// Order inside a layer of a chunk: the chunk's K/V are appended and attended
// to, then AfterLayer() records the chunk's queries (the last `window` of
// them) and
//  1. on the chunk that completes the prompt, evicts each eviction layer's
//     KV heads to the layer's prompt budget (SnapKV + PyramidKV);
//  2. whenever a KV head of a capacity-bound layer holds `capacity` tokens,
//     evicts that layer's heads down to the capacity target.
// Between steps every head therefore holds fewer tokens than its capacity,
// and the scheduler caps each chunk by SequenceKv::Room(), so a head never
// holds more than `capacity` tokens.
// Thread-safety: not thread-safe; used by the engine thread.
#ifndef LATENTKV_WORKER_RESIDENCY_SEQUENCE_RESIDENCY_H_
#define LATENTKV_WORKER_RESIDENCY_SEQUENCE_RESIDENCY_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "worker/cache/kv_cache.h"
#include "worker/residency/policy.h"

namespace latentkv::worker {

class SequenceResidency {
 public:
  // d_qk: [num_layers] the layers' query/key head dims; prompt_len > 0.
  SequenceResidency(std::shared_ptr<const ResidencyPlan> plan,
                    std::vector<int32_t> d_qk, int32_t n_heads,
                    int64_t prompt_len);

  const ResidencyPlan& plan() const { return *plan_; }
  // Forgets the windows and the prompt compression (after a preemption the
  // sequence is recomputed from an empty cache).
  void Reset();
  // q: [len, n_heads, d_qk(layer)] the chunk's roped queries at positions
  // pos [len] (ascending, the chunk's tokens already in `kv`).
  absl::Status AfterLayer(KvCache& cache, SequenceKv& kv, int32_t layer,
                          const float* q, const int32_t* pos, int32_t len);
  // Slots dropped so far, summed over layers and KV heads.
  int64_t evicted_slots() const { return evicted_; }

 private:
  struct Window {
    std::vector<float> q;      // ring [window, n_heads, d_qk]
    std::vector<int32_t> pos;  // ring [window]
    int32_t count = 0;
    int32_t next = 0;
  };
  // Evicts every KV head of `layer` holding more than `target` slots down to
  // `target`, scoring with the layer's window.
  absl::Status EvictLayer(KvCache& cache, SequenceKv& kv, int32_t layer,
                          int64_t target);

  std::shared_ptr<const ResidencyPlan> plan_;
  std::vector<int32_t> d_qk_;
  int32_t n_heads_;
  int64_t prompt_len_;
  std::vector<Window> windows_;
  std::vector<char> prompt_done_;
  int64_t evicted_ = 0;
  // Scratch for EvictLayer.
  std::vector<float> wq_, keys_, scores_;
  std::vector<int32_t> wpos_, kpos_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_RESIDENCY_SEQUENCE_RESIDENCY_H_
