// The NCCL communicator on real GPUs (label multigpu; built with CUDA only).
// Two ranks run as threads of this process, rank r on device r, meeting in a
// fresh rendezvous directory; buffers are device memory and every result is
// copied back and compared with values computed on the host. Tests that
// need two GPUs skip with fewer; the missing-rank tests need one.
#include <cuda_runtime.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/comm/communicator.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/comm/rendezvous_file.h"

namespace latentkv::comm {
namespace {

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

#define SKIP_UNLESS_DEVICES(n)                                            \
  do {                                                                    \
    const int have = DeviceCount();                                       \
    if (have < (n)) {                                                     \
      GTEST_SKIP() << "needs " << (n) << " CUDA devices, found " << have; \
    }                                                                     \
  } while (false)

#define ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/latentkv-nccl-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  bool Empty() const { return std::filesystem::is_empty(path_); }

 private:
  std::string path_;
};

NcclOptions Options(const std::string& dir, int rank, int size,
                    absl::Duration timeout = absl::Seconds(60)) {
  NcclOptions o;
  o.rank = rank;
  o.size = size;
  o.device = rank;
  o.rendezvous_dir = dir;
  o.prefix = "test";
  o.timeout = timeout;
  return o;
}

// A device array of floats on the current device.
class DeviceFloats {
 public:
  explicit DeviceFloats(size_t n) : n_(n) {
    if (cudaMalloc(&data_, std::max<size_t>(n, 1) * sizeof(float)) !=
        cudaSuccess) {
      std::abort();
    }
  }
  ~DeviceFloats() { cudaFree(data_); }
  float* data() const { return static_cast<float*>(data_); }
  void Set(const std::vector<float>& v) {
    if (cudaMemcpy(data_, v.data(), v.size() * sizeof(float),
                   cudaMemcpyHostToDevice) != cudaSuccess) {
      std::abort();
    }
  }
  std::vector<float> Get() const {
    std::vector<float> v(n_);
    if (cudaMemcpy(v.data(), data_, n_ * sizeof(float),
                   cudaMemcpyDeviceToHost) != cudaSuccess) {
      std::abort();
    }
    return v;
  }

 private:
  void* data_ = nullptr;
  size_t n_;
};

// Integer-valued floats: every sum below is exact, so results compare ==.
float Value(int rank, size_t i) {
  return static_cast<float>((rank + 1) * static_cast<int>(i % 97) - 40);
}

// Runs `body(comm)` for ranks 0 and 1 on threads (rank r on device r) after
// creating the group; failures inside are reported by gtest.
void RunGroup(const std::string& dir,
              const std::function<void(Communicator&)>& body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_CUDA(cudaSetDevice(r));
      auto comm = CreateNcclCommunicator(Options(dir, r, 2));
      ASSERT_TRUE(comm.ok()) << "rank " << r << ": " << comm.status();
      EXPECT_TRUE((*comm)->device_memory());
      EXPECT_EQ((*comm)->rank(), r);
      EXPECT_EQ((*comm)->size(), 2);
      body(**comm);
    });
  }
  for (std::thread& t : threads) t.join();
}

TEST(NcclCommunicatorTest, AllReduceSumOfAwkwardSizes) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  RunGroup(dir.path(), [](Communicator& comm) {
    for (size_t n :
         {size_t{1}, size_t{17}, size_t{4099}, (size_t{1} << 20) + 3}) {
      std::vector<float> mine(n), want(n);
      for (size_t i = 0; i < n; ++i) {
        mine[i] = Value(comm.rank(), i);
        want[i] = Value(0, i) + Value(1, i);
      }
      DeviceFloats d(n);
      d.Set(mine);
      ASSERT_TRUE(comm.AllReduceSum(d.data(), n).ok()) << n;
      EXPECT_TRUE(d.Get() == want) << "n=" << n << " rank " << comm.rank();
    }
    EXPECT_TRUE(comm.AllReduceSum(nullptr, 0).ok());
    // Many small ones in a row (the per-layer pattern of decode steps): each
    // doubles the ones, exactly, up to 2^120.
    DeviceFloats ones(8);
    ones.Set(std::vector<float>(8, 1.0f));
    for (int i = 0; i < 120; ++i) {
      ASSERT_TRUE(comm.AllReduceSum(ones.data(), 8).ok()) << i;
    }
    EXPECT_EQ(ones.Get(), std::vector<float>(8, std::ldexp(1.0f, 120)));
  });
}

