#include "coordinator/coordinator_service.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "common/generation_rules.h"
#include "common/logit_controls_proto.h"
#include "coordinator/stop_matcher.h"

namespace latentkv::coordinator {
namespace {

namespace pb = ::latentkv::v1;

// 53 random bits from the kernel's generator: exact as a JSON number, so
// an HTTP client can send the reported seed back.
uint64_t RandomSeed() {
  std::random_device rd;
  return ((uint64_t{rd()} << 32) ^ rd()) & ((uint64_t{1} << 53) - 1);
}

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

// The bytes `token` stands for after `prev` ("" for an id outside the
// vocabulary, which a misbehaving worker could send).
std::string TokenBytesOf(const model::Tokenizer& tok, int32_t prev,
                         int32_t token) {
  if (token < 0 || token >= tok.vocab_size()) return "";
  return tok.TokenBytes(prev, token);
}

// Fills the bytes of `lp`'s token and of its alternatives, each standing
// after `prev`.
void SetTokenBytes(const model::Tokenizer& tok, int32_t prev, int32_t token,
                   pb::TokenLogprobs* lp) {
  lp->set_token(TokenBytesOf(tok, prev, token));
  for (pb::TopLogprob& alt : *lp->mutable_top()) {
    alt.set_token(TokenBytesOf(tok, prev, alt.token_id()));
  }
}

}  // namespace

Coordinator::Coordinator(const CoordinatorOptions& options,
                         model::ModelConfig config,
                         std::unique_ptr<model::Tokenizer> tokenizer)
    : options_(options),
      config_(std::move(config)),
      tokenizer_(std::move(tokenizer)),
      registry_(options.routing) {
  max_prompt_bytes_ =
      MaxPromptBytes(*tokenizer_, config_.max_position_embeddings);
  expiry_ = std::thread([this] { ExpiryLoop(); });
}

int64_t MaxPromptBytes(const model::Tokenizer& tokenizer, int64_t context) {
  // A prompt of n tokens decodes to at most n * (longest token) bytes. The
  // text may be longer than its decoding where the tokenizer normalizes
  // (drops control characters, folds whitespace), so the bound keeps a
  // factor of 4 and at least 1 MiB: only prompts that cannot possibly fit
  // are refused untokenized; the exact check follows tokenization.
  int64_t longest = 1;
  for (int32_t t = 0; t < tokenizer.vocab_size(); ++t) {
    longest = std::max<int64_t>(
        longest, static_cast<int64_t>(tokenizer.TokenBytes(-1, t).size()));
  }
  return std::max<int64_t>(int64_t{1} << 20,
                           4 * std::max<int64_t>(context, 1) * longest);
}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (expiry_.joinable()) expiry_.join();
}

void Coordinator::AttachHealth(grpc::HealthCheckServiceInterface* health) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    health_ = health;
  }
  UpdateHealth();
}

void Coordinator::UpdateHealth() {
  std::lock_guard<std::mutex> lock(mu_);
  if (health_ == nullptr) return;
  const bool ready = registry_.size() > 0;
  // Named services only: SetServingStatus(bool) would set "liveness" too.
  health_->SetServingStatus("", ready);
  health_->SetServingStatus("readiness", ready);
  health_->SetServingStatus("latentkv.v1.Generation", ready);
}

void Coordinator::ExpiryLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, options_.heartbeat_interval / 2);
    if (stop_) break;
    lock.unlock();
    auto gone = registry_.Expire(Clock::now(), options_.worker_timeout);
    for (const auto& id : gone) {
      kv_index_.Remove(id);
      std::fprintf(stderr,
                   "coordinator: worker %s missed heartbeats; removed\n",
                   id.c_str());
    }
    if (!gone.empty()) UpdateHealth();
    lock.lock();
  }
}

std::shared_ptr<pb::Worker::Stub> Coordinator::StubFor(
    const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& stub = stubs_[address];
  if (!stub) {
    stub = pb::Worker::NewStub(auth::NewInternalChannel(address));
  }
  return stub;
}

