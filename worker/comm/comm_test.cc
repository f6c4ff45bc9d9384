// Tests of the collectives: N ranks as threads of this process, each with its
// own Gloo communicator (own TCP device, loopback, ephemeral ports) meeting
// in a fresh FileStore directory.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gloo/rendezvous/file_store.h"
#include "gtest/gtest.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo_communicator.h"

namespace latentkv::comm {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/latentkv-comm-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  bool Empty() const { return std::filesystem::is_empty(path_); }

 private:
  std::string path_;
};

GlooOptions Options(const std::string& dir, int rank, int size,
                    absl::Duration timeout = absl::Seconds(10)) {
  GlooOptions o;
  o.rank = rank;
  o.size = size;
  o.rendezvous_dir = dir;
  o.prefix = "test";
  o.timeout = timeout;
  return o;
}

// Runs `body(comm)` on `size` threads, each having joined a Gloo group in
// `dir`. Fails the test if a rank cannot join.
void RunGroup(const std::string& dir, int size,
              const std::function<void(Communicator&)>& body,
              const std::string& prefix = "test") {
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      GlooOptions o = Options(dir, r, size);
      o.prefix = prefix;
      auto comm = CreateGlooCommunicator(o);
      ASSERT_TRUE(comm.ok()) << comm.status();
      ASSERT_EQ((*comm)->rank(), r);
      ASSERT_EQ((*comm)->size(), size);
      body(**comm);
    });
  }
  for (auto& t : threads) t.join();
}

std::vector<float> RankData(int rank, size_t n) {
  std::mt19937 rng(static_cast<uint32_t>(rank * 7919 + n));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

class GroupTest : public ::testing::TestWithParam<int> {
 protected:
  TempDir dir_;
};

TEST_P(GroupTest, AllReduceSumMatchesFloat64SumOnEveryRank) {
  const int size = GetParam();
  const std::vector<size_t> sizes = {1, 97, 4099, size_t{1} << 20};
  // results[r][k]: rank r's output for sizes[k].
  std::vector<std::vector<std::vector<float>>> results(size);
  RunGroup(dir_.path(), size, [&](Communicator& comm) {
    for (size_t n : sizes) {
      std::vector<float> x = RankData(comm.rank(), n);
      ASSERT_TRUE(comm.AllReduceSum(x.data(), n).ok());
      results[comm.rank()].push_back(std::move(x));
    }
  });
  for (size_t k = 0; k < sizes.size(); ++k) {
    const size_t n = sizes[k];
    std::vector<double> exact(n, 0.0), abs_sum(n, 0.0);
    for (int r = 0; r < size; ++r) {
      const std::vector<float> x = RankData(r, n);
      for (size_t i = 0; i < n; ++i) {
        exact[i] += x[i];
        abs_sum[i] += std::fabs(x[i]);
      }
    }
    ASSERT_EQ(results[0].size(), sizes.size());
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      // size - 1 float additions, each off by at most half an ulp of a
      // partial sum bounded by abs_sum.
      const double tol = size * 0.5 * FLT_EPSILON * abs_sum[i];
      if (std::fabs(results[0][k][i] - exact[i]) > tol) ++bad;
    }
    EXPECT_EQ(bad, 0u) << "n=" << n;
    for (int r = 1; r < size; ++r) {
      EXPECT_EQ(std::memcmp(results[r][k].data(), results[0][k].data(),
                            n * sizeof(float)),
                0)
          << "rank " << r << " differs from rank 0 at n=" << n;
    }
  }
  EXPECT_TRUE(dir_.Empty()) << "rendezvous key files left behind";
}

TEST_P(GroupTest, AllGatherIsRankMajor) {
  const int size = GetParam();
  RunGroup(dir_.path(), size, [&](Communicator& comm) {
    const int r = comm.rank();
    for (size_t n : {size_t{1}, size_t{97}, size_t{4099}}) {
      std::vector<float> in = RankData(r, n);
      std::vector<float> out(n * size, NAN);
      ASSERT_TRUE(comm.AllGather(in.data(), n, out.data()).ok());
      for (int q = 0; q < size; ++q) {
        const std::vector<float> want = RankData(q, n);
        EXPECT_EQ(
            std::memcmp(out.data() + q * n, want.data(), n * sizeof(float)), 0)
            << "block of rank " << q << ", n=" << n;
      }
      // In place: the input already sits in this rank's block.
      std::vector<float> inplace(n * size, NAN);
      std::copy(in.begin(), in.end(), inplace.begin() + r * n);
      ASSERT_TRUE(
          comm.AllGather(inplace.data() + r * n, n, inplace.data()).ok());
      EXPECT_EQ(inplace, out);
    }
  });
}

