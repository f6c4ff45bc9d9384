// Prompt sharing between requests that arrive together: when a new request's
// prompt shares whole blocks with a prompt being computed right now, beyond
// what the local prefix cache already holds, it waits (outside the
// scheduler) until that prompt is computed and indexed, then is admitted
// and shares its pages instead of computing the same blocks again. This is
// how n > 1 samples of one prompt, and a burst of requests with a common
// system prompt, prefill the shared part once. Only full-cache sequences
// take part (those the local prefix cache serves).
//
// Thread-safety: none; the engine thread owns it.
#ifndef LATENTKV_WORKER_ENGINE_PROMPT_SHARING_H_
#define LATENTKV_WORKER_ENGINE_PROMPT_SHARING_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "worker/cache/prefix_index.h"
#include "worker/engine/sequence.h"

namespace latentkv::worker {

class PromptSharing {
 public:
  // `index` (not owned) is the engine's prefix cache; `block_tokens` its
  // block size (the page size).
  PromptSharing(const PrefixIndex* index, int32_t block_tokens)
      : index_(index), block_(block_tokens) {}

  // The leader a prompt should wait for: the computing prompt sharing the
  // most whole blocks with it (the last prompt token excluded: it always
  // runs), when that is at least one block more than the cache holds and
  // at least half of each of the two prompts (a short common header before
  // long different tails is computed by each, not waited for).
  std::optional<std::string> LeaderFor(absl::Span<const int32_t> prompt) const;
  // A full-cache prompt now being computed.
  void AddLeader(std::string id, std::vector<int32_t> prompt);
  void Park(std::unique_ptr<Sequence> seq, std::string leader);
  // Leader `id`'s prompt is indexed, or it ended: it leads no more; its
  // waiting followers are returned, oldest first, to be admitted.
  std::vector<std::unique_ptr<Sequence>> Release(const std::string& id);
  // A waiting sequence taken out (cancelled); null when `id` is not one.
  std::unique_ptr<Sequence> Unpark(const std::string& id);
  // Everything waiting (the engine is failing all requests).
  std::vector<std::unique_ptr<Sequence>> TakeAll();
  int32_t num_parked() const { return static_cast<int32_t>(parked_.size()); }

 private:
  struct Leader {
    std::string id;
    std::vector<int32_t> prompt;
  };
  struct Parked {
    std::unique_ptr<Sequence> seq;
    std::string leader;
  };
  const PrefixIndex* index_;
  int32_t block_;
  std::vector<Leader> leaders_;
  std::vector<Parked> parked_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_PROMPT_SHARING_H_