grpc::Status Coordinator::ControlImpl::Register(grpc::ServerContext* ctx,
                                                const pb::RegisterRequest* req,
                                                pb::RegisterResponse* resp) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  if (req->worker_id().empty() || req->address().empty()) {
    return Invalid("worker_id and address are required");
  }
  if (req->vocab_size() != static_cast<uint32_t>(c_->config_.vocab_size)) {
    return Invalid(absl::StrCat("worker vocab_size ", req->vocab_size(),
                                " differs from the coordinator's model (",
                                c_->config_.vocab_size, ")"));
  }
  WorkerInfo w;
  w.id = req->worker_id();
  w.address = req->address();
  w.max_context = req->max_context();
  w.role = req->role().empty() ? "mixed" : req->role();
  w.load = {req->stats().running(), req->stats().waiting(),
            req->stats().kv_pages_in_use(), req->stats().kv_pages_total()};
  if (!c_->registry_.Register(w, Clock::now())) {
    return grpc::Status(
        grpc::StatusCode::ALREADY_EXISTS,
        absl::StrCat("worker id ", w.id,
                     " is registered at another address (it may re-register "
                     "once that entry expires)"));
  }
  c_->kv_index_.Remove(w.id);  // a new process: its prefix cache starts empty
  std::fprintf(stderr, "coordinator: worker %s registered at %s\n",
               w.id.c_str(), w.address.c_str());
  resp->set_heartbeat_interval_ms(
      static_cast<uint32_t>(c_->options_.heartbeat_interval.count()));
  c_->UpdateHealth();
  return grpc::Status::OK;
}

grpc::Status Coordinator::ControlImpl::Heartbeat(
    grpc::ServerContext* ctx, const pb::HeartbeatRequest* req,
    pb::HeartbeatResponse* resp) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  const auto& s = req->stats();
  resp->set_known(c_->registry_.Heartbeat(
      req->worker_id(),
      {s.running(), s.waiting(), s.kv_pages_in_use(), s.kv_pages_total()},
      Clock::now()));
  if (resp->known() && req->has_prefix_cache()) {
    const pb::PrefixCacheUpdate& pu = req->prefix_cache();
    KvIndexUpdate u;
    u.block_tokens = static_cast<int32_t>(pu.block_tokens());
    u.snapshot = pu.snapshot();
    u.first_seq = pu.first_seq();
    u.last_seq = pu.last_seq();
    for (const pb::PrefixCacheEvent& ev : pu.events()) {
      u.events.emplace_back(
          ev.stored(),
          std::vector<uint64_t>(ev.keys().begin(), ev.keys().end()));
    }
    const KvIndex::Ack ack = c_->kv_index_.Apply(req->worker_id(), u);
    resp->set_prefix_cache_ack(ack.applied);
    resp->set_prefix_cache_resync(ack.resync);
  }
  return grpc::Status::OK;
}

grpc::Status Coordinator::CheckTextBytes(const std::string& text,
                                         const char* what) const {
  if (static_cast<int64_t>(text.size()) <= max_prompt_bytes_) {
    return grpc::Status::OK;
  }
  return Invalid(absl::StrCat("the ", what, "'s ", text.size(),
                              " bytes cannot fit the model's context of ",
                              config_.max_position_embeddings,
                              " tokens (refused untokenized)"));
}

grpc::Status Coordinator::Authenticate(const grpc::ServerContext& ctx) const {
  const auth::ApiKeySet* keys = options_.api_keys.get();
  if (keys == nullptr || keys->empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  const auto it = md.find("authorization");
  const std::string_view value =
      it == md.end() ? std::string_view()
                     : std::string_view(it->second.data(), it->second.size());
  const absl::Status st = keys->CheckBearer(value);
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      std::string(st.message()));
}