TEST_P(GroupTest, BroadcastFromEveryRoot) {
  const int size = GetParam();
  RunGroup(dir_.path(), size, [&](Communicator& comm) {
    for (int root = 0; root < size; ++root) {
      std::vector<uint8_t> buf(1001);
      for (size_t i = 0; i < buf.size(); ++i) {
        buf[i] = static_cast<uint8_t>(comm.rank() == root ? i * 31 + root : 0);
      }
      ASSERT_TRUE(comm.Broadcast(buf.data(), buf.size(), root).ok());
      for (size_t i = 0; i < buf.size(); ++i) {
        ASSERT_EQ(buf[i], static_cast<uint8_t>(i * 31 + root)) << i;
      }
    }
    uint8_t dummy = 0;
    EXPECT_TRUE(absl::IsInvalidArgument(comm.Broadcast(&dummy, 1, size)));
    EXPECT_TRUE(absl::IsInvalidArgument(comm.Broadcast(&dummy, 1, -1)));
    // Nothing was sent: the group is still usable.
    EXPECT_TRUE(comm.Barrier().ok());
  });
}

TEST_P(GroupTest, BroadcastStringOfEveryLength) {
  const int size = GetParam();
  RunGroup(dir_.path(), size, [&](Communicator& comm) {
    for (int root = 0; root < size; ++root) {
      for (size_t len : {size_t{0}, size_t{1}, size_t{1} << 20}) {
        std::string want(len, '\0');
        for (size_t i = 0; i < len; ++i)
          want[i] = static_cast<char>(i * 7 + root);
        std::string s = comm.rank() == root ? want : std::string(3, 'x');
        ASSERT_TRUE(comm.BroadcastString(&s, root).ok());
        EXPECT_EQ(s, want) << "root " << root << " len " << len;
      }
    }
  });
}

