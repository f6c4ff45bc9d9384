#include "worker/engine/kv_parking.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/cache/kv_snapshot_heads.h"

namespace latentkv::worker {

void KvParking::Park(const std::string& id, KvSnapshot part) {
  Entry e;
  e.bytes = part.bytes();
  e.taken.assign(part.shapes.empty() ? 0 : part.shapes[0].n_kv_heads, false);
  e.part = std::move(part);
  e.parked = absl::Now();
  absl::MutexLock lock(&mu_);
  ExpireLocked(e.parked);
  if (auto it = entries_.find(id); it != entries_.end()) DropLocked(it);
  // Oldest first until it fits (a lone entry larger than the bound stays:
  // the decode side still gets it, and the next Park pushes it out).
  while (!entries_.empty() && bytes_ + e.bytes > options_.max_bytes) {
    auto oldest = entries_.begin();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.parked < oldest->second.parked) oldest = it;
    }
    DropLocked(oldest);
    ++dropped_;
  }
  bytes_ += e.bytes;
  entries_.emplace(id, std::move(e));
}

absl::StatusOr<KvSnapshot> KvParking::Take(const std::string& id, int32_t begin,
                                           int32_t end, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  struct Want {
    const KvParking* self;
    const std::string* id;
  } want{this, &id};
  mu_.AwaitWithTimeout(absl::Condition(
                           +[](Want* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                             return w->self->entries_.count(*w->id) > 0;
                           },
                           &want),
                       wait);
  ExpireLocked(absl::Now());
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no KV parked for ", id, " (never, expired or taken)"));
  }
  Entry& e = it->second;
  const int32_t n = static_cast<int32_t>(e.taken.size());
  const int32_t lo = begin - options_.head_offset;
  const int32_t hi = end - options_.head_offset;
  if (lo < 0 || lo >= hi || hi > n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV heads [", begin, ", ", end, ") are not within this rank's [",
        options_.head_offset, ", ", options_.head_offset + n, ")"));
  }
  for (int32_t h = lo; h < hi; ++h) {
    if (e.taken[h]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "KV head ", h + options_.head_offset, " of ", id, " was taken"));
    }
  }
  absl::StatusOr<KvSnapshot> out =
      SliceHeads(e.part, lo, hi, options_.q_per_kv);
  if (!out.ok()) return out.status();
  bool all = true;
  for (int32_t h = 0; h < n; ++h) {
    if (h >= lo && h < hi) e.taken[h] = true;
    all = all && e.taken[h];
  }
  if (all) DropLocked(it);
  return out;
}

void KvParking::DropLocked(std::map<std::string, Entry>::iterator it) {
  bytes_ -= it->second.bytes;
  entries_.erase(it);
}

void KvParking::ExpireLocked(absl::Time now) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (now - it->second.parked > options_.ttl) {
      DropLocked(it);
      ++dropped_;
    }
    it = next;
  }
}

int64_t KvParking::parked_bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

int64_t KvParking::entries() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(entries_.size());
}

int64_t KvParking::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

}  // namespace latentkv::worker
