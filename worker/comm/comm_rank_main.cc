// comm_rank_main: one rank of a Gloo group as its own process. Used by
// comm_process_test to prove the collectives work across processes, and by
// hand to time them:
//   comm_rank_main --rank=R --size=N --dir=D --prefix=P --mode=MODE
// Modes:
//   check   run every collective on deterministic data and verify the
//           results exactly (integer-valued floats); exit 0 when all match.
//   die     join the group, then exit at once (exit code 0) without calling
//           anything else: the peers see a dead rank.
//   survive join, then call AllReduceSum expecting the peers to have died:
//           exit 0 if it fails with UNAVAILABLE or DEADLINE_EXCEEDED.
//   bench   time AllReduceSum of --floats floats (median of --iters calls
//           after warm-up); rank 0 prints "allreduce n=<floats> median_us=..".
// Exit codes: 0 success, 1 a failed check, 2 bad flags or group creation.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo_communicator.h"

ABSL_FLAG(int, rank, 0, "This process's rank in [0, size)");
ABSL_FLAG(int, size, 2, "Number of ranks");
ABSL_FLAG(std::string, dir, "", "Rendezvous (FileStore) directory");
ABSL_FLAG(std::string, prefix, "", "Group id within the directory");
ABSL_FLAG(std::string, host, "127.0.0.1", "Interface address to listen on");
ABSL_FLAG(int, timeout_ms, 10000, "Rendezvous and per-call timeout, ms");
ABSL_FLAG(std::string, mode, "check", "check | die | survive | bench");
ABSL_FLAG(int64_t, floats, 1, "bench: floats per AllReduceSum");
ABSL_FLAG(int, iters, 200, "bench: timed calls");

namespace {

using latentkv::comm::Communicator;

#define CHECK_OK_OR_FAIL(expr)                                      \
  do {                                                              \
    if (absl::Status _s = (expr); !_s.ok()) {                       \
      std::fprintf(stderr, "rank %d: %s: %s\n", comm.rank(), #expr, \
                   _s.ToString().c_str());                          \
      return 1;                                                     \
    }                                                               \
  } while (0)

#define EXPECT_OR_FAIL(cond)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "rank %d: check failed: %s\n", comm.rank(), #cond); \
      return 1;                                                                \
    }                                                                          \
  } while (0)

int Check(Communicator& comm) {
  const int r = comm.rank(), n_ranks = comm.size();
  for (size_t n : {size_t{1}, size_t{97}, size_t{4099}, size_t{1} << 18}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i)
      x[i] = static_cast<float>((i % 1000) * (r + 1));
    CHECK_OK_OR_FAIL(comm.AllReduceSum(x.data(), n));
    const int tri = n_ranks * (n_ranks + 1) / 2;
    for (size_t i = 0; i < n; ++i) {
      EXPECT_OR_FAIL(x[i] == static_cast<float>((i % 1000) * tri));
    }

    std::vector<float> in(n), out(n * n_ranks, -1.0f);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<float>(r * 1000000 + i);
    CHECK_OK_OR_FAIL(comm.AllGather(in.data(), n, out.data()));
    for (int q = 0; q < n_ranks; ++q) {
      for (size_t i = 0; i < n; ++i) {
        EXPECT_OR_FAIL(out[q * n + i] == static_cast<float>(q * 1000000 + i));
      }
    }
  }
  for (int root = 0; root < n_ranks; ++root) {
    std::vector<unsigned char> buf(1001, static_cast<unsigned char>(r));
    CHECK_OK_OR_FAIL(comm.Broadcast(buf.data(), buf.size(), root));
    for (unsigned char c : buf) EXPECT_OR_FAIL(c == root);
    for (size_t len : {size_t{0}, size_t{1}, size_t{1} << 20}) {
      std::string s = r == root
                          ? std::string(len, static_cast<char>('a' + root))
                          : std::string("junk");
      CHECK_OK_OR_FAIL(comm.BroadcastString(&s, root));
      EXPECT_OR_FAIL(s == std::string(len, static_cast<char>('a' + root)));
    }
  }
  CHECK_OK_OR_FAIL(comm.Barrier());
  return 0;
}

int Survive(Communicator& comm) {
  // Give the dying peers time to exit so the failure is a lost connection.
  usleep(200 * 1000);
  std::vector<float> x(1024, 1.0f);
  absl::Status s = comm.AllReduceSum(x.data(), x.size());
  std::fprintf(stderr, "rank %d: AllReduceSum after peer death: %s\n",
               comm.rank(), s.ToString().c_str());
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) return 0;
  return 1;
}

int Bench(Communicator& comm) {
  const size_t n = static_cast<size_t>(absl::GetFlag(FLAGS_floats));
  const int iters = std::max(1, absl::GetFlag(FLAGS_iters));
  std::vector<float> x(n, 1.0f);
  std::vector<double> us;
  for (int i = 0; i < iters + 10; ++i) {
    std::fill(x.begin(), x.end(), 1.0f);
    CHECK_OK_OR_FAIL(comm.Barrier());
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_OK_OR_FAIL(comm.AllReduceSum(x.data(), n));
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= 10)
      us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  if (comm.rank() == 0) {
    std::printf(
        "allreduce ranks=%d n=%zu bytes=%zu median_us=%.1f p10_us=%.1f "
        "p90_us=%.1f\n",
        comm.size(), n, n * sizeof(float), us[us.size() / 2],
        us[us.size() / 10], us[us.size() * 9 / 10]);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  latentkv::comm::GlooOptions options;
  options.rank = absl::GetFlag(FLAGS_rank);
  options.size = absl::GetFlag(FLAGS_size);
  options.rendezvous_dir = absl::GetFlag(FLAGS_dir);
  options.prefix = absl::GetFlag(FLAGS_prefix);
  options.host = absl::GetFlag(FLAGS_host);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  auto comm = latentkv::comm::CreateGlooCommunicator(options);
  if (!comm.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", options.rank,
                 comm.status().ToString().c_str());
    return 2;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "check") return Check(**comm);
  if (mode == "die") _exit(0);
  if (mode == "survive") return Survive(**comm);
  if (mode == "bench") return Bench(**comm);
  std::fprintf(stderr, "unknown --mode=%s\n", mode.c_str());
  return 2;
}
