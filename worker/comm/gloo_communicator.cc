#include "worker/comm/gloo_communicator.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/common/logging.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"

namespace latentkv::comm {
namespace {

using Millis = std::chrono::milliseconds;

// Thrown by DeadlineFileStore::set when a key file is left over from an
// earlier group that used the same (dir, prefix).
struct StaleKeyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A FileStore whose waits end at our timeout with millisecond precision
// (FileStore rounds elapsed time down to whole seconds and polls every 10 ms)
// and that can remove the key files it wrote.
class DeadlineFileStore final : public gloo::rendezvous::FileStore {
 public:
  DeadlineFileStore(const std::string& path, Millis timeout)
      : FileStore(path), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    const std::string path = objectPath(key);
    if (access(path.c_str(), F_OK) == 0) {
      throw StaleKeyError(
          absl::StrCat("rendezvous key '", key, "' already exists (", path,
                       "): left over from an earlier group with the same "
                       "dir and prefix; remove it or use a fresh prefix"));
    }
    FileStore::set(key, data);
    written_.push_back(path);
  }

  void wait(const std::vector<std::string>& keys) override {
    wait(keys, timeout_);
  }

  // Waits at most min(timeout, our timeout); gloo::kNoTimeout means ours.
  void wait(const std::vector<std::string>& keys,
            const Millis& timeout) override {
    const Millis limit = timeout == gloo::kNoTimeout
                             ? timeout_
                             : std::min<Millis>(timeout, timeout_);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!check(keys)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        throw gloo::IoException(absl::StrCat(
            "rendezvous wait timeout after ", limit.count(), " ms for key(s) ",
            absl::StrJoin(keys, ","), " (a rank did not join)"));
      }
      std::this_thread::sleep_for(Millis(2));
    }
  }

  // Unlinks the key files this store created (best effort).
  void RemoveWrittenKeys() {
    for (const std::string& path : written_) unlink(path.c_str());
    written_.clear();
  }

 private:
  const Millis timeout_;
  std::vector<std::string> written_;
};

// Gloo writes with writev(2): a dead peer would raise SIGPIPE and kill us.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
    if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

