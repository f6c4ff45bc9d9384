// The serving engine's core: continuous batching over a ModelRunner and a
// paged KV cache, as plain synchronous calls. Step() runs one engine step
// (schedule, forward, sample, emit events) and returns; nothing here owns a
// thread, so tests drive it step by step. Engine (engine.h) wraps it with a
// thread and a mailbox for serving.
//
// A request enters as Prepare() (validation with the shared admission rules,
// common/generation_rules.h, and the KV memory bound; any thread) then
// Admit() (the prompt's KV from a transfer or the kvstore imported, the
// sequence queued); it leaves through its EventSink, called from Step(),
// Cancel() or FailAll(): one event per generated token, then a final event.
// Thread-safety: Prepare(), config() and the prefix log are thread-safe;
// everything else belongs to one thread at a time (the engine thread).
#ifndef LATENTKV_WORKER_ENGINE_ENGINE_CORE_H_
#define LATENTKV_WORKER_ENGINE_ENGINE_CORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cache/prefix_index.h"
#include "worker/comm/communicator.h"
#include "worker/engine/engine_types.h"
#include "worker/engine/kv_arrival.h"
#include "worker/engine/mask_prefetch.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/prompt_sharing.h"

namespace latentkv::worker {

class EngineCore {
 public:
  // With tensor parallelism, `weights` is rank 0's shard and `comm` the
  // group's communicator (not owned; null for one rank).
  static absl::StatusOr<std::unique_ptr<EngineCore>> Create(
      std::shared_ptr<const model::ModelWeights> weights,
      std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
      Communicator* comm = nullptr);
  ~EngineCore();

  // The sequence for `request`, or InvalidArgument for a bad request (the
  // shared admission rules; an imported KV without a valid first token;
  // compression asked of a server without it) or ResourceExhausted when it
  // can never fit the KV memory. Thread-safe.
  absl::StatusOr<std::unique_ptr<Sequence>> Prepare(
      GenerationRequest request) const;
  // Queues a prepared sequence. A transferred KV is imported first (on any
  // failure the prompt is prefilled here instead); an imported first token
  // is emitted at once. A live id gets an AlreadyExists final event.
  void Admit(std::unique_ptr<Sequence> seq, EventSink sink);
  // Stops a live request: its pages go back, its final event has kCancelled.
  // No-op for an unknown id.
  void Cancel(const std::string& id);
  // One engine step. With a step listener (tensor parallelism) also the
  // keep-alive when none was sent for keepalive_ms.
  void Step();
  // Fails every live request with `status`, releasing its pages.
  void FailAll(const absl::Status& status);

  // Nothing to run, and no page change or publication the group's other
  // ranks have not heard of yet (those go out with the next step at once).
  bool idle() const { return scheduler_->idle() && group_ops_.empty(); }
  // Sends what the group has not heard of yet (the engine is stopping:
  // e.g. the last finished sequences' publications).
  void FlushGroupOps() {
    if (fatal_.ok() && !group_ops_.empty()) Announce({});
  }
  int32_t num_waiting() const { return scheduler_->num_waiting(); }
  // Counters and occupancy now.
  EngineStats Stats() const;
  // OK while the tensor-parallel group works; the error that broke it.
  const absl::Status& fatal() const { return fatal_; }

  const model::ModelConfig& config() const { return runner_->config(); }
  const EngineOptions& options() const { return options_; }
  std::vector<LayerKvShape> kv_shapes() const { return runner_->KvShapes(); }
  DType kv_dtype() const { return options_.kv.dtype; }
  int64_t kv_page_bytes(int32_t layer) const {
    return cache_->page_bytes(layer);
  }
  int32_t page_size() const { return cache_->page_size(); }
  // The longest sequence (prompt + generated tokens) whose full KV fits in
  // this engine's KV memory when alone, capped at the model's context: what
  // the worker registers as its context. Computed once at Create.
  int64_t max_sequence_tokens() const { return max_sequence_tokens_; }
  // The local prefix cache, or null when off.
  const PrefixIndex* prefix_index() const { return prefix_.get(); }
  // The server's KV residency policy, or null when it serves a full cache.
  const ResidencyPolicy* residency_policy() const { return policy_.get(); }