grpc::Status Coordinator::GenerationImpl::Tokenize(
    grpc::ServerContext* ctx, const pb::TokenizeRequest* req,
    pb::TokenizeResponse* resp) {
  if (grpc::Status st = c_->Authenticate(*ctx); !st.ok()) return st;
  if (grpc::Status st = c_->CheckTextBytes(req->text(), "text"); !st.ok()) {
    return st;
  }
  for (int32_t t : c_->tokenizer_->Encode(req->text(), req->add_bos())) {
    resp->add_token_ids(t);
  }
  return grpc::Status::OK;
}

grpc::Status Coordinator::GenerationImpl::Detokenize(
    grpc::ServerContext* ctx, const pb::DetokenizeRequest* req,
    pb::DetokenizeResponse* resp) {
  if (grpc::Status st = c_->Authenticate(*ctx); !st.ok()) return st;
  if (req->token_ids_size() > c_->config_.max_position_embeddings) {
    return Invalid(absl::StrCat("more than the context's ",
                                c_->config_.max_position_embeddings,
                                " token ids"));
  }
  for (int32_t t : req->token_ids()) {
    if (t < 0 || t >= c_->config_.vocab_size) {
      return Invalid(absl::StrCat("token id ", t,
                                  " outside the vocabulary [0, ",
                                  c_->config_.vocab_size, ")"));
    }
  }
  resp->set_text(c_->tokenizer_->Decode(
      std::vector<int32_t>(req->token_ids().begin(), req->token_ids().end())));
  return grpc::Status::OK;
}

grpc::Status Coordinator::GenerationImpl::ListModels(
    grpc::ServerContext* ctx, const pb::ListModelsRequest*,
    pb::ListModelsResponse* resp) {
  if (grpc::Status st = c_->Authenticate(*ctx); !st.ok()) return st;
  pb::ModelInfo* m = resp->add_models();
  m->set_id(c_->options_.model_id);
  // What a request can use: the model's context, or less when even the
  // largest worker's KV memory holds less.
  const uint32_t served = c_->registry_.MaxContext();
  m->set_max_context(
      served > 0
          ? std::min<uint32_t>(served, c_->config_.max_position_embeddings)
          : c_->config_.max_position_embeddings);
  m->set_vocab_size(c_->config_.vocab_size);
  m->set_kv_bytes_per_token(c_->config_.KvValuesPerToken() * sizeof(float));
  m->set_num_workers(static_cast<uint32_t>(c_->registry_.size()));
  return grpc::Status::OK;
}

grpc::Status Coordinator::ControlImpl::GetServingStats(
    grpc::ServerContext* ctx, const pb::ServingStatsRequest*,
    pb::ServingStats* resp) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  auto fill = [](const LatencySummary& s, pb::LatencySummary* out) {
    out->set_count(s.count);
    out->set_mean_ms(s.mean_ms);
    out->set_p50_ms(s.p50_ms);
    out->set_p90_ms(s.p90_ms);
    out->set_p99_ms(s.p99_ms);
  };
  resp->set_completed(c_->latency_.completed());
  resp->set_routed_prefix_hits(c_->routed_prefix_hits_.load());
  resp->set_routed_prefix_tokens(c_->routed_prefix_tokens_.load());
  fill(c_->latency_.Ttft(), resp->mutable_ttft());
  fill(c_->latency_.Tpot(), resp->mutable_tpot());
  fill(c_->latency_.E2e(), resp->mutable_e2e());
  return grpc::Status::OK;
}

