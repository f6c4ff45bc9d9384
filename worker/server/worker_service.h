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
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "worker/engine/engine.h"
#include "worker/engine/token_constraint.h"
#include "worker/server/kv_source.h"
#include "worker/server/prefix_cache.h"

namespace latentkv::worker {

// absl -> gRPC status (same code and message).
grpc::Status ToGrpcStatus(const absl::Status& s);

struct WorkerServiceOptions {
  // Tensor-parallel size of this worker's group (part of the KV layout a
  // transfer must match). Default 1.
  int tp_size = 1;
  // Bound on a remote prefill (Worker.Prefill call) before falling back to
  // prefilling here. Default 30 s.
  absl::Duration prefill_timeout = absl::Seconds(30);
  // The shared KV store as a prefix cache, or null (not owned).
  StorePrefixCache* prefix_cache = nullptr;
  // Compiles requests' structured output (not owned); null: such requests
  // fail with FAILED_PRECONDITION.
  const ConstraintCompiler* constraints = nullptr;
  // Rank-to-rank transfers (kv_source.h; not owned). A prefill group of
  // several ranks with parking answers a Prefill that allows it with where
  // its ranks parked the KV: rank r at rank_addresses[r] (rank 0: "", the
  // address the caller used) holding its KV-head range. A decode worker
  // pulls its heads (the leader's) with kv_puller. Null / empty: rows
  // stream through the prefill leader.
  KvParking* kv_parking = nullptr;
  RankKvPuller* kv_puller = nullptr;
  std::vector<std::string> rank_addresses;
};

// Sets g->constraint from sp.structured_output (nothing when unset):
// FailedPrecondition without a compiler, else what Compile says.
absl::Status AttachConstraint(const latentkv::v1::SamplingParams& sp,
                              const ConstraintCompiler* compiler,
                              GenerationRequest* g);

class WorkerService final : public latentkv::v1::Worker::Service {
 public:
  explicit WorkerService(Engine* engine, WorkerServiceOptions options = {})
      : engine_(engine), options_(options) {}

  grpc::Status Generate(
      grpc::ServerContext* ctx, const latentkv::v1::WorkerGenerateRequest* req,
      grpc::ServerWriter<latentkv::v1::WorkerGenerateResponse>* writer)
      override;
  grpc::Status GetStats(grpc::ServerContext* ctx,
                        const latentkv::v1::GetStatsRequest* req,
                        latentkv::v1::WorkerStats* resp) override;
  grpc::Status Prefill(
      grpc::ServerContext* ctx, const latentkv::v1::PrefillRequest* req,
      grpc::ServerWriter<latentkv::v1::PrefillResponse>* writer) override;

  // Stats in proto form (also sent with heartbeats).
  static void FillStats(const EngineStats& s, latentkv::v1::WorkerStats* out);

 private:
  // Takes the prompt's KV from `req->prefill_worker()` into `g`; false (and
  // counted) when the transfer failed and the prompt is prefilled here.
  // Sets *stop when the first token already ended the request.
  bool TakeRemotePrefill(const latentkv::v1::WorkerGenerateRequest& req,
                         GenerationRequest* g, bool* stop);
  // Counts an arrived transfer: `kv` is this rank's KV heads of it (a
  // share of the group's) and `bytes` what this rank moved.
  void CountTransfer(const KvSnapshot& kv, int64_t bytes);

  Engine* engine_;
  WorkerServiceOptions options_;
  std::atomic<uint64_t> next_id_{0};
  std::atomic<uint64_t> transfers_{0}, transfers_pulled_{0}, transfer_bytes_{0},
      transfer_full_bytes_{0}, transfer_fallbacks_{0};
};

struct RegistrarOptions {
  std::string coordinator;     // host:port of the coordinator's Control service
  std::string worker_id;       // unique id of this worker
  std::string address;         // host:port where this worker serves
  std::string model_id;        // model name reported to the coordinator
  std::string role = "mixed";  // mixed | prefill | decode
  // Heartbeat period when the coordinator does not say; default 500 ms.
  std::chrono::milliseconds heartbeat{500};
  // Called on the registrar's thread when the worker becomes registered
  // (true) or the coordinator stops knowing it (false), e.g. for readiness.
  // Null (default): none.
  std::function<void(bool registered)> on_registration;
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