// Runs `fn`, turning every exception into a Status prefixed with `what`.
template <typename F>
absl::Status Guard(absl::string_view what, F&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const StaleKeyError& e) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": ", e.what()));
  } catch (const gloo::IoException& e) {
    const std::string msg = e.what();
    const std::string lower = absl::AsciiStrToLower(msg);
    if (absl::StrContains(lower, "timeout") ||
        absl::StrContains(lower, "timed out")) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": ", msg));
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", msg));
  } catch (const gloo::EnforceNotMet& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (const gloo::Exception& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

// c[i] = a[i] + b[i]; c may alias a or b.
void SumFloats(void* c, const void* a, const void* b, size_t n) {
  float* out = static_cast<float*>(c);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::rendezvous::Context> context,
                   Millis timeout)
      : context_(std::move(context)), timeout_(timeout) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }

  absl::Status AllReduceSum(float* data, size_t n) override {
    if (n == 0) return Check("AllReduceSum");
    return Run("AllReduceSum", [&](uint32_t tag) {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(data, n);
      opts.setReduceFunction(&SumFloats);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::allreduce(opts);
    });
  }

  absl::Status AllGather(const float* in, size_t n, float* out) override {
    if (n == 0) return Check("AllGather");
    return Run("AllGather", [&](uint32_t tag) {
      gloo::AllgatherOptions opts(context_);
      // Without an input Gloo gathers in place from out + rank * n.
      if (in != out + static_cast<size_t>(rank()) * n) {
        opts.setInput(const_cast<float*>(in), n);
      }
      opts.setOutput(out, n * static_cast<size_t>(size()));
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::allgather(opts);
    });
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (absl::Status s = CheckRoot("Broadcast", root); !s.ok()) return s;
    if (bytes == 0) return Check("Broadcast");
    return Run("Broadcast", [&](uint32_t tag) {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(static_cast<uint8_t*>(data), bytes);
      opts.setRoot(root);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::broadcast(opts);
    });
  }

  // Point-to-point: each rank sends root its length, then its bytes.
  absl::Status GatherStrings(const std::string& mine, int root,
                             std::vector<std::string>* all) override {
    if (absl::Status s = CheckRoot("GatherStrings", root); !s.ok()) return s;
    all->clear();
    if (rank() == root) all->resize(size());
    return Run("GatherStrings", [&](uint32_t tag) {
      if (rank() != root) {
        Send(mine, root, tag);
        return;
      }
      for (int r = 0; r < size(); ++r) {
        if (r == root) {
          (*all)[r] = mine;
        } else {
          Receive(r, tag, &(*all)[r]);
        }
      }
    });
  }

  absl::Status ScatterStrings(const std::vector<std::string>& parts, int root,
                              std::string* mine) override {
    if (absl::Status s = CheckScatterParts(parts, root); !s.ok()) return s;
    return Run("ScatterStrings", [&](uint32_t tag) {
      if (rank() != root) {
        Receive(root, tag, mine);
        return;
      }
      for (int r = 0; r < size(); ++r) {
        if (r != root) Send(parts[r], r, tag);
      }
      *mine = parts[root];
    });
  }

  absl::Status Barrier() override {
    return Run("Barrier", [&](uint32_t tag) {
      gloo::BarrierOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

 private:
  // OK unless an earlier call broke the communicator.
  absl::Status Check(absl::string_view op) const {
    if (broken_.ok()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(
        "Gloo ", op, " (rank ", rank(), " of ", size(),
        "): communicator broken by an earlier error: ", broken_.message()));
  }

  // Runs one collective with the next tag; a failure breaks the communicator.
  // Tags advance identically on all ranks because all make the same calls.
  template <typename F>
  absl::Status Run(absl::string_view op, F&& fn) {
    if (absl::Status s = Check(op); !s.ok()) return s;
    const uint32_t tag = next_tag_++;
    absl::Status s =
        Guard(absl::StrCat("Gloo ", op, " (rank ", rank(), " of ", size(), ")"),
              [&] { fn(tag); });
    if (!s.ok()) broken_ = s;
    return s;
  }

  // Slot prefixes of the point-to-point transfers (Gloo's own collectives
  // use 0x01..0x07): a string's length, then its bytes.
  static constexpr uint8_t kLengthSlot = 0x40;
  static constexpr uint8_t kBytesSlot = 0x41;

  // Sends `bytes` to rank `to`; throws (Guard) on a broken pair or timeout.
  void Send(const std::string& bytes, int to, uint32_t tag) {
    uint64_t length = bytes.size();
    auto len = context_->createUnboundBuffer(&length, sizeof(length));
    len->send(to, gloo::Slot::build(kLengthSlot, tag));
    Wait(len->waitSend(timeout_));
    if (length == 0) return;
    auto data = context_->createUnboundBuffer(const_cast<char*>(bytes.data()),
                                              bytes.size());
    data->send(to, gloo::Slot::build(kBytesSlot, tag));
    Wait(data->waitSend(timeout_));
  }

  // Receives what rank `from` sends with `tag` into *bytes.
  void Receive(int from, uint32_t tag, std::string* bytes) {
    uint64_t length = 0;
    auto len = context_->createUnboundBuffer(&length, sizeof(length));
    len->recv(from, gloo::Slot::build(kLengthSlot, tag));
    Wait(len->waitRecv(timeout_));
    if (length > kMaxStringBytes) {
      throw gloo::IoException(absl::StrCat("rank ", from, " sends ", length,
                                           " bytes, more than the bound"));
    }
    bytes->assign(length, '\0');
    if (length == 0) return;
    auto data = context_->createUnboundBuffer(bytes->data(), length);
    data->recv(from, gloo::Slot::build(kBytesSlot, tag));
    Wait(data->waitRecv(timeout_));
  }

  // waitSend/waitRecv return false when aborted.
  static void Wait(bool completed) {
    if (!completed) throw gloo::IoException("transfer aborted");
  }

  // A peer's length beyond this is corrupt (4 GiB: no step message or KV
  // part comes near it).
  static constexpr uint64_t kMaxStringBytes = uint64_t{1} << 32;

  std::shared_ptr<gloo::rendezvous::Context> context_;
  const Millis timeout_;
  uint32_t next_tag_ = 0;
  absl::Status broken_;  // OK while usable; else the first error.
};

absl::Status Validate(const GlooOptions& o) {
  if (o.size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlooOptions.size must be >= 1, got ", o.size));
  }
  if (o.rank < 0 || o.rank >= o.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GlooOptions.rank ", o.rank, " outside [0, ", o.size, ")"));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlooOptions.timeout must be > 0, got ",
                     absl::FormatDuration(o.timeout)));
  }
  if (o.size > 1 && o.rendezvous_dir.empty()) {
    return absl::InvalidArgumentError(
        "GlooOptions.rendezvous_dir is required when size > 1");
  }
  if (o.size > 1 && o.host.empty()) {
    return absl::InvalidArgumentError("GlooOptions.host must not be empty");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const GlooOptions& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  if (options.size == 1) return CreateSingleRankCommunicator();

  std::error_code ec;
  std::filesystem::create_directories(options.rendezvous_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlooOptions.rendezvous_dir '", options.rendezvous_dir,
                     "' cannot be created: ", ec.message()));
  }
  IgnoreSigpipeOnce();
  const Millis timeout(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(options.timeout)));
  const std::string where =
      absl::StrCat("Gloo rendezvous (rank ", options.rank, " of ", options.size,
                   ", prefix '", options.prefix, "')");

  std::shared_ptr<gloo::transport::Device> device;
  if (absl::Status s = Guard(where,
                             [&] {
                               gloo::transport::tcp::attr attr;
                               attr.hostname = options.host;
                               device =
                                   gloo::transport::tcp::CreateDevice(attr);
                             });
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GlooOptions.host '", options.host, "' unusable: ", s.message()));
  }

  std::shared_ptr<gloo::rendezvous::Context> context;
  std::unique_ptr<DeadlineFileStore> store;
  absl::Status s = Guard(where, [&] {
    store =
        std::make_unique<DeadlineFileStore>(options.rendezvous_dir, timeout);
    gloo::rendezvous::PrefixStore prefixed(options.prefix, *store);
    auto ctx =
        std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
    ctx->setTimeout(timeout);
    ctx->connectFullMesh(prefixed, device);
    // Once every rank is past connectFullMesh, every key has been read.
    gloo::BarrierOptions barrier(ctx);
    barrier.setTag(UINT32_MAX);
    barrier.setTimeout(timeout);
    gloo::barrier(barrier);
    context = std::move(ctx);
  });
  // Key files are only needed during the rendezvous; on failure the group is
  // dead anyway, so clean up either way to let the (dir, prefix) be reused.
  if (store != nullptr) store->RemoveWrittenKeys();
  if (!s.ok()) return s;
  return std::unique_ptr<Communicator>(
      new GlooCommunicator(std::move(context), timeout));
}

}  // namespace latentkv::comm