grpc::Status Coordinator::AdmitPrompt(const pb::GenerateRequest& req,
                                      uint32_t max_tokens, float temperature,
                                      float top_p,
                                      std::vector<int32_t>* prompt) const {
  if (req.prompt_token_ids_size() > 0) {
    prompt->assign(req.prompt_token_ids().begin(),
                   req.prompt_token_ids().end());
  } else if (!req.prompt().empty()) {
    if (grpc::Status st = CheckTextBytes(req.prompt(), "prompt"); !st.ok()) {
      return st;
    }
    *prompt = tokenizer_->Encode(req.prompt(), tokenizer_->add_bos());
  }
  // The rules every entry point applies (common/generation_rules.h): a
  // worker called directly refuses exactly this.
  const LogitControls controls = LogitControlsFromProto(req.sampling());
  const absl::Status valid =
      ValidateGeneration({.prompt = *prompt,
                          .max_new_tokens = max_tokens,
                          .temperature = temperature,
                          .top_p = top_p,
                          .top_k = static_cast<int64_t>(req.sampling().top_k()),
                          .controls = &controls,
                          .logprobs = LogprobsCountFromProto(req.sampling()),
                          .prompt_logprobs = req.sampling().prompt_logprobs()},
                         {.vocab_size = config_.vocab_size,
                          .context = config_.max_position_embeddings});
  if (!valid.ok()) return Invalid(std::string(valid.message()));
  if (absl::Status so = ValidateStructuredOutput(req.sampling()); !so.ok()) {
    return Invalid(std::string(so.message()));
  }
  return grpc::Status::OK;
}

