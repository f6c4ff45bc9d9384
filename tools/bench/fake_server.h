// Test and measurement support: an in-process latentkv.v1.Generation server
// with scripted behaviour (no model), on 127.0.0.1 with an ephemeral port.
// It uses gRPC's callback API and timer alarms, so thousands of paced
// streams cost no thread each: it exists to check what the benchmark
// client measures against a known timeline, and that the client is not the
// bottleneck at hundreds of streams.
//
// Generate streams max_tokens token ids (ids 0, 1, 2, ...), `tokens_per_
// message` per message, the first after `first_delay` and each next one
// `interval` after the previous write completed; the last message carries
// FINISH_REASON_LENGTH and usage. Every `fail_every`-th request (by arrival,
// counting from 1) instead fails at once with RESOURCE_EXHAUSTED.
// Tokenize maps each byte b to id 3 + b % (vocab - 3), after BOS (1) when
// asked. ListModels reports `vocab_size` and `max_context`.
#ifndef LATENTKV_TOOLS_BENCH_FAKE_SERVER_H_
#define LATENTKV_TOOLS_BENCH_FAKE_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"

namespace latentkv::bench {

struct FakeServerOptions {
  int32_t tokens_per_message = 1;            // >= 1
  std::chrono::microseconds first_delay{0};  // before the first message
  std::chrono::microseconds interval{0};     // between messages
  int32_t fail_every = 0;                    // 0: no request fails
  int32_t vocab_size = 512;
  int32_t max_context = 4096;
};

class FakeGenerationServer {
 public:
  explicit FakeGenerationServer(const FakeServerOptions& options);
  ~FakeGenerationServer();

  const std::string& address() const { return address_; }
  int64_t requests() const { return requests_.load(); }  // Generate calls
  int64_t messages() const { return messages_.load(); }  // messages written

 private:
  class Service;
  class Stream;

  FakeServerOptions options_;
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> messages_{0};
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_FAKE_SERVER_H_
