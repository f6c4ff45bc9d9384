// Structured-output masks computed while the forward pass runs: a step's
// sampled rows are known before the forward, and each constrained
// sequence's mask depends only on the tokens it has already accepted, so a
// helper thread fills them (TokenConstraint::FillMask into Sequence::mask)
// while the engine thread runs the model; Emit then waits and applies them.
// On a GPU the forward leaves the CPU idle, so the masks cost nothing; on
// the CPU backend they share the cores with the forward.
//
// Thread-safety: Start and Wait are called from the engine thread only.
// Between them the helper owns the started sequences' constraints and mask
// fields; the engine thread must not touch those (it runs the forward,
// which does not) and must not free the sequences.
#ifndef LATENTKV_WORKER_ENGINE_MASK_PREFETCH_H_
#define LATENTKV_WORKER_ENGINE_MASK_PREFETCH_H_

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "worker/engine/sequence.h"

namespace latentkv::worker {

// Fills seq->mask (and seq->mask_status) from seq->constraint for the
// next token: what the helper thread does during the forward, and the
// engine thread when nothing was prefetched.
void FillSequenceMask(Sequence* seq);

class MaskPrefetch {
 public:
  MaskPrefetch() = default;
  ~MaskPrefetch();
  MaskPrefetch(const MaskPrefetch&) = delete;
  MaskPrefetch& operator=(const MaskPrefetch&) = delete;

  // Starts filling seq->mask / seq->mask_status for each of `seqs` (each
  // has a constraint); the first call starts the helper thread. Sets every
  // seq->mask_ready false until filled.
  void Start(std::vector<Sequence*> seqs);
  // Waits until everything Start was given is filled (mask_ready true).
  void Wait();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Sequence*> jobs_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_MASK_PREFETCH_H_