grpc::Status Coordinator::GenerationImpl::Generate(
    grpc::ServerContext* ctx, const pb::GenerateRequest* req,
    grpc::ServerWriter<pb::GenerateResponse>* writer) {
  if (grpc::Status st = c_->Authenticate(*ctx); !st.ok()) return st;
  Coordinator& c = *c_;
  const auto arrival = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> first_token_at;
  const pb::SamplingParams& sp = req->sampling();
  const uint32_t max_tokens =
      sp.has_max_tokens() ? sp.max_tokens() : c.options_.default_max_tokens;
  const float temperature = sp.has_temperature() ? sp.temperature() : 1.0f;
  const float top_p = sp.has_top_p() ? sp.top_p() : 1.0f;
  if (!pb::KvCacheMode_IsValid(req->kv_cache_mode())) {
    return Invalid(
        absl::StrCat("unknown kv_cache_mode ", req->kv_cache_mode()));
  }
  std::vector<int32_t> prompt;
  if (grpc::Status st =
          c.AdmitPrompt(*req, max_tokens, temperature, top_p, &prompt);
      !st.ok()) {
    return st;
  }
  grpc::Status admitted;
  const std::unique_ptr<InflightSlot> slot = c.TakeInflightSlot(&admitted);
  if (slot == nullptr) return admitted;

  // Longer than any worker's KV memory holds: it could never run (a 400,
  // not a 429 that clients would retry).
  if (const uint32_t served = c.registry_.MaxContext();
      served > 0 && prompt.size() + max_tokens > served) {
    return Invalid(absl::StrCat(
        "prompt (", prompt.size(), " tokens) + max_tokens (", max_tokens,
        ") exceeds the ", served,
        " tokens a sequence can hold in the largest worker's KV memory"));
  }
  const std::string request_id =
      req->request_id().empty()
          ? absl::StrCat("req-", c.next_request_.fetch_add(1))
          : req->request_id();
  // Unseeded requests get a fresh seed (reported in the first message), so
  // repeated calls differ as clients expect.
  const uint64_t seed = sp.has_seed() ? sp.seed() : RandomSeed();
  bool seed_reported = false;
  model::StreamingDetokenizer detok(*c.tokenizer_, prompt.back());
  int32_t prev = prompt.back();  // the token before the next one generated
  bool prompt_lp_sent = false;   // a retry does not ask for them again
  StopMatcher stop({sp.stop().begin(), sp.stop().end()});
  std::vector<int32_t> generated;
  std::set<std::string> tried;
  for (int attempt = 0; attempt < c.options_.max_attempts; ++attempt) {
    // Route on everything the worker must hold: the prompt and, on a retry,
    // the tokens already generated.
    std::vector<int32_t> context = prompt;
    context.insert(context.end(), generated.begin(), generated.end());
    const PromptKeys keys(context);  // hashed once for every lookup below
    const std::map<std::string, int64_t> cached = c.kv_index_.Overlaps(keys);
    const RouteHint hint{
        static_cast<int64_t>(context.size()), &cached,
        static_cast<int64_t>(prompt.size()) + int64_t{max_tokens}};
    std::optional<WorkerInfo> w = c.registry_.Acquire(tried, hint);
    if (!w) break;
    tried.insert(w->id);
    InflightGuard guard(&c.registry_, w->id, hint.prompt_tokens);
    // Until its events arrive, count the prompt as cached there, so a burst
    // sharing a new prefix follows this request instead of scattering.
    c.kv_index_.Predict(w->id, keys, std::chrono::steady_clock::now());
    if (auto it = cached.find(w->id); it != cached.end()) {
      c.routed_prefix_hits_.fetch_add(1);
      c.routed_prefix_tokens_.fetch_add(it->second);
    }

    pb::WorkerGenerateRequest wreq;
    wreq.set_request_id(request_id);
    for (int32_t t : prompt) wreq.add_prompt_token_ids(t);
    for (int32_t t : generated) wreq.add_prompt_token_ids(t);
    pb::SamplingParams* ws = wreq.mutable_sampling();
    *ws = sp;          // top_k, ignore_eos and the logit controls as given
    ws->clear_stop();  // stop strings are matched here
    ws->set_max_tokens(max_tokens - static_cast<uint32_t>(generated.size()));
    ws->set_temperature(temperature);
    ws->set_top_p(top_p);
    ws->set_seed(seed + generated.size());
    ws->set_prompt_logprobs(sp.prompt_logprobs() && !prompt_lp_sent);
    wreq.set_kv_cache_mode(req->kv_cache_mode());
    // A decode worker takes the prompt's KV from a prefill worker (once: a
    // retry after a failure prefills on the worker itself).
    std::string prefill_id;  // empty: no prefill worker
    // (Prompt log-probabilities need the prompt computed where it decodes.)
    if (w->role == "decode" && attempt == 0 && !sp.prompt_logprobs()) {
      if (std::optional<WorkerInfo> prefill =
              c.registry_.AcquirePrefill(tried, hint)) {
        wreq.set_prefill_worker(prefill->address);
        c.kv_index_.Predict(prefill->id, keys,
                            std::chrono::steady_clock::now());
        prefill_id = prefill->id;
      }
    }
    // The prefill worker's part ends with the first token (its KV has moved
    // to the decode worker by then), or with the attempt.
    struct PrefillRelease {
      WorkerRegistry* r;
      std::string* id;
      int64_t tokens;
      void Now() {
        if (!id->empty()) r->Release(*id, tokens);
        id->clear();
      }
      ~PrefillRelease() { Now(); }
    } prefill_release{&c.registry_, &prefill_id, hint.prompt_tokens};

    std::unique_ptr<grpc::ClientContext> wctx =
        grpc::ClientContext::FromServerContext(*ctx);
    auth::AttachClusterSecret(wctx.get());
    auto reader = c.StubFor(w->address)->Generate(wctx.get(), wreq);
    pb::WorkerGenerateResponse wresp;
    pb::FinishReason finish = pb::FINISH_REASON_UNSPECIFIED;
    bool client_gone = false;
    while (reader->Read(&wresp)) {
      if (wresp.token_ids_size() > 0) prefill_release.Now();
      pb::GenerateResponse out;
      if (wresp.prompt_logprobs_size() > 0 && !prompt_lp_sent) {
        // The first prompt token has none; entry i is prompt token i + 1's,
        // after prompt token i.
        pb::TokenLogprobs* first = out.add_prompt_logprobs();
        first->set_logprob(std::numeric_limits<float>::quiet_NaN());
        first->set_token(
            TokenBytesOf(*c.tokenizer_, c.tokenizer_->bos_id(), prompt[0]));
        // (A worker sending more than the prompt has is cut to it.)
        for (size_t at = 1;
             at < prompt.size() &&
             at <= static_cast<size_t>(wresp.prompt_logprobs_size());
             ++at) {
          pb::TokenLogprobs* lp = out.add_prompt_logprobs();
          *lp = wresp.prompt_logprobs(static_cast<int>(at) - 1);
          SetTokenBytes(*c.tokenizer_, prompt[at - 1], prompt[at], lp);
        }
        prompt_lp_sent = true;
      }
      std::string text;
      for (int i = 0; i < wresp.token_ids_size(); ++i) {
        const int32_t t = wresp.token_ids(i);
        generated.push_back(t);
        out.add_token_ids(t);
        text += detok.Push(t);
        // One entry per token, aligned even if a worker sent fewer, with
        // the bytes each token stands for after the one before it.
        if (sp.has_logprobs()) {
          pb::TokenLogprobs* lp = out.add_logprobs();
          if (i < wresp.logprobs_size()) *lp = wresp.logprobs(i);
          SetTokenBytes(*c.tokenizer_, prev, t, lp);
        }
        prev = t;
      }
      if (wresp.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
        text += detok.Flush();
      }
      std::string emit = stop.Push(text);
      if (stop.stopped()) {
        finish = pb::FINISH_REASON_STOP;
        wctx->TryCancel();
      } else if (wresp.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
        finish = wresp.finish_reason();
        emit += stop.Flush();
      }
      out.set_text(emit);
      if (!seed_reported) {
        out.set_seed(seed);
        seed_reported = true;
      }
      if (finish != pb::FINISH_REASON_UNSPECIFIED) {
        out.set_finish_reason(finish);
        out.mutable_usage()->set_prompt_tokens(prompt.size());
        out.mutable_usage()->set_completion_tokens(generated.size());
      }
      if (!writer->Write(out)) {
        wctx->TryCancel();
        client_gone = true;
        break;
      }
      if (!first_token_at && out.token_ids_size() > 0) {
        first_token_at = std::chrono::steady_clock::now();
      }
      if (finish != pb::FINISH_REASON_UNSPECIFIED) break;
    }
    if (finish != pb::FINISH_REASON_UNSPECIFIED) {
      reader->Finish();  // after TryCancel on a stop string: CANCELLED
      if (first_token_at) {
        using Ms = std::chrono::duration<double, std::milli>;
        c.latency_.Record(
            Ms(*first_token_at - arrival).count(),
            Ms(std::chrono::steady_clock::now() - arrival).count(),
            static_cast<int64_t>(generated.size()));
      }
      return grpc::Status::OK;
    }
    grpc::Status st = reader->Finish();
    if (client_gone || ctx->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    if (st.ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "worker ended the stream without a finish reason");
    }
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return st;
    // The worker is gone or shutting down: continue elsewhere.
    c.DropFailedWorker(w->id, st, request_id);
  }
  return NoWorkerStatus(tried);
}

std::unique_ptr<Coordinator::InflightSlot> Coordinator::TakeInflightSlot(
    grpc::Status* st) {
  if (inflight_.fetch_add(1) >= options_.max_inflight) {
    inflight_.fetch_sub(1);
    *st = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       absl::StrCat("coordinator has ", options_.max_inflight,
                                    " requests in flight"));
    return nullptr;
  }
  return std::make_unique<InflightSlot>(&inflight_);
}

void Coordinator::DropFailedWorker(const std::string& worker_id,
                                   const grpc::Status& st,
                                   const std::string& request_id) {
  std::fprintf(stderr, "coordinator: worker %s failed (%s); retrying %s\n",
               worker_id.c_str(), st.error_message().c_str(),
               request_id.c_str());
  registry_.Remove(worker_id);
  kv_index_.Remove(worker_id);
  UpdateHealth();
}

grpc::Status Coordinator::NoWorkerStatus(const std::set<std::string>& tried) {
  return grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      tried.empty() ? "no worker is available" : "every worker tried failed");
}

}  // namespace latentkv::coordinator
