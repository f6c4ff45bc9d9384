// The worker's registration with the coordinator (Registrar, declared in
// worker_service.h): register, heartbeat with stats and prefix-cache events,
// re-register when forgotten.
#include <chrono>

#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "worker/server/worker_service.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

Registrar::Registrar(const RegistrarOptions& options, Engine* engine)
    : options_(options), engine_(engine) {
  thread_ = std::thread([this] { Loop(); });
}

Registrar::~Registrar() { Stop(); }

void Registrar::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Registrar::Loop() {
  auto channel = auth::NewInternalChannel(options_.coordinator);
  auto stub = pb::Control::NewStub(channel);
  bool registered = false;
  auto period = options_.heartbeat;
  // Local prefix cache events: the newest the coordinator acknowledged, and
  // whether it needs the whole key set (new registration, or it missed some).
  uint64_t prefix_acked = 0;
  bool prefix_snapshot = true;
  const model::ModelConfig& c = engine_->config();
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (registered) cv_.wait_for(lock, period, [&] { return stop_; });
      if (stop_) return;
    }
    grpc::ClientContext ctx;
    auth::AttachClusterSecret(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(2));
    if (!registered) {
      pb::RegisterRequest req;
      req.set_worker_id(options_.worker_id);
      req.set_address(options_.address);
      req.set_model_id(options_.model_id);
      // The context this worker can serve: a sequence longer than its KV
      // memory holds could never run here.
      req.set_max_context(static_cast<uint32_t>(std::min<int64_t>(
          c.max_position_embeddings, engine_->max_sequence_tokens())));
      req.set_vocab_size(c.vocab_size);
      req.set_kv_bytes_per_token(c.KvValuesPerToken() * sizeof(float));
      req.set_role(options_.role);
      WorkerService::FillStats(engine_->Stats(), req.mutable_stats());
      pb::RegisterResponse resp;
      grpc::Status s = stub->Register(&ctx, req, &resp);
      if (s.ok()) {
        registered = true;
        if (options_.on_registration) options_.on_registration(true);
        prefix_snapshot = true;
        if (resp.heartbeat_interval_ms() > 0) {
          period = std::chrono::milliseconds(resp.heartbeat_interval_ms());
        }
      } else {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(200),
                     [&] { return stop_; });
      }
      continue;
    }
    pb::HeartbeatRequest req;
    req.set_worker_id(options_.worker_id);
    WorkerService::FillStats(engine_->Stats(), req.mutable_stats());
    if (engine_->prefix_caching()) {
      const PrefixCacheUpdate u =
          engine_->PrefixUpdates(prefix_acked, prefix_snapshot);
      pb::PrefixCacheUpdate* pu = req.mutable_prefix_cache();
      pu->set_block_tokens(u.block_tokens);
      pu->set_snapshot(u.snapshot);
      pu->set_first_seq(u.first_seq);
      pu->set_last_seq(u.last_seq);
      for (const PrefixEvent& ev : u.events) {
        pb::PrefixCacheEvent* pe = pu->add_events();
        pe->set_stored(ev.stored);
        pe->mutable_keys()->Add(ev.keys.begin(), ev.keys.end());
      }
    }
    pb::HeartbeatResponse resp;
    grpc::Status s = stub->Heartbeat(&ctx, req, &resp);
    if (!s.ok() || !resp.known()) {
      registered = false;
      if (options_.on_registration) options_.on_registration(false);
    } else if (resp.prefix_cache_resync()) {
      prefix_snapshot = true;
    } else if (req.has_prefix_cache()) {
      prefix_acked = resp.prefix_cache_ack();
      prefix_snapshot = false;
    }
  }
}

}  // namespace latentkv::worker
