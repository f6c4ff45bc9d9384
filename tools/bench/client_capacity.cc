// latentkv_bench_client_capacity: does the benchmark client keep up with
// hundreds of streams? An in-process fake server (tools/bench/fake_server.h)
// paces every stream at one token per --interval_ms; the client runs
// `streams` concurrent requests of --tokens tokens. If the client kept up,
// the ITL it measures stays at the server's interval and the message rate
// at streams * 1000 / interval_ms. Client and server share this process
// (and the machine's cores), so the numbers are a lower bound on the client.
#include <sys/resource.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tools/bench/client.h"
#include "tools/bench/fake_server.h"
#include "tools/bench/phase.h"

ABSL_FLAG(std::string, streams, "100,200,400,800",
          "Concurrent streams, one run each");
ABSL_FLAG(int, interval_ms, 20, "Server's gap between a stream's tokens");
ABSL_FLAG(int, tokens, 50, "Tokens per request");
ABSL_FLAG(int, cq_threads, 1, "Client completion-queue threads");

namespace lk = latentkv::bench;

namespace {

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec +
         (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int interval = absl::GetFlag(FLAGS_interval_ms);
  lk::FakeServerOptions fo;
  fo.interval = std::chrono::milliseconds(interval);
  lk::FakeGenerationServer server(fo);
  std::printf(
      "streams  tokens  ideal_msg/s  msg/s  itl_mean_ms  itl_p99_ms  "
      "ttft_p99_ms  cpu_s/wall_s\n");
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_streams), ',')) {
    int streams = 0;
    if (!absl::SimpleAtoi(s, &streams) || streams < 1) {
      std::fprintf(stderr, "bad --streams entry '%s'\n",
                   std::string(s).c_str());
      return 2;
    }
    lk::ClientOptions co;
    co.address = server.address();
    co.cq_threads = absl::GetFlag(FLAGS_cq_threads);
    lk::StreamingClient client(co);
    lk::PromptSource src;
    src.vocab_size = 512;
    lk::WorkloadOptions w;
    w.input_len = 16;
    w.output_len = absl::GetFlag(FLAGS_tokens);
    lk::Workload workload(w, &src);
    lk::PhaseOptions po;
    po.concurrency = streams;
    po.num_requests = streams;
    po.progress = false;
    const double cpu0 = CpuSeconds();
    absl::StatusOr<lk::PhaseResult> r = lk::RunPhase(client, workload, po);
    const double cpu = CpuSeconds() - cpu0;
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    lk::PhaseSummary sum = lk::SummarizePhase(r->records, r->duration_s, {});
    int64_t msgs = 0;
    for (const auto& rec : r->records) msgs += rec.messages.size();
    std::printf("%7d  %6lld  %11.0f  %5.0f  %11.2f  %10.2f  %11.2f  %.2f\n",
                streams, static_cast<long long>(sum.output_tokens),
                streams * 1000.0 / interval, msgs / r->duration_s,
                sum.itl_ms.mean, sum.itl_ms.p99, sum.ttft_ms.p99,
                cpu / r->duration_s);
    if (sum.failed > 0) {
      std::fprintf(stderr, "%lld requests failed\n",
                   static_cast<long long>(sum.failed));
      return 1;
    }
  }
  return 0;
}
