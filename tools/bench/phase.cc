#include "tools/bench/phase.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

namespace latentkv::bench {
namespace {

using Clock = StreamingClient::Clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Shared between the dispatch loop, the client's callbacks and the
// progress printer; everything guarded by mu.
struct PhaseState {
  std::mutex mu;
  std::condition_variable cv;        // a request ended
  std::condition_variable progress;  // the phase ended
  std::vector<RequestRecord> records;
  int64_t in_flight = 0;
  int64_t sent = 0;
  int64_t failed = 0;
  int64_t output_tokens = 0;
  Clock::time_point last_end;
  bool done = false;  // stops the progress printer
};

void PrintProgress(PhaseState& st, const PhaseOptions& o, Clock::time_point t0,
                   bool tty, bool final_line) {
  const double el = Seconds(Clock::now() - t0);
  const int64_t completed = static_cast<int64_t>(st.records.size()) - st.failed;
  std::fprintf(
      stderr,
      "%s[%s] %.1fs sent %lld%s completed %lld failed %lld "
      "in flight %lld | %.2f req/s %.1f tok/s%s",
      tty ? "\r" : "", o.label.c_str(), el, static_cast<long long>(st.sent),
      o.num_requests > 0 ? ("/" + std::to_string(o.num_requests)).c_str() : "",
      static_cast<long long>(completed), static_cast<long long>(st.failed),
      static_cast<long long>(st.in_flight), el > 0 ? completed / el : 0.0,
      el > 0 ? st.output_tokens / el : 0.0, tty && !final_line ? "   " : "\n");
  std::fflush(stderr);
}

}  // namespace

absl::StatusOr<PhaseResult> RunPhase(StreamingClient& client,
                                     Workload& workload,
                                     const PhaseOptions& o) {
  if (o.num_requests <= 0 && o.duration_s <= 0) {
    return absl::InvalidArgumentError(
        "a phase needs num_requests > 0 or duration_s > 0");
  }
  if (o.concurrency < 1) {
    return absl::InvalidArgumentError("concurrency must be >= 1");
  }
  PhaseState st;
  const Clock::time_point t0 = Clock::now();
  st.last_end = t0;
  const Clock::time_point stop_at =
      o.duration_s > 0 ? t0 + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(o.duration_s))
                       : Clock::time_point::max();

  std::thread progress;
  if (o.progress) {
    progress = std::thread([&] {
      const bool tty = isatty(STDERR_FILENO) != 0;
      const auto period = std::chrono::milliseconds(tty ? 500 : 2000);
      std::unique_lock<std::mutex> lock(st.mu);
      while (true) {
        st.progress.wait_for(lock, period, [&] { return st.done; });
        if (st.done) break;
        PrintProgress(st, o, t0, tty, /*final_line=*/false);
      }
    });
  }

  for (int64_t i = 0; o.num_requests <= 0 || i < o.num_requests; ++i) {
    RequestSpec spec = workload.Next();
    const Clock::time_point due =
        t0 + std::chrono::duration_cast<Clock::duration>(
                 std::chrono::duration<double>(spec.arrival_s));
    if (due >= stop_at) break;
    std::this_thread::sleep_until(due);
    std::unique_lock<std::mutex> lock(st.mu);
    st.cv.wait_until(lock, stop_at,
                     [&] { return st.in_flight < o.concurrency; });
    const Clock::time_point now = Clock::now();
    if (now >= stop_at) break;
    ++st.in_flight;
    ++st.sent;
    lock.unlock();
    RequestRecord base;
    base.index = spec.index;
    base.prompt_tokens = static_cast<int32_t>(spec.prompt_token_ids.size());
    base.max_tokens = spec.output_len;
    base.scheduled_s = spec.arrival_s;
    base.sent_s = Seconds(now - t0);
    client.Start(spec, std::move(base), [&st](RequestRecord r) {
      const Clock::time_point end = Clock::now();
      std::lock_guard<std::mutex> lock(st.mu);
      if (!r.ok()) ++st.failed;
      st.output_tokens += r.metrics.output_tokens;
      st.records.push_back(std::move(r));
      st.last_end = std::max(st.last_end, end);
      --st.in_flight;
      st.cv.notify_all();
    });
  }
  PhaseResult result;
  {
    std::unique_lock<std::mutex> lock(st.mu);
    st.cv.wait(lock, [&] { return st.in_flight == 0; });
    st.done = true;
    st.progress.notify_all();
    if (o.progress) {
      PrintProgress(st, o, t0, isatty(STDERR_FILENO) != 0, /*final_line=*/true);
    }
    result.records = std::move(st.records);
    result.duration_s = Seconds(st.last_end - t0);
  }
  if (progress.joinable()) progress.join();
  std::sort(result.records.begin(), result.records.end(),
            [](const RequestRecord& a, const RequestRecord& b) {
              return a.index < b.index;
            });
  return result;
}

}  // namespace latentkv::bench
