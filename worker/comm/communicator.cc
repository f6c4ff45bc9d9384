#include "worker/comm/communicator.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace latentkv::comm {

absl::Status Communicator::BroadcastString(std::string* bytes, int root) {
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BroadcastString: root ", root, " outside [0, ", size(), ")"));
  }
  uint64_t length = rank() == root ? bytes->size() : 0;
  if (absl::Status s = Broadcast(&length, sizeof(length), root); !s.ok()) {
    return s;
  }
  if (rank() != root) bytes->resize(length);
  if (length == 0) return absl::OkStatus();
  return Broadcast(bytes->data(), length, root);
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
    if (root != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root, " outside [0, 1)"));
    }
    return absl::OkStatus();
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<Communicator> CreateSingleRankCommunicator() {
  return std::make_unique<SingleRankCommunicator>();
}

}  // namespace latentkv::comm
