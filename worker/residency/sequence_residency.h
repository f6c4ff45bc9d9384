// One sequence's residency state: the window of its latest queries per
// layer, and the evictions the ResidencyPlan asks for, applied to its
// SequenceKv as the model runner finishes each layer of a forward chunk.
//
// Order inside a layer of a chunk: the chunk's K/V are appended and attended
// to, then AfterLayer() records the chunk's queries (the last `window` of
// them) and
//  1. on the chunk that completes the prompt, evicts each eviction layer's
//     KV heads to the layer's prompt budget (SnapKV + PyramidKV);
//  2. in codebook layers, once the prompt is in, moves the tokens in the page
//     list (the prompt, then each new chunk) into the head's CodebookStore:
//     keys un-roped (clustered before RoPE), the prompt clustered greedily,
//     later tokens joining a codeword or adding one. Attention then reads a
//     reconstructed, re-roped copy (AppendCodebookView) plus the page list;
//  3. whenever a KV head of a capacity-bound layer holds `capacity` tokens
//     (page list + codebook records), evicts that layer's heads down to the
//     capacity target; in a sliding-window layer first by position (the
//     tokens the window has passed), then by score only if still full.
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
#include "worker/cache/kv_snapshot.h"
#include "worker/kv/kv_pools.h"
#include "worker/residency/codebook_store.h"
#include "worker/residency/policy.h"
#include "worker/residency/residency_policy.h"

namespace latentkv::worker {

// SpindleKV's (and the predefined capacity's) per-sequence state: the
// "spindle" residency policy (residency_policy.h).
class SequenceResidency final : public SequencePolicy {
 public:
  // d_qk: [num_layers] the layers' query/key head dims; prompt_len > 0.
  SequenceResidency(std::shared_ptr<const ResidencyPlan> plan,
                    std::vector<int32_t> d_qk, int32_t n_heads,
                    int64_t prompt_len);

  const ResidencyPlan& plan() const { return *plan_; }
  // Forgets the windows and the prompt compression (after a preemption the
  // sequence is recomputed from an empty cache).
  void Reset() override;
  // The prompt's KV arrived already compressed (transferred from a prefill
  // worker): no prompt-end eviction or encoding happens here.
  void MarkPromptIn() override { prompt_done_.assign(prompt_done_.size(), 1); }
  // Adds this sequence's residency state to `snap` (ExportKv'd from `kv`
  // with_codebooks): every head's codebook entries and every layer's query
  // window; each part stays empty when no layer has any.
  void ExportState(const KvCache& cache, KvPools& pools, const SequenceKv& kv,
                   KvSnapshot* snap) const override;
  // Loads `snap`'s residency state (after ImportKv filled the rows) into
  // this sequence. InvalidArgument when a layer with codebook entries is not
  // a codebook layer of this plan, or a window's size or ring indices do not
  // fit this plan (the prefill worker compressed with a different layout),
  // or a blob is malformed; ResourceExhausted when the pages do not fit. On
  // error the caller releases `kv` and calls Reset().
  absl::Status ImportState(KvCache& cache, KvPools& pools, SequenceKv& kv,
                           const KvSnapshot& snap) override;
  // q: [len, n_heads, d_qk(layer)] the chunk's roped queries at positions
  // pos [len] (ascending, the chunk's tokens already in `kv`); rope: the
  // layer's RoPE table (rope.dims rotated channels, [rope.dims / 2]).
  absl::Status AfterLayer(KvCache& cache, KvPools& pools, SequenceKv& kv,
                          int32_t layer, const float* q, const int32_t* pos,
                          int32_t len, kernels::RopeTable rope) override;
  // True when some of this layer's tokens live in codebooks, so attention
  // must read AppendCodebookView instead of the page list alone.
  bool ReadsCodebook(const SequenceKv& kv, int32_t layer) const override;
  // Appends to `scratch` every token of each KV head of `layer`: the
  // reconstructed codebook records (re-roped), then the page list's tokens;
  // and their ragged description (one entry per KV head, as
  // SequenceKv::Describe, page ids into `scratch`).
  absl::Status AppendCodebookView(
      const KvCache& cache, KvPools& pools, const SequenceKv& kv, int32_t layer,
      kernels::RopeTable rope, AttentionScratch* scratch,
      std::vector<int32_t>* indptr, std::vector<int32_t>* indices,
      std::vector<int32_t>* last_page_len) const override;
  // Bytes of K/V data this sequence holds in `layer` (the page list's
  // tokens' values in the KV dtype + codebook records and codewords;
  // positions excluded).
  int64_t LayerDataBytes(const KvCache& cache, const SequenceKv& kv,
                         int32_t layer) const override;
  // Slots dropped so far, summed over layers and KV heads.
  int64_t evicted_slots() const override { return evicted_; }

 private:
  struct Window {
    std::vector<float> q;      // ring [window, n_heads, d_qk]
    std::vector<int32_t> pos;  // ring [window]
    int32_t count = 0;
    int32_t next = 0;
  };
  // Evicts every KV head of `layer` holding more than `target` slots down to
  // `target`, scoring with the layer's window.
  // Drops `layer`'s page-list tokens at positions < min_pos in every KV
  // head (a sliding window's tokens no later query sees).
  absl::Status DropBefore(KvCache& cache, KvPools& pools, SequenceKv& kv,
                          int32_t layer, int32_t min_pos);
  absl::Status EvictLayer(KvCache& cache, KvPools& pools, SequenceKv& kv,
                          int32_t layer, int64_t target,
                          kernels::RopeTable rope);
  // Moves the page list's tokens of every KV head of a codebook layer into
  // its store (left in place when pages run short; retried next time).
  absl::Status EncodeLayer(KvCache& cache, KvPools& pools, SequenceKv& kv,
                           int32_t layer, bool first, kernels::RopeTable rope);

  std::shared_ptr<const ResidencyPlan> plan_;
  std::vector<int32_t> d_qk_;
  int32_t n_heads_;
  int64_t prompt_len_;
  std::vector<Window> windows_;
  std::vector<char> prompt_done_;
  std::vector<std::vector<CodebookStore>> stores_;  // [layer][kv head]
  int64_t evicted_ = 0;
  // Scratch for EvictLayer.
  std::vector<float> wq_, keys_, scores_, vals_;
  std::vector<int32_t> wpos_, kpos_;
  std::vector<int64_t> slots_;
  KvMoves moves_;
};

// OK unless `plan` has codebook layers and `pools` cannot give host access
// to f32 values (another backend or KV dtype): FailedPrecondition naming
// what codebook layers need.
absl::Status CheckCodebookLayersSupported(const ResidencyPlan& plan,
                                          const KvPools& pools);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_RESIDENCY_SEQUENCE_RESIDENCY_H_
