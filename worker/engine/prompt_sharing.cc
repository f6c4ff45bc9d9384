#include "worker/engine/prompt_sharing.h"

#include <algorithm>
#include <utility>

namespace latentkv::worker {

std::optional<std::string> PromptSharing::LeaderFor(
    absl::Span<const int32_t> prompt) const {
  if (leaders_.empty() || prompt.size() < 2) return std::nullopt;
  const int64_t usable = static_cast<int64_t>(prompt.size()) - 1;
  const int64_t cached = index_->Match(prompt, usable);
  const Leader* best = nullptr;
  int64_t best_len = cached + block_ - 1;  // at least one block more
  for (const Leader& l : leaders_) {
    const int64_t n =
        std::min<int64_t>(usable, static_cast<int64_t>(l.prompt.size()) - 1);
    int64_t common = 0;
    while (common < n && prompt[common] == l.prompt[common]) ++common;
    common -= common % block_;
    // Waiting pays only when the shared part is most of both prompts: a
    // short common header before long different tails would hold the
    // follower for the leader's whole prefill to save a few blocks.
    if (2 * common < usable ||
        2 * common < static_cast<int64_t>(l.prompt.size()) - 1) {
      continue;
    }
    if (common > best_len) {
      best = &l;
      best_len = common;
    }
  }
  if (best == nullptr) return std::nullopt;
  return best->id;
}

void PromptSharing::AddLeader(std::string id, std::vector<int32_t> prompt) {
  if (static_cast<int64_t>(prompt.size()) <= block_) return;  // no block
  leaders_.push_back({std::move(id), std::move(prompt)});
}

void PromptSharing::Park(std::unique_ptr<Sequence> seq, std::string leader) {
  parked_.push_back({std::move(seq), std::move(leader)});
}

std::vector<std::unique_ptr<Sequence>> PromptSharing::Release(
    const std::string& id) {
  std::erase_if(leaders_, [&](const Leader& l) { return l.id == id; });
  std::vector<std::unique_ptr<Sequence>> out;
  std::vector<Parked> keep;
  for (Parked& p : parked_) {
    if (p.leader == id) {
      out.push_back(std::move(p.seq));
    } else {
      keep.push_back(std::move(p));
    }
  }
  parked_ = std::move(keep);
  return out;
}

std::unique_ptr<Sequence> PromptSharing::Unpark(const std::string& id) {
  for (auto it = parked_.begin(); it != parked_.end(); ++it) {
    if (it->seq->id == id) {
      std::unique_ptr<Sequence> s = std::move(it->seq);
      parked_.erase(it);
      return s;
    }
  }
  return nullptr;
}

std::vector<std::unique_ptr<Sequence>> PromptSharing::TakeAll() {
  std::vector<std::unique_ptr<Sequence>> out;
  for (Parked& p : parked_) out.push_back(std::move(p.seq));
  parked_.clear();
  leaders_.clear();
  return out;
}

}  // namespace latentkv::worker
