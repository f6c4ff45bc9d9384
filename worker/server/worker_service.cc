#include "worker/server/worker_service.h"

#include <algorithm>
#include <deque>

#include "absl/strings/str_cat.h"
#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "common/logit_controls_proto.h"
#include "worker/server/kv_transfer.h"
#include "worker/tp/tp_kv.h"

namespace latentkv::worker {
namespace {

namespace pb = ::latentkv::v1;

// Events of one request, handed from the engine thread to the RPC thread.
class EventQueue {
 public:
  void Push(const GenerationEvent& e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(e);
    cv_.notify_one();
  }
  // Waits up to `timeout` for events and takes them all.
  std::deque<GenerationEvent> Take(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
    std::deque<GenerationEvent> out;
    out.swap(events_);
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
};

pb::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return pb::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return pb::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return pb::FINISH_REASON_CANCELLED;
    case FinishReason::kNone:
      break;
  }
  return pb::FINISH_REASON_UNSPECIFIED;
}

// The engine request for a prompt, sampling parameters and KV cache mode
// from the wire (max_new_tokens left to the caller).
GenerationRequest FromProto(
    std::string id, const google::protobuf::RepeatedField<int32_t>& prompt,
    const pb::SamplingParams& sp, pb::KvCacheMode mode) {
  GenerationRequest g;
  g.id = std::move(id);
  g.prompt.assign(prompt.begin(), prompt.end());
  g.sampling.temperature = sp.temperature();
  g.sampling.top_p = sp.top_p() == 0.0f ? 1.0f : sp.top_p();
  g.sampling.top_k = static_cast<int32_t>(sp.top_k());
  g.sampling.seed = sp.seed();
  g.sampling.controls = LogitControlsFromProto(sp);
  g.sampling.logprobs = LogprobsCountFromProto(sp);
  g.sampling.prompt_logprobs = sp.prompt_logprobs();
  g.ignore_eos = sp.ignore_eos();
  switch (mode) {
    case pb::KV_CACHE_MODE_FULL:
      g.kv_mode = KvMode::kFull;
      break;
    case pb::KV_CACHE_MODE_COMPRESSED:
      g.kv_mode = KvMode::kCompressed;
      break;
    default:
      g.kv_mode = KvMode::kServerDefault;
  }
  return g;
}

}  // namespace

