// The coordinator's gRPC services: the public latentkv.v1.Generation API and
// the internal Control service workers register with.
//
// Generate: validates the request, tokenizes (BOS + prompt), picks a worker
// by KV-aware routing (the prefix it holds vs its load; worker_registry.h),
// streams the worker's token ids back as text (complete UTF-8 only; stop
// strings applied here), and propagates the client's deadline and cancellation
// to the worker call. A worker that fails with UNAVAILABLE mid-stream is
// dropped and the request continues on another worker from the prompt plus the
// tokens already sent, so the client sees no duplicates. Thread-safety: gRPC
// calls the services from many threads.
#ifndef LATENTKV_COORDINATOR_COORDINATOR_SERVICE_H_
#define LATENTKV_COORDINATOR_COORDINATOR_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/auth/api_keys.h"
#include "coordinator/kv_index.h"
#include "coordinator/latency_stats.h"
#include "coordinator/worker_registry.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "model/config.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::coordinator {

struct CoordinatorOptions {
  std::string model_id;  // name reported by ListModels
  // Requests in flight (all workers) before RESOURCE_EXHAUSTED; default 512.
  int32_t max_inflight = 512;
  uint32_t default_max_tokens = 16;  // when a request leaves it unset
  std::chrono::milliseconds heartbeat_interval{500};  // told to workers
  std::chrono::milliseconds worker_timeout{3000};     // no heartbeat: removed
  int32_t max_attempts = 3;  // workers tried per request on UNAVAILABLE
  RoutingOptions routing;    // KV-aware by default (worker_registry.h)
  // API keys of the Generation service (common/auth/api_keys.h): its RPCs
  // answer UNAUTHENTICATED without metadata "authorization: Bearer <key>".
  // Null or empty: open. Health and reflection stay open either way.
  std::shared_ptr<const auth::ApiKeySet> api_keys;
};

// Bytes beyond which a text prompt cannot fit `context` tokens of
// `tokenizer`'s vocabulary, whatever its tokenization (a bound derived from
// the longest token, with a margin; at least 1 MiB).
int64_t MaxPromptBytes(const model::Tokenizer& tokenizer, int64_t context);

class Coordinator {
 public:
  Coordinator(const CoordinatorOptions& options, model::ModelConfig config,
              std::unique_ptr<model::Tokenizer> tokenizer);
  ~Coordinator();

  grpc::Service* generation_service() { return &generation_; }
  grpc::Service* control_service() { return &control_; }
  // Health reporting: services "readiness", "" and latentkv.v1.Generation
  // are SERVING while a worker is registered ("liveness" is main()'s). Call
  // after the server is built (before that, health is unavailable); null
  // detaches (a draining server stops updating its health).
  void AttachHealth(grpc::HealthCheckServiceInterface* health);
  // The model id reported by ListModels.
  const std::string& model_id() const { return options_.model_id; }
  // Registered workers now.
  size_t num_workers() const { return registry_.size(); }
  WorkerRegistry& registry() { return registry_; }
  // Generate calls admitted (past validation and --max_inflight) and not
  // finished.
  int32_t inflight() const { return inflight_.load(); }
  // KV-aware routing: requests sent to a worker holding part of their
  // prompt, and the prompt tokens it held; the index of what workers hold.
  uint64_t routed_prefix_hits() const { return routed_prefix_hits_.load(); }
  uint64_t routed_prefix_tokens() const { return routed_prefix_tokens_.load(); }
  const KvIndex& kv_index() const { return kv_index_; }
  // Stops the expiry thread.
  void Stop();

 private:
  class GenerationImpl final : public latentkv::v1::Generation::Service {
   public:
    explicit GenerationImpl(Coordinator* c) : c_(c) {}
    grpc::Status Generate(
        grpc::ServerContext* ctx, const latentkv::v1::GenerateRequest* req,
        grpc::ServerWriter<latentkv::v1::GenerateResponse>* writer) override;
    grpc::Status Tokenize(grpc::ServerContext* ctx,
                          const latentkv::v1::TokenizeRequest* req,
                          latentkv::v1::TokenizeResponse* resp) override;
    grpc::Status Detokenize(grpc::ServerContext* ctx,
                            const latentkv::v1::DetokenizeRequest* req,
                            latentkv::v1::DetokenizeResponse* resp) override;
    grpc::Status ListModels(grpc::ServerContext* ctx,
                            const latentkv::v1::ListModelsRequest* req,
                            latentkv::v1::ListModelsResponse* resp) override;
    // coordinator_embed.cc.
    grpc::Status Embed(grpc::ServerContext* ctx,
                       const latentkv::v1::EmbedRequest* req,
                       latentkv::v1::EmbedResponse* resp) override;

