// The worker's gRPC face: the internal latentkv.v1.Worker service over an
// Engine, and the client that registers the worker with the coordinator and
// sends heartbeats.
//
// Generate streams token ids as the engine produces them (several per message
// when they are ready together). Client cancellation or an expired deadline
// cancels the request in the engine, which frees its KV pages.
// Thread-safety: gRPC calls the service from many threads; the Engine is
// thread-safe.
#ifndef LATENTKV_WORKER_SERVER_WORKER_SERVICE_H_
#define LATENTKV_WORKER_SERVER_WORKER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "worker/engine/engine.h"

namespace latentkv::worker {

// absl -> gRPC status (same code and message).
grpc::Status ToGrpcStatus(const absl::Status& s);

class WorkerService final : public latentkv::v1::Worker::Service {
 public:
  explicit WorkerService(Engine* engine) : engine_(engine) {}

  grpc::Status Generate(
      grpc::ServerContext* ctx, const latentkv::v1::WorkerGenerateRequest* req,
      grpc::ServerWriter<latentkv::v1::WorkerGenerateResponse>* writer)
      override;
  grpc::Status GetStats(grpc::ServerContext* ctx,
                        const latentkv::v1::GetStatsRequest* req,
                        latentkv::v1::WorkerStats* resp) override;

  // Stats in proto form (also sent with heartbeats).
  static void FillStats(const EngineStats& s, latentkv::v1::WorkerStats* out);

 private:
  Engine* engine_;
  std::atomic<uint64_t> next_id_{0};
};

struct RegistrarOptions {
  std::string coordinator;  // host:port of the coordinator's Control service
  std::string worker_id;    // unique id of this worker
  std::string address;      // host:port where this worker serves
  std::string model_id;     // model name reported to the coordinator
  // Heartbeat period when the coordinator does not say; default 500 ms.
  std::chrono::milliseconds heartbeat{500};
};

// Registers with the coordinator and sends heartbeats on its own thread,
// re-registering when the coordinator forgets the worker (restart) or was
// unreachable. Stop() ends the thread.
class Registrar {
 public:
  Registrar(const RegistrarOptions& options, Engine* engine);
  ~Registrar();
  void Stop();

 private:
  void Loop();

  RegistrarOptions options_;
  Engine* engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_WORKER_SERVICE_H_