absl::Status AttachConstraint(const pb::SamplingParams& sp,
                              const ConstraintCompiler* compiler,
                              GenerationRequest* g) {
  if (!sp.has_structured_output()) return absl::OkStatus();
  if (absl::Status v = ValidateStructuredOutput(sp); !v.ok()) return v;
  const pb::StructuredOutput& so = sp.structured_output();
  ConstraintSpec spec;
  switch (so.kind_case()) {
    case pb::StructuredOutput::kJsonSchema:
      spec = {ConstraintKind::kJsonSchema, so.json_schema()};
      break;
    case pb::StructuredOutput::kJsonObject:
      spec = {ConstraintKind::kJsonObject, ""};
      break;
    case pb::StructuredOutput::kRegex:
      spec = {ConstraintKind::kRegex, so.regex()};
      break;
    case pb::StructuredOutput::kLark:
      spec = {ConstraintKind::kLark, so.lark()};
      break;
    default:
      return absl::InvalidArgumentError("structured_output has no kind set");
  }
  if (compiler == nullptr) {
    return absl::FailedPreconditionError(
        "structured output is not available on this server (llguidance is "
        "not installed: tools/fetch_llguidance.sh)");
  }
  auto c = compiler->Compile(spec);
  if (!c.ok()) return c.status();
  g->constraint = std::move(*c);
  return absl::OkStatus();
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

void WorkerService::FillStats(const EngineStats& s, pb::WorkerStats* out) {
  out->set_running(s.running);
  out->set_waiting(s.waiting);
  out->set_kv_pages_in_use(s.kv_pages_in_use);
  out->set_kv_pages_total(s.kv_pages_total);
  out->set_kv_bytes_in_use(s.kv_bytes_in_use);
  out->set_kv_bytes_capacity(s.kv_bytes_capacity);
  out->set_steps(s.steps);
  out->set_tokens_generated(s.tokens_generated);
  out->set_preemptions(s.preemptions);
  out->set_kv_evicted_slots(s.kv_evicted_slots);
  for (int64_t b : s.kv_layer_bytes_in_use) out->add_kv_layer_bytes_in_use(b);
  out->set_kv_imports(s.kv_imports);
  out->set_prefix_cached_blocks(s.prefix_cached_blocks);
  out->set_prefix_cached_pages(s.prefix_cached_pages);
  out->set_prefix_lookup_tokens(s.prefix_lookup_tokens);
  out->set_prefix_hit_tokens(s.prefix_hit_tokens);
  out->set_prefix_hits(s.prefix_hits);
  out->set_prefix_evicted_blocks(s.prefix_evicted_blocks);
}

grpc::Status WorkerService::GetStats(grpc::ServerContext* ctx,
                                     const pb::GetStatsRequest*,
                                     pb::WorkerStats* resp) {
  // ctx is null for the in-process call of the metrics endpoint.
  if (ctx != nullptr) {
    if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  }
  const EngineStats es = engine_->Stats();
  FillStats(es, resp);
  resp->set_kv_transfers(transfers_.load());
  resp->set_kv_transfers_pulled(transfers_pulled_.load());
  // This rank's transfer bytes and the other ranks' rank-to-rank pulls.
  resp->set_kv_transfer_bytes(transfer_bytes_.load() +
                              static_cast<uint64_t>(es.kv_peer_pull_bytes));
  resp->set_kv_transfer_full_bytes(transfer_full_bytes_.load());
  resp->set_kv_transfer_fallbacks(transfer_fallbacks_.load());
  if (StorePrefixCache* pc = options_.prefix_cache; pc != nullptr) {
    resp->set_kv_prefix_lookups(pc->lookups());
    resp->set_kv_prefix_hit_tokens(pc->hit_tokens());
    resp->set_kv_blocks_published(pc->published_blocks());
    resp->set_kv_store_errors(pc->errors());
  }
  return grpc::Status::OK;
}

grpc::Status WorkerService::Prefill(
    grpc::ServerContext* ctx, const pb::PrefillRequest* req,
    grpc::ServerWriter<pb::PrefillResponse>* writer) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  GenerationRequest g = FromProto(
      absl::StrCat(req->request_id(), "#prefill", next_id_.fetch_add(1)),
      req->prompt_token_ids(), req->sampling(), req->kv_cache_mode());
  g.max_new_tokens = 1;
  // Several ranks on either side, and the caller pulls from ranks: each
  // rank parks its own heads; otherwise the leader gathers and streams them.
  const bool park =
      req->rank_pull() && (options_.tp_size > 1 || req->puller_tp_size() > 1) &&
      options_.kv_parking != nullptr &&
      static_cast<int>(options_.rank_addresses.size()) == options_.tp_size;
  g.park_kv = park;
  g.export_kv = !park;
  if (absl::Status c =
          AttachConstraint(req->sampling(), options_.constraints, &g);
      !c.ok()) {
    return ToGrpcStatus(c);
  }
  auto queue = std::make_shared<EventQueue>();
  const std::string id = g.id;
  absl::Status st = engine_->Submit(
      std::move(g), [queue](const GenerationEvent& e) { queue->Push(e); });
  if (!st.ok()) return ToGrpcStatus(st);
  int32_t first = -1;
  std::optional<TokenLogprobs> first_logprobs;
  GenerationEvent last;
  bool cancelled = false;
  while (last.finish == FinishReason::kNone && last.status.ok()) {
    if (!cancelled && ctx->IsCancelled()) {
      engine_->Cancel(id);
      cancelled = true;
    }
    for (const GenerationEvent& e :
         queue->Take(std::chrono::milliseconds(20))) {
      if (e.token >= 0) {
        first = e.token;
        first_logprobs = e.logprobs;
      }
      if (e.finish != FinishReason::kNone || !e.status.ok()) last = e;
    }
  }
  if (!last.status.ok()) return ToGrpcStatus(last.status);
  if (cancelled || last.finish == FinishReason::kCancelled) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "prefill cancelled");
  }
  if (last.kv != nullptr && last.kv->has_codebooks() &&
      !req->accepts_codebooks()) {  // (parked KV: KvSource.Pull checks)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the prefilled KV holds codebook entries, which the "
                        "caller does not accept");
  }
  pb::PrefillResponse head;
  *head.mutable_layout() =
      TransferLayout(GroupKvShapes(engine_->kv_shapes(), options_.tp_size),
                     engine_->kv_dtype(), options_.tp_size);
  head.set_first_token(first);
  if (first_logprobs) {
    LogprobsToProto(*first_logprobs, head.mutable_first_logprobs());
  }
  if (first < 0) head.set_finish_reason(ToProto(last.finish));
  if (park && first >= 0) {
    // Where each rank parked its KV heads (this rank: the caller's address).
    KvPull pull;
    pull.transfer_id = id;
    const int32_t per_rank = engine_->kv_shapes()[0].n_kv_heads;
    for (int r = 0; r < options_.tp_size; ++r) {
      pull.sources.push_back({r == 0 ? "" : options_.rank_addresses[r],
                              r * per_rank, (r + 1) * per_rank});
    }
    PullToProto(pull, head.mutable_pull());
  }
  if (!writer->Write(head)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
  }
  if (first < 0 || park || last.kv == nullptr) return grpc::Status::OK;
  if (!WriteKvLayers(*last.kv, writer)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
  }
  return grpc::Status::OK;
}