 private:
  EngineCore() = default;
  void Finish(Sequence* seq, FinishReason reason, absl::Status status);
  // Sets the logits[vocab] of the tokens seq->constraint does not allow to
  // -inf. An error when the constraint fails or allows no token.
  absl::Status MaskDisallowed(Sequence* seq, float* logits);
  // The next token of a constrained sequence from its row of logits (after
  // the logit controls): EngineOptions::MaskMode's rules.
  absl::StatusOr<int32_t> SampleConstrained(Sequence* seq, float* logits);
  // Whether masks are computed during the forward pass (MaskMode).
  bool PrefetchesMasks() const;
  // Admits the sequences waiting for `leader`'s prompt (prompt_sharing.h).
  void ReleaseFollowers(const std::string& leader);
  // Attaches a transferred KV (prefill worker or kvstore) to a sequence
  // being admitted; false when it falls back to a local prefill.
  bool ArriveTransferred(Sequence* seq);
  // ArriveTransferred for this rank's heads of stored blocks or of a
  // rank-to-rank pull, in a group: imports them, then the other ranks fetch
  // theirs (OnRankFetch); all or none keep them.
  bool ArriveFetchedByRanks(Sequence* seq);
  // Publishes a finished publish_kv sequence's blocks through kv_store (a
  // kPublish op has the other ranks publish theirs).
  void Publish(const Sequence& seq);
  // A finishing sequence's exported KV (`mine`: this rank's heads) with the
  // other ranks' heads joined in (tensor parallelism), or `mine` alone.
  absl::StatusOr<KvSnapshot> GroupExport(const Sequence& seq, KvSnapshot mine);
  // Query heads per KV head (GQA group size).
  int32_t QueriesPerKvHead() const;
  // Appends to group_ops_ (with a step listener only): `op`; an op carrying
  // seq's tokens [0, n); a release of each sequence the scheduler preempted
  // since the last call (called before any later page change, so the
  // followers free them in the same order).
  void Record(GroupKvOp op);
  void RecordTokens(GroupKvOp::Kind kind, const Sequence& seq, int64_t n);
  void RecordPreempted();
  // Tells the step listener (tensor parallelism) what this step runs; false
  // (the group failed, requests failed) when it could not.
  bool Announce(const std::vector<ScheduledChunk>& plan);
  // Samples and emits the tokens of a step that ran.
  int64_t Emit(const std::vector<ScheduledChunk>& plan);
  // Indexes a full-cache sequence's whole blocks.
  void IndexPrefix(const Sequence& seq);
  // Prompt log-probabilities (sampling.prompt_logprobs): records those of a
  // chunk from its rows of logits [len, vocab], and moves them into the
  // first event once the whole prompt is computed.
  void RecordPromptLogprobs(const ScheduledChunk& p, const float* rows);
  // An embed chunk's final hidden rows [p.len, hidden] into its sum.
  void AddEmbeddingRows(const ScheduledChunk& p, const float* rows);
  void TakePromptLogprobs(Sequence* seq, GenerationEvent* ev);

  std::shared_ptr<const model::ModelWeights> weights_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<KvPools> pools_;       // the pools of cache_'s pages
  std::unique_ptr<PrefixIndex> prefix_;  // local prefix cache; null: off
  // Requests waiting to share a prompt being computed; null with prefix_.
  std::unique_ptr<PromptSharing> sharing_;
  // The ways a prompt's KV arrives (kv_arrival.h): from a prefill worker,
  // from the kvstore, from the local prefix cache.
  std::unique_ptr<KvArrival> from_prefill_, from_store_, from_prefix_;
  std::unique_ptr<Scheduler> scheduler_;
  std::shared_ptr<const ResidencyPolicy> policy_;  // null: full cache
  EngineOptions options_;
  int64_t kv_pages_total_ = 0;
  int64_t max_sequence_tokens_ = 0;

  std::unordered_map<std::string, EventSink> sinks_;
  uint64_t next_arrival_ = 0;
  // Page changes since the last step, for the step listener (tensor
  // parallelism; not kept without one).
  std::vector<GroupKvOp> group_ops_;
  // Transferred KVs a group refused before splitting (kv_import_failures).
  int64_t import_refused_ = 0;
  int64_t peer_pull_bytes_ = 0;  // KV bytes the other ranks pulled
  std::chrono::steady_clock::time_point last_listened_;
  absl::Status fatal_;  // set when the tensor-parallel group broke
  // Counters.
  int64_t steps_ = 0, tokens_generated_ = 0, evicted_total_ = 0;
  int64_t prefix_evicted_ = 0;
  // Step scratch.
  std::vector<float> logits_;
  std::vector<int32_t> greedy_;  // every sampled row's argmax
  std::vector<float> hidden_;    // embed chunks' final hidden rows
  std::vector<std::pair<float, int32_t>> scratch_;
  MaskPrefetch masks_;  // constrained rows' masks, during the forward
  std::vector<float> raw_logits_;  // a row kept from the logit controls
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_ENGINE_CORE_H_
