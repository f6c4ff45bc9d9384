#include "worker/comm/communicator.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace latentkv::comm {

absl::Status Communicator::CheckRoot(absl::string_view op, int root) const {
  if (root >= 0 && root < size()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": root ", root, " outside [0, ", size(), ")"));
}

absl::Status Communicator::CheckScatterParts(
    const std::vector<std::string>& parts, int root) const {
  if (absl::Status s = CheckRoot("ScatterStrings", root); !s.ok()) return s;
  if (rank() == root && parts.size() != static_cast<size_t>(size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ScatterStrings: ", parts.size(), " parts for ", size(), " ranks"));
  }
  return absl::OkStatus();
}

absl::Status Communicator::BroadcastString(std::string* bytes, int root) {
  if (absl::Status s = CheckRoot("BroadcastString", root); !s.ok()) return s;
  uint64_t length = rank() == root ? bytes->size() : 0;
  if (absl::Status s = Broadcast(&length, sizeof(length), root); !s.ok()) {
    return s;
  }
  if (rank() != root) bytes->resize(length);
  if (length == 0) return absl::OkStatus();
  return Broadcast(bytes->data(), length, root);
}

absl::Status Communicator::GatherStrings(const std::string& mine, int root,
                                         std::vector<std::string>* all) {
  if (absl::Status s = CheckRoot("GatherStrings", root); !s.ok()) return s;
  all->clear();
  if (rank() == root) all->resize(size());
  std::string buffer;
  for (int r = 0; r < size(); ++r) {
    if (r == rank()) buffer = mine;
    if (absl::Status s = BroadcastString(&buffer, r); !s.ok()) return s;
    if (rank() == root) (*all)[r] = std::move(buffer);
    buffer.clear();
  }
  return absl::OkStatus();
}

absl::Status Communicator::ScatterStrings(const std::vector<std::string>& parts,
                                          int root, std::string* mine) {
  if (absl::Status s = CheckScatterParts(parts, root); !s.ok()) return s;
  std::string buffer;
  for (int r = 0; r < size(); ++r) {
    if (r == root) continue;
    if (rank() == root) buffer = parts[r];
    if (absl::Status s = BroadcastString(&buffer, root); !s.ok()) return s;
    if (rank() == r) *mine = std::move(buffer);
    buffer.clear();
  }
  if (rank() == root) *mine = parts[root];
  return absl::OkStatus();
}

namespace {

// Group of one: every collective is the identity.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float* data, size_t n) override {
    return absl::OkStatus();
  }
  absl::Status AllGather(const float* in, size_t n, float* out) override {
    if (n > 0 && in != out) std::memmove(out, in, n * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return CheckRoot("Broadcast", root);
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<Communicator> CreateSingleRankCommunicator() {
  return std::make_unique<SingleRankCommunicator>();
}

}  // namespace latentkv::comm