bool WorkerService::TakeRemotePrefill(const pb::WorkerGenerateRequest& req,
                                      GenerationRequest* g, bool* stop) {
  pb::PrefillRequest p;
  p.set_request_id(req.request_id());
  *p.mutable_prompt_token_ids() = req.prompt_token_ids();
  *p.mutable_sampling() = req.sampling();
  p.set_kv_cache_mode(req.kv_cache_mode());
  p.set_accepts_codebooks(true);  // Engine::Import loads them
  p.set_rank_pull(options_.kv_puller != nullptr);
  p.set_puller_tp_size(static_cast<uint32_t>(options_.tp_size));
  const pb::KvLayout ours =
      TransferLayout(GroupKvShapes(engine_->kv_shapes(), options_.tp_size),
                     engine_->kv_dtype(), options_.tp_size);
  absl::StatusOr<RemotePrefill> r =
      CallPrefill(req.prefill_worker(), p, ours, options_.prefill_timeout);
  if (!r.ok()) {
    std::fprintf(stderr,
                 "latentkv-worker: remote prefill from %s failed (%s); "
                 "prefilling here\n",
                 req.prefill_worker().c_str(), r.status().ToString().c_str());
    ++transfer_fallbacks_;
    return false;
  }
  if (r->first_token < 0) {
    ++transfers_;
    *stop = true;
    return true;
  }
  int64_t pulled = 0;
  if (!r->pull.transfer_id.empty()) {
    // This rank's heads straight from the prefill ranks that hold them; the
    // group's other ranks pull theirs when the engine admits it.
    absl::StatusOr<KvSnapshot> mine =
        options_.kv_puller->Pull(r->pull, &pulled);
    if (!mine.ok()) {
      std::fprintf(stderr,
                   "latentkv-worker: pulling KV of a remote prefill from %s "
                   "failed (%s); prefilling here\n",
                   req.prefill_worker().c_str(),
                   mine.status().ToString().c_str());
      ++transfer_fallbacks_;
      return false;
    }
    r->kv = std::make_shared<const KvSnapshot>(*std::move(mine));
    if (options_.tp_size > 1) g->import_pull = std::move(r->pull);
    ++transfers_pulled_;
  } else {
    pulled = r->kv->bytes();
  }
  ++transfers_;
  CountTransfer(*r->kv, pulled);
  g->import_kv = r->kv;
  g->import_first_token = r->first_token;
  g->import_first_logprobs = r->first_logprobs;
  return true;
}

void WorkerService::CountTransfer(const KvSnapshot& kv, int64_t bytes) {
  // What full head dims would have moved for the group's every KV head
  // (kv holds this rank's share; every head holds as many tokens).
  const model::ModelConfig& c = engine_->config();
  const int64_t head_dim = c.hidden_size / (c.num_heads * options_.tp_size);
  const int64_t group_heads =
      int64_t{engine_->kv_shapes()[0].n_kv_heads} * options_.tp_size;
  uint64_t full = 0;
  for (size_t l = 0; l < kv.rows.size(); ++l) {
    if (kv.rows[l].empty()) continue;
    full += kv.tokens(static_cast<int32_t>(l), 0) * group_heads * 4 *
            (1 + 2 * head_dim);
  }
  transfer_bytes_ += static_cast<uint64_t>(bytes);
  transfer_full_bytes_ += full;
}