// Forwards everything but GatherStrings/ScatterStrings, so the base class's
// broadcast-based versions run (what NCCL groups use).
class DefaultStrings final : public Communicator {
 public:
  explicit DefaultStrings(Communicator& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  absl::Status AllReduceSum(float* data, size_t n) override {
    return c_.AllReduceSum(data, n);
  }
  absl::Status AllGather(const float* in, size_t n, float* out) override {
    return c_.AllGather(in, n, out);
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return c_.Broadcast(data, bytes, root);
  }
  absl::Status Barrier() override { return c_.Barrier(); }

 private:
  Communicator& c_;
};

// Rank r's string of round k: r * k bytes (rank 0: empty) of a pattern.
std::string RankString(int r, int k) {
  std::string s(static_cast<size_t>(r) * k * 1009, '\0');
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(i * 13 + r);
  return s;
}

void GatherAndScatter(Communicator& comm) {
  const int size = comm.size();
  for (int k = 0; k < 3; ++k) {
    for (int root = 0; root < size; ++root) {
      std::vector<std::string> all = {"stale"};
      ASSERT_TRUE(
          comm.GatherStrings(RankString(comm.rank(), k), root, &all).ok());
      if (comm.rank() == root) {
        ASSERT_EQ(all.size(), static_cast<size_t>(size));
        for (int r = 0; r < size; ++r) EXPECT_EQ(all[r], RankString(r, k));
      } else {
        EXPECT_TRUE(all.empty());
      }
      std::vector<std::string> parts;
      if (comm.rank() == root) {
        for (int r = 0; r < size; ++r) parts.push_back(RankString(r + 1, k));
      }
      std::string mine = "stale";
      ASSERT_TRUE(comm.ScatterStrings(parts, root, &mine).ok());
      EXPECT_EQ(mine, RankString(comm.rank() + 1, k));
    }
  }
  // Collectives still line up afterwards.
  std::string s = comm.rank() == 0 ? "after" : "";
  ASSERT_TRUE(comm.BroadcastString(&s, 0).ok());
  EXPECT_EQ(s, "after");
}

TEST_P(GroupTest, GatherAndScatterStrings) {
  RunGroup(dir_.path(), GetParam(),
           [&](Communicator& comm) { GatherAndScatter(comm); });
}

TEST_P(GroupTest, GatherAndScatterStringsByBroadcast) {
  RunGroup(dir_.path(), GetParam(), [&](Communicator& comm) {
    DefaultStrings d(comm);
    GatherAndScatter(d);
  });
}

TEST_P(GroupTest, BarrierWaitsForEveryRank) {
  const int size = GetParam();
  std::atomic<int> arrived{0};
  RunGroup(dir_.path(), size, [&](Communicator& comm) {
    for (int round = 1; round <= 3; ++round) {
      // The last rank is late every round.
      if (comm.rank() == size - 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
      }
      arrived.fetch_add(1);
      ASSERT_TRUE(comm.Barrier().ok());
      EXPECT_GE(arrived.load(), round * size);
      ASSERT_TRUE(comm.Barrier().ok());  // Nobody starts the next round early.
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, GroupTest, ::testing::Values(2, 3, 4),
                         [](const auto& info) {
                           return absl::StrCat("N", info.param);
                         });

TEST(GlooCommunicatorTest, MissingRankFailsWithinTimeout) {
  TempDir dir;
  const auto t0 = Clock::now();
  std::vector<absl::Status> statuses(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {  // Rank 2 of 3 never joins.
    threads.emplace_back([&, r] {
      statuses[r] =
          CreateGlooCommunicator(Options(dir.path(), r, 3, absl::Seconds(1)))
              .status();
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = SecondsSince(t0);
  for (const absl::Status& s : statuses) {
    EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  }
  EXPECT_LT(elapsed, 2.0);
  EXPECT_TRUE(dir.Empty()) << "key files left after a failed rendezvous";
}

TEST(GlooCommunicatorTest, StalledPeerTimesOutThenCommunicatorIsBroken) {
  TempDir dir;
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm =
          CreateGlooCommunicator(Options(dir.path(), r, 2, absl::Seconds(1)));
      ASSERT_TRUE(comm.ok()) << comm.status();
      if (r == 1) {  // Alive but never calls: rank 0 must not hang.
        while (!done.load())
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return;
      }
      std::vector<float> x(1000, 1.0f);
      const auto t0 = Clock::now();
      absl::Status s = (*comm)->AllReduceSum(x.data(), x.size());
      const double elapsed = SecondsSince(t0);
      EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
      EXPECT_GE(elapsed, 0.9);
      EXPECT_LT(elapsed, 2.0);
      // Broken from now on: fails fast.
      EXPECT_TRUE(absl::IsUnavailable((*comm)->Barrier()));
      done.store(true);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooCommunicatorTest, DeadPeerIsAnErrorNotAHang) {
  TempDir dir;
  std::vector<std::thread> threads;
  std::atomic<bool> gone{false};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm =
          CreateGlooCommunicator(Options(dir.path(), r, 2, absl::Seconds(2)));
      ASSERT_TRUE(comm.ok()) << comm.status();
      if (r == 1) {  // Closes its connections.
        comm->reset();
        gone.store(true);
        return;
      }
      while (!gone.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::vector<float> x(1 << 16, 1.0f);
      const auto t0 = Clock::now();
      absl::Status s = (*comm)->AllReduceSum(x.data(), x.size());
      EXPECT_TRUE(absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) << s;
      EXPECT_LT(SecondsSince(t0), 3.0);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooCommunicatorTest, GatherFromADeadPeerIsAnErrorNotAHang) {
  TempDir dir;
  std::vector<std::thread> threads;
  std::atomic<bool> gone{false};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm =
          CreateGlooCommunicator(Options(dir.path(), r, 2, absl::Seconds(2)));
      ASSERT_TRUE(comm.ok()) << comm.status();
      if (r == 1) {
        comm->reset();
        gone.store(true);
        return;
      }
      while (!gone.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      const auto t0 = Clock::now();
      std::vector<std::string> all;
      absl::Status s = (*comm)->GatherStrings("mine", 0, &all);
      EXPECT_TRUE(absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) << s;
      EXPECT_LT(SecondsSince(t0), 3.0);
      std::string mine;
      s = (*comm)->ScatterStrings({"a", "b"}, 0, &mine);
      EXPECT_TRUE(absl::IsUnavailable(s)) << s;  // broken from now on
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooCommunicatorTest, GroupsSharingADirectoryAreIsolatedByPrefix) {
  TempDir dir;
  std::thread a([&] {
    RunGroup(
        dir.path(), 2,
        [](Communicator& c) {
          float x = 1.0f;
          ASSERT_TRUE(c.AllReduceSum(&x, 1).ok());
          EXPECT_EQ(x, 2.0f);
        },
        "group-a");
  });
  std::thread b([&] {
    RunGroup(
        dir.path(), 3,
        [](Communicator& c) {
          float x = 1.0f;
          ASSERT_TRUE(c.AllReduceSum(&x, 1).ok());
          EXPECT_EQ(x, 3.0f);
        },
        "group-b");
  });
  a.join();
  b.join();
  // Key files are removed, so the same (dir, prefix) can be used again.
  RunGroup(
      dir.path(), 2, [](Communicator& c) { EXPECT_TRUE(c.Barrier().ok()); },
      "group-a");
}

TEST(GlooCommunicatorTest, StaleKeyFileIsFailedPrecondition) {
  TempDir dir;
  {  // What a rank killed mid-rendezvous leaves behind.
    gloo::rendezvous::FileStore store(dir.path());
    store.set("stale/0", {'x'});
  }
  GlooOptions o = Options(dir.path(), 0, 2, absl::Seconds(1));
  o.prefix = "stale";
  const auto t0 = Clock::now();
  absl::Status s = CreateGlooCommunicator(o).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_LT(SecondsSince(t0), 0.5);
}

TEST(GlooCommunicatorTest, InvalidOptionsAreRejected) {
  TempDir dir;
  auto invalid = [](const GlooOptions& o) {
    return absl::IsInvalidArgument(CreateGlooCommunicator(o).status());
  };
  EXPECT_TRUE(invalid(Options(dir.path(), 0, 0)));
  EXPECT_TRUE(invalid(Options(dir.path(), -1, 2)));
  EXPECT_TRUE(invalid(Options(dir.path(), 2, 2)));
  EXPECT_TRUE(invalid(Options("", 0, 2)));
  EXPECT_TRUE(invalid(Options(dir.path(), 0, 2, absl::ZeroDuration())));
  EXPECT_TRUE(invalid(Options("/proc/no/such/dir", 0, 2)));
  GlooOptions no_host = Options(dir.path(), 0, 2);
  no_host.host = "";
  EXPECT_TRUE(invalid(no_host));
}

TEST(GlooCommunicatorTest, SizeOneNeedsNoRendezvous) {
  GlooOptions o;  // rank 0, size 1, no directory.
  auto comm = CreateGlooCommunicator(o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->size(), 1);
  float x = 3.5f;
  EXPECT_TRUE((*comm)->AllReduceSum(&x, 1).ok());
  EXPECT_EQ(x, 3.5f);
}

TEST(SingleRankCommunicatorTest, EveryCollectiveIsTheIdentity) {
  std::unique_ptr<Communicator> comm = CreateSingleRankCommunicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  std::vector<float> x = {1.0f, -2.0f, 3.0f};
  ASSERT_TRUE(comm->AllReduceSum(x.data(), x.size()).ok());
  EXPECT_EQ(x, (std::vector<float>{1.0f, -2.0f, 3.0f}));
  std::vector<float> out(3, 0.0f);
  ASSERT_TRUE(comm->AllGather(x.data(), x.size(), out.data()).ok());
  EXPECT_EQ(out, x);
  ASSERT_TRUE(comm->AllGather(out.data(), out.size(), out.data()).ok());
  EXPECT_EQ(out, x);
  ASSERT_TRUE(comm->Broadcast(x.data(), sizeof(float) * x.size(), 0).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(comm->Broadcast(x.data(), 4, 1)));
  std::string s = "payload";
  ASSERT_TRUE(comm->BroadcastString(&s, 0).ok());
  EXPECT_EQ(s, "payload");
  EXPECT_TRUE(absl::IsInvalidArgument(comm->BroadcastString(&s, 1)));
  EXPECT_TRUE(comm->Barrier().ok());
  std::vector<std::string> all;
  ASSERT_TRUE(comm->GatherStrings("mine", 0, &all).ok());
  EXPECT_EQ(all, std::vector<std::string>{"mine"});
  std::string mine;
  ASSERT_TRUE(comm->ScatterStrings({"part"}, 0, &mine).ok());
  EXPECT_EQ(mine, "part");
  EXPECT_TRUE(absl::IsInvalidArgument(comm->ScatterStrings({}, 0, &mine)));
}

}  // namespace
}  // namespace latentkv::comm
