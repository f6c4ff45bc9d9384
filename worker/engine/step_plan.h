// The plan of one forward step, built on the host from the scheduler's batch
// before any kernel runs, and uploaded to the backend in one copy: every
// token and position, the query ragged description, and for every layer the
// new tokens' KV slots and the FlashInfer-style page table (indptr, indices,
// last_page_len) of every (sequence, KV head), plus the rows whose logits
// are wanted. The model runner then runs every layer against it.
//
// Building the plan appends the chunks' tokens to their SequenceKv in every
// layer (the slots were reserved by the scheduler). Layer l's page table may
// be built before layer l-1 runs because residency changes to layer l (SnapKV
// eviction, codebook encoding, capacity) happen only after layer l's
// attention; a sequence whose layer-l tokens partly live in codebooks gets
// an empty description there (it attends over a reconstructed copy).
//
// Control plane only: no kernels, no KV bytes. Thread-safety: a StepPlan is
// built and used by one thread.
#ifndef LATENTKV_WORKER_ENGINE_STEP_PLAN_H_
#define LATENTKV_WORKER_ENGINE_STEP_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "worker/cache/kv_cache.h"
#include "worker/residency/residency_policy.h"

namespace latentkv::worker {

// One sequence's part of a forward pass: tokens at positions
// [start, start + tokens.size()) appended to `kv` (already reserved).
struct ForwardChunk {
  SequenceKv* kv = nullptr;
  const int32_t* tokens = nullptr;  // [len]
  int32_t len = 0;
  int64_t start = 0;  // position of tokens[0]
  // Which rows' logits to return: kLast (one row), kAll (len rows), kNone.
  enum class Logits { kNone, kLast, kAll } logits = Logits::kLast;
  // Its logit rows are wanted only as their greedy token (ModelRunner::
  // Forward's `argmax`): their logits are not copied off the backend.
  bool greedy = false;
  // Its rows' final hidden states (after the final RMSNorm) are wanted:
  // ModelRunner::Forward's `hidden` (embeddings).
  bool hidden = false;
  // The sequence's residency policy state, or nullptr for a full cache. After
  // each layer's attention the runner hands it the chunk's queries, and it
  // may drop slots of that layer from `kv` (see residency_policy.h).
  SequencePolicy* residency = nullptr;
};

struct StepPlan {
  int64_t num_tokens = 0;  // T, over all chunks
  int32_t num_seqs = 0;    // S = chunks
  int32_t n_kv_heads = 0;
  int64_t logit_rows = 0;  // R
  int32_t max_q_rows = 0;  // the longest chunk (a launch-size hint)

  // Offsets (in elements) into `ints` of the step-wide arrays.
  int64_t tokens = 0;     // [T] token ids
  int64_t positions = 0;  // [T] absolute positions
  int64_t q_indptr = 0;   // [S + 1] query rows per chunk
  int64_t logit_row = 0;  // [R] rows of the batch whose logits are wanted
  struct Layer {
    int64_t kv_indptr = 0;      // into ints: [S * n_kv + 1]
    int64_t kv_last = 0;        // into ints: [S * n_kv]
    int64_t kv_indices = 0;     // into ints: [kv_indptr[S * n_kv]] page ids
    int64_t slots = 0;          // into slots: [T * n_kv] the new tokens' slots
    bool any_codebook = false;  // some chunk attends over codebooks here
    int32_t max_pages = 0;      // the longest (sequence, KV head) page list
  };
  std::vector<Layer> layers;

  // Everything above, packed for one upload each.
  std::vector<int32_t> ints;
  std::vector<int64_t> slots;
  // [R]: whether logit row r belongs to a greedy chunk (only its argmax is
  // wanted: ForwardChunk::greedy). Host only.
  std::vector<uint8_t> logit_greedy;

  const int32_t* at(int64_t offset) const { return ints.data() + offset; }
};

// Builds the plan of `chunks` (appending their tokens to every layer of
// their SequenceKv): InvalidArgument for an empty batch, a token outside
// [0, vocab) or positions past `context` (nothing appended then).
absl::Status BuildStepPlan(const std::vector<ForwardChunk>& chunks,
                           const KvCache& cache, int32_t vocab, int64_t context,
                           StepPlan* plan);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_STEP_PLAN_H_