grpc::Status WorkerService::Generate(
    grpc::ServerContext* ctx, const pb::WorkerGenerateRequest* req,
    grpc::ServerWriter<pb::WorkerGenerateResponse>* writer) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  // Ids are made unique per worker so a client reusing an id cannot collide.
  GenerationRequest g =
      FromProto(absl::StrCat(req->request_id(), "#", next_id_.fetch_add(1)),
                req->prompt_token_ids(), req->sampling(), req->kv_cache_mode());
  const pb::SamplingParams& sp = req->sampling();
  g.max_new_tokens = static_cast<int32_t>(sp.max_tokens());
  g.embed = req->embed();
  if (sp.max_tokens() > (1u << 30)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "max_tokens is too large");
  }
  if (absl::Status c = AttachConstraint(sp, options_.constraints, &g);
      !c.ok()) {
    return ToGrpcStatus(c);
  }
  // The shared store as a prefix cache, for full-cache requests.
  StorePrefixCache* pc = options_.prefix_cache;
  const bool full_cache =
      g.kv_mode == KvMode::kFull || (g.kv_mode == KvMode::kServerDefault &&
                                     engine_->residency_policy() == nullptr);
  // Prompt log-probabilities need the whole prompt computed here: no store
  // prefix, no remote prefill.
  // (So do embeddings.)
  const bool whole_prompt = sp.prompt_logprobs() || req->embed();
  if (pc != nullptr && full_cache && req->prefill_worker().empty() &&
      !whole_prompt) {
    // The local prefix cache first: when it already holds every block the
    // store could give (the last prompt token always runs), skip the fetch
    // (the request still publishes its blocks).
    const int64_t most = static_cast<int64_t>(g.prompt.size()) - 1;
    const int64_t store_most = most / pc->block_tokens() * pc->block_tokens();
    if (engine_->LocalPrefixTokens(g.prompt) < store_most) {
      UseStorePrefix(*pc, options_.tp_size, &g);
    } else {
      g.publish_kv = true;
    }
  }
  if (!req->prefill_worker().empty() && !whole_prompt) {
    bool stop = false;
    TakeRemotePrefill(*req, &g, &stop);
    if (stop) {  // the first token was EOS
      pb::WorkerGenerateResponse resp;
      resp.set_finish_reason(pb::FINISH_REASON_STOP);
      writer->Write(resp);
      return grpc::Status::OK;
    }
  }
  auto queue = std::make_shared<EventQueue>();
  const std::string id = g.id;
  absl::Status st = engine_->Submit(
      std::move(g), [queue](const GenerationEvent& e) { queue->Push(e); });
  if (!st.ok()) return ToGrpcStatus(st);

  bool cancelled = false;
  while (true) {
    std::deque<GenerationEvent> events =
        queue->Take(std::chrono::milliseconds(20));
    if (!cancelled && ctx->IsCancelled()) {
      engine_->Cancel(id);  // its final kCancelled event follows
      cancelled = true;
    }
    pb::WorkerGenerateResponse resp;
    bool done = false;
    for (const GenerationEvent& e : events) {
      if (!e.status.ok()) return ToGrpcStatus(e.status);
      for (const TokenLogprobs& t : e.prompt_logprobs) {
        LogprobsToProto(t, resp.add_prompt_logprobs());
      }
      if (e.token >= 0) {
        resp.add_token_ids(e.token);
        if (e.logprobs) LogprobsToProto(*e.logprobs, resp.add_logprobs());
      }
      for (const float v : e.embedding) resp.add_embedding(v);
      if (e.finish != FinishReason::kNone) {
        resp.set_finish_reason(ToProto(e.finish));
        done = true;
      }
    }
    if (cancelled && done) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
    }
    if ((resp.token_ids_size() > 0 || done) && !cancelled) {
      if (!writer->Write(resp)) {
        engine_->Cancel(id);
        cancelled = true;
        if (done)
          return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
        continue;
      }
    }
    if (done) return grpc::Status::OK;
  }
}

}  // namespace latentkv::worker