   private:
    Coordinator* c_;
  };
  class ControlImpl final : public latentkv::v1::Control::Service {
   public:
    explicit ControlImpl(Coordinator* c) : c_(c) {}
    grpc::Status Register(grpc::ServerContext* ctx,
                          const latentkv::v1::RegisterRequest* req,
                          latentkv::v1::RegisterResponse* resp) override;
    grpc::Status Heartbeat(grpc::ServerContext* ctx,
                           const latentkv::v1::HeartbeatRequest* req,
                           latentkv::v1::HeartbeatResponse* resp) override;
    grpc::Status GetServingStats(grpc::ServerContext* ctx,
                                 const latentkv::v1::ServingStatsRequest* req,
                                 latentkv::v1::ServingStats* resp) override;

   private:
    Coordinator* c_;
  };

  std::shared_ptr<latentkv::v1::Worker::Stub> StubFor(
      const std::string& address);
  // The request's prompt (token ids as given, or the tokenized text) into
  // `prompt`, checked with the shared admission rules; INVALID_ARGUMENT
  // naming the rule broken.
  // INVALID_ARGUMENT when `text` (a prompt or a Tokenize text, named
  // `what`) is over max_prompt_bytes_: it cannot fit the context, so it is
  // refused before the tokenizer runs.
  grpc::Status CheckTextBytes(const std::string& text, const char* what) const;
  // OK when API keys are off or the call carries a valid one.
  grpc::Status Authenticate(const grpc::ServerContext& ctx) const;
  grpc::Status AdmitPrompt(const latentkv::v1::GenerateRequest& req,
                           uint32_t max_tokens, float temperature, float top_p,
                           std::vector<int32_t>* prompt) const;
  void UpdateHealth();
  // --max_inflight: one slot, held until the guard goes; null (and
  // RESOURCE_EXHAUSTED in *st) when none is left.
  class InflightSlot {
   public:
    explicit InflightSlot(std::atomic<int32_t>* n) : n_(n) {}
    ~InflightSlot() { n_->fetch_sub(1); }
    InflightSlot(const InflightSlot&) = delete;
    InflightSlot& operator=(const InflightSlot&) = delete;

   private:
    std::atomic<int32_t>* n_;
  };
  std::unique_ptr<InflightSlot> TakeInflightSlot(grpc::Status* st);
  // A worker call failed UNAVAILABLE: the worker leaves the registry and
  // the KV index (the request moves on to another).
  void DropFailedWorker(const std::string& worker_id, const grpc::Status& st,
                        const std::string& request_id);
  // What a request gets when no worker (left) could take it.
  static grpc::Status NoWorkerStatus(const std::set<std::string>& tried);
  void ExpiryLoop();

  CoordinatorOptions options_;
  model::ModelConfig config_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  // Text prompts longer than this cannot fit the context whatever their
  // tokenization (MaxPromptBytes): refused before the tokenizer runs.
  int64_t max_prompt_bytes_ = 0;
  WorkerRegistry registry_;
  KvIndex kv_index_;        // the workers' local prefix caches
  LatencyTracker latency_;  // TTFT / TPOT / E2E of completed requests
  GenerationImpl generation_{this};
  ControlImpl control_{this};
  std::atomic<int32_t> inflight_{0};
  std::atomic<uint64_t> next_request_{0};
  // Routes to a worker holding part of the prompt, and the tokens it held.
  std::atomic<uint64_t> routed_prefix_hits_{0}, routed_prefix_tokens_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::map<std::string, std::shared_ptr<latentkv::v1::Worker::Stub>>
      stubs_;  // by address; guarded by mu_
  grpc::HealthCheckServiceInterface* health_ = nullptr;  // guarded by mu_
  std::thread expiry_;
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_COORDINATOR_SERVICE_H_