TEST(NcclCommunicatorTest, AllGatherIsRankMajorInAndOutOfPlace) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  RunGroup(dir.path(), [](Communicator& comm) {
    constexpr size_t n = 257;
    std::vector<float> mine(n), want(2 * n);
    for (size_t i = 0; i < n; ++i) mine[i] = Value(comm.rank(), i);
    for (int r = 0; r < 2; ++r) {
      for (size_t i = 0; i < n; ++i) want[r * n + i] = Value(r, i);
    }
    DeviceFloats in(n), out(2 * n);
    in.Set(mine);
    ASSERT_TRUE(comm.AllGather(in.data(), n, out.data()).ok());
    EXPECT_TRUE(out.Get() == want);
    // In place: this rank's part already sits at out + rank * n.
    DeviceFloats inplace(2 * n);
    std::vector<float> init(2 * n, -1.0f);
    std::copy(mine.begin(), mine.end(), init.begin() + comm.rank() * n);
    inplace.Set(init);
    ASSERT_TRUE(
        comm.AllGather(inplace.data() + comm.rank() * n, n, inplace.data())
            .ok());
    EXPECT_TRUE(inplace.Get() == want);
  });
}

TEST(NcclCommunicatorTest, BroadcastFromEveryRootAndBadArguments) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  RunGroup(dir.path(), [](Communicator& comm) {
    for (int root = 0; root < 2; ++root) {
      constexpr size_t kBytes = 1001;
      std::vector<uint8_t> mine(kBytes), want(kBytes);
      for (size_t i = 0; i < kBytes; ++i) {
        mine[i] = static_cast<uint8_t>(i * 7 + comm.rank() * 100);
        want[i] = static_cast<uint8_t>(i * 7 + root * 100);
      }
      void* d = nullptr;
      ASSERT_CUDA(cudaMalloc(&d, kBytes));
      ASSERT_CUDA(cudaMemcpy(d, mine.data(), kBytes, cudaMemcpyHostToDevice));
      ASSERT_TRUE(comm.Broadcast(d, kBytes, root).ok());
      std::vector<uint8_t> got(kBytes);
      ASSERT_CUDA(cudaMemcpy(got.data(), d, kBytes, cudaMemcpyDeviceToHost));
      ASSERT_CUDA(cudaFree(d));
      EXPECT_EQ(got, want) << "root " << root;
    }
    // Rejected on every rank before communicating; the group stays usable.
    float host[4] = {};
    EXPECT_EQ(comm.Broadcast(host, sizeof(host), 0).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(comm.AllReduceSum(host, 4).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(comm.Broadcast(host, sizeof(host), 2).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(comm.Barrier().ok());
  });
}

TEST(NcclCommunicatorTest, BroadcastStringOfHostStrings) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  RunGroup(dir.path(), [](Communicator& comm) {
    for (size_t len : {size_t{0}, size_t{1}, size_t{4096}, size_t{100003}}) {
      for (int root = 0; root < 2; ++root) {
        std::string want(len, '\0');
        for (size_t i = 0; i < len; ++i)
          want[i] = static_cast<char>(i * 31 + root);
        // Non-roots' previous contents are replaced, whatever their length.
        std::string s = comm.rank() == root ? want : std::string(77, 'z');
        ASSERT_TRUE(comm.BroadcastString(&s, root).ok())
            << "len " << len << " root " << root;
        EXPECT_TRUE(s == want) << "len " << len << " root " << root;
      }
    }
  });
}

// The group-internal KV gather/scatter of tensor-parallel groups (the
// base class's broadcast-based versions, over NCCL's staged strings).
TEST(NcclCommunicatorTest, GatherAndScatterHostStrings) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  RunGroup(dir.path(), [](Communicator& comm) {
    auto part = [](int r, int k) {
      return std::string(static_cast<size_t>(r) * k * 997, 'a' + r + k);
    };
    for (int k = 0; k < 3; ++k) {
      for (int root = 0; root < 2; ++root) {
        std::vector<std::string> all;
        ASSERT_TRUE(comm.GatherStrings(part(comm.rank(), k), root, &all).ok());
        if (comm.rank() == root) {
          ASSERT_EQ(all.size(), 2u);
          EXPECT_TRUE(all[0] == part(0, k) && all[1] == part(1, k));
        }
        std::vector<std::string> parts;
        if (comm.rank() == root) parts = {part(1, k), part(2, k)};
        std::string mine;
        ASSERT_TRUE(comm.ScatterStrings(parts, root, &mine).ok());
        EXPECT_TRUE(mine == part(comm.rank() + 1, k));
      }
    }
  });
}

TEST(NcclCommunicatorTest, BarrierWaitsForEveryRank) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  std::atomic<int64_t> rank1_entered_ms{0};
  RunGroup(dir.path(), [&](Communicator& comm) {
    const absl::Time t0 = absl::Now();
    if (comm.rank() == 1) {
      absl::SleepFor(absl::Milliseconds(300));
      rank1_entered_ms = absl::ToInt64Milliseconds(absl::Now() - t0);
    }
    ASSERT_TRUE(comm.Barrier().ok());
    if (comm.rank() == 0) {
      EXPECT_GE(absl::Now() - t0, absl::Milliseconds(250));
    }
  });
  EXPECT_GE(rank1_entered_ms.load(), 300);
}

