// The load generator's gRPC client: many concurrent server-streaming
// Generate calls driven by one CompletionQueue (the async API), so hundreds
// of streams need no thread each. `cq_threads` threads drain the queue and
// stamp every message with the steady clock the moment its read completes.
//
// Thread-safety: Start may be called from any thread; `done` callbacks run
// on the client's queue threads (never inside Start). The destructor waits
// for every started call to end.
#ifndef LATENTKV_TOOLS_BENCH_CLIENT_H_
#define LATENTKV_TOOLS_BENCH_CLIENT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace latentkv::bench {

struct ClientOptions {
  std::string address;  // host:port of a latentkv coordinator
  // HTTP/2 connections the streams are spread over (round robin), >= 1.
  int32_t channels = 1;
  int32_t cq_threads = 1;  // threads draining the completion queue, >= 1
  latentkv::v1::KvCacheMode kv_cache_mode =
      latentkv::v1::KV_CACHE_MODE_SERVER_DEFAULT;
  float temperature = 0.0f;      // 0: greedy; otherwise seeded by request index
  bool ignore_eos = true;        // so output lengths are what was asked
  double request_timeout_s = 0;  // per-request deadline; 0: none
  bool keep_token_ids = false;   // fill RequestRecord::token_ids
};

// The gRPC name of a status code ("OK", "RESOURCE_EXHAUSTED", ...).
std::string StatusCodeName(grpc::StatusCode code);

class StreamingClient {
 public:
  using Clock = std::chrono::steady_clock;
  // Runs with the finished record: status, messages, metrics and usage
  // filled in, the rest as given to Start.
  using Done = std::function<void(RequestRecord)>;

  explicit StreamingClient(const ClientOptions& options);
  ~StreamingClient();
  StreamingClient(const StreamingClient&) = delete;
  StreamingClient& operator=(const StreamingClient&) = delete;

  // Sends `spec` now (prompt as token ids, max_tokens = output_len).
  // `record` carries the caller's fields (index, scheduled_s, sent_s, ...).
  void Start(const RequestSpec& spec, RequestRecord record, Done done);
  // Calls started and not yet ended.
  int64_t in_flight() const { return in_flight_.load(); }
  // For unary calls (Tokenize, ListModels).
  latentkv::v1::Generation::Stub& stub() { return *stubs_[0]; }

 private:
  struct Call;
  void Drain();

  ClientOptions options_;
  std::vector<std::unique_ptr<latentkv::v1::Generation::Stub>> stubs_;
  std::atomic<uint64_t> next_stub_{0};
  grpc::CompletionQueue cq_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> in_flight_{0};
  std::mutex mu_;
  std::condition_variable idle_;  // in_flight_ reached 0
};

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_CLIENT_H_