TEST(NcclCommunicatorTest, StalledPeerTimesOutThenCommunicatorIsBroken) {
  SKIP_UNLESS_DEVICES(2);
  TempDir dir;
  constexpr absl::Duration kTimeout = absl::Seconds(3);
  std::promise<void> rank0_done;
  std::shared_future<void> done = rank0_done.get_future().share();
  std::thread rank1([&] {
    ASSERT_CUDA(cudaSetDevice(1));
    auto comm = CreateNcclCommunicator(Options(dir.path(), 1, 2, kTimeout));
    ASSERT_TRUE(comm.ok()) << comm.status();
    done.wait();  // joined, then never calls a collective
  });
  ASSERT_CUDA(cudaSetDevice(0));
  auto comm = CreateNcclCommunicator(Options(dir.path(), 0, 2, kTimeout));
  ASSERT_TRUE(comm.ok()) << comm.status();
  DeviceFloats d(16);
  d.Set(std::vector<float>(16, 1.0f));
  const absl::Time t0 = absl::Now();
  const absl::Status s = (*comm)->AllReduceSum(d.data(), 16);
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_GE(took, kTimeout);
  EXPECT_LT(took, kTimeout + absl::Seconds(15));
  // Broken: later calls fail fast with UNAVAILABLE (communicator.h).
  const absl::Time t1 = absl::Now();
  EXPECT_EQ((*comm)->Barrier().code(), absl::StatusCode::kUnavailable);
  std::string str = "x";
  EXPECT_EQ((*comm)->BroadcastString(&str, 0).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - t1, absl::Seconds(1));
  rank0_done.set_value();
  rank1.join();
}

TEST(NcclCommunicatorTest, MissingRankIsDeadlineExceededAndTheIdFileIsRemoved) {
  SKIP_UNLESS_DEVICES(1);
  TempDir dir;
  constexpr absl::Duration kTimeout = absl::Seconds(2);
  const absl::Time t0 = absl::Now();
  auto comm = CreateNcclCommunicator(Options(dir.path(), 0, 2, kTimeout));
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded)
      << comm.status();
  EXPECT_GE(took, kTimeout);
  EXPECT_LT(took, kTimeout + absl::Seconds(15));
  EXPECT_TRUE(dir.Empty());  // the (dir, prefix) can be reused
}

TEST(NcclCommunicatorTest, MissingRankZeroIsDeadlineExceeded) {
  SKIP_UNLESS_DEVICES(1);
  TempDir dir;
  NcclOptions o = Options(dir.path(), 1, 2, absl::Milliseconds(500));
  o.device = 0;
  const absl::Time t0 = absl::Now();
  auto comm = CreateNcclCommunicator(o);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded)
      << comm.status();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

TEST(NcclCommunicatorTest, StaleIdFileIsFailedPrecondition) {
  SKIP_UNLESS_DEVICES(1);
  TempDir dir;
  const std::string path = RendezvousPath(dir.path(), "test", "nccl-unique-id");
  ASSERT_TRUE(PublishBlob(path, std::string(128, 'x')).ok());
  NcclOptions o = Options(dir.path(), 0, 2, absl::Seconds(2));
  auto comm = CreateNcclCommunicator(o);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition)
      << comm.status();
  EXPECT_TRUE(std::filesystem::exists(path));  // not ours to remove
}

TEST(NcclCommunicatorTest, InvalidOptionsAreRejected) {
  TempDir dir;
  NcclOptions o = Options(dir.path(), 0, 2);
  o.rank = 2;
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = Options("", 0, 2);
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = Options(dir.path(), 0, 2, absl::ZeroDuration());
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  SKIP_UNLESS_DEVICES(1);
  o = Options(dir.path(), 0, 2);
  o.device = DeviceCount();
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclCommunicatorTest, SizeOneIsADeviceCommunicatorWithoutFiles) {
  SKIP_UNLESS_DEVICES(1);
  TempDir dir;
  auto comm = CreateNcclCommunicator(Options(dir.path(), 0, 1));
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_TRUE((*comm)->device_memory());
  DeviceFloats in(5), out(5);
  in.Set({1, 2, 3, 4, 5});
  ASSERT_TRUE((*comm)->AllGather(in.data(), 5, out.data()).ok());
  EXPECT_EQ(out.Get(), (std::vector<float>{1, 2, 3, 4, 5}));
  ASSERT_TRUE((*comm)->AllReduceSum(in.data(), 5).ok());
  EXPECT_EQ(in.Get(), (std::vector<float>{1, 2, 3, 4, 5}));
  std::string s = "step";
  ASSERT_TRUE((*comm)->BroadcastString(&s, 0).ok());
  EXPECT_EQ(s, "step");
  EXPECT_TRUE((*comm)->Barrier().ok());
  EXPECT_TRUE(dir.Empty());
}

}  // namespace
}  // namespace latentkv::comm
