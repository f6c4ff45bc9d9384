#include "worker/engine/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/generation_rules.h"
#include "worker/kv/kv_io.h"

namespace latentkv::worker {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::shared_ptr<const model::ModelWeights> weights,
    std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
    Communicator* comm) {
  if (options.step_listener != nullptr && options.keepalive_ms <= 0) {
    return absl::InvalidArgumentError("keepalive_ms must be > 0");
  }
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  e->weights_ = std::move(weights);
  e->backend_ = std::move(backend);
  e->runner_ = std::make_unique<ModelRunner>(e->weights_, e->backend_.get(),
                                             comm, options.pack_weights);
  auto cache = KvCache::Create(e->runner_->KvShapes(), options.kv);
  if (!cache.ok()) return cache.status();
  e->cache_ = std::move(*cache);
  auto pools = CreateKvPools(*e->runner_, e->backend_.get(), *e->cache_);
  if (!pools.ok()) return pools.status();
  e->pools_ = std::move(*pools);
  e->scheduler_ =
      std::make_unique<Scheduler>(options.scheduler, e->cache_.get());
  const model::ModelConfig& c = e->runner_->config();
  const ResidencyOptions& ro = options.residency;
  auto plan = ResidencyPlan::CreateIfEnabled(ro, c.num_layers, c.num_heads,
                                             c.num_kv_heads);
  if (!plan.ok()) return plan.status();
  e->plan_ = std::move(*plan);
  if (e->plan_ != nullptr) {
    absl::Status st = CheckCodebookLayersSupported(*e->plan_, *e->pools_);
    if (!st.ok()) return st;
  }
  if (options.prefix_caching && options.step_listener == nullptr) {
    e->prefix_ = std::make_unique<PrefixIndex>(e->cache_.get());
    e->scheduler_->set_reclaimer([p = e.get()] {
      if (p->prefix_->Evict(1) == 0) return false;
      ++p->prefix_evicted_;
      return true;
    });
    e->scheduler_->set_admit_hook(
        [p = e.get()](Sequence* s) { p->AttachPrefix(s); });
  }
  {
    std::lock_guard<std::mutex> lock(e->mu_);
    e->stats_.kv_bytes_capacity = e->cache_->capacity_bytes();
    for (int32_t l = 0; l < e->cache_->num_layers(); ++l) {
      e->stats_.kv_pages_total += e->cache_->allocator(l).num_pages();
    }
  }
  e->thread_ = std::thread([p = e.get()] { p->Loop(); });
  return e;
}

Engine::~Engine() {
  Stop();
  // The index's pages go back before the cache itself goes.
  scheduler_.reset();
  prefix_.reset();
}

absl::Status Engine::Submit(GenerationRequest req, EventSink sink) {
  const model::ModelConfig& c = config();
  const SamplingOptions& s = req.sampling;
  absl::Status valid = ValidateGeneration(
      {.prompt = req.prompt,
       .max_new_tokens = req.max_new_tokens,
       .temperature = s.temperature,
       .top_p = s.top_p,
       .top_k = s.top_k},
      {.vocab_size = c.vocab_size, .context = c.max_position_embeddings});
  if (!valid.ok()) return valid;

  auto seq = std::make_unique<Sequence>();
  seq->id = std::move(req.id);
  seq->tokens = std::move(req.prompt);
  seq->prompt_len = static_cast<int32_t>(seq->tokens.size());
  seq->max_new_tokens = req.max_new_tokens;
  seq->max_total_tokens = c.max_position_embeddings;
  seq->ignore_eos = req.ignore_eos;
  seq->eos_ids.assign(1, c.eos_token_id);
  seq->eos_ids.insert(seq->eos_ids.end(), c.extra_eos_token_ids.begin(),
                      c.extra_eos_token_ids.end());
  seq->sampling = s;
  seq->rng.seed(s.seed);
  seq->export_kv = req.export_kv;
  seq->import_kv = std::move(req.import_kv);
  seq->import_first_token = req.import_first_token;
  if (seq->import_kv != nullptr && (seq->import_first_token < -1 ||
                                    seq->import_first_token >= c.vocab_size)) {
    return absl::InvalidArgumentError("imported KV needs a valid first token");
  }
  seq->kv.Init(*cache_);  // shapes only; reads immutable cache geometry
  if (req.kv_mode == KvMode::kCompressed && plan_ == nullptr) {
    return absl::InvalidArgumentError(
        "compressed KV cache requested but this server has no KV compression "
        "configured");
  }
  if (plan_ != nullptr && req.kv_mode != KvMode::kFull) {
    seq->kv.SetCapacity(plan_->capacities());
    seq->residency = std::make_shared<SequenceResidency>(
        plan_, c.qk_head_dim, c.num_heads, seq->prompt_len);
  }
  const int64_t most = std::min<int64_t>(
      seq->prompt_len + int64_t{seq->max_new_tokens}, seq->max_total_tokens);
  const int64_t need = seq->kv.PagesNeeded(*cache_, most);
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("engine is stopping");
  if (!fatal_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("tensor-parallel group failed: ", fatal_.message()));
  }
  if (need > stats_.kv_pages_total) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", need, " KV pages for ", most,
        " tokens but the KV memory holds ", stats_.kv_pages_total));
  }
  if (queued_ >= options_.scheduler.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request queue is full (", options_.scheduler.max_waiting, ")"));
  }
  ++queued_;
  inbox_.push_back({std::move(seq), std::move(sink)});
  cv_.notify_one();
  return absl::OkStatus();
}

void Engine::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.push_back(id);
  cv_.notify_one();
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) {
    thread_.join();
    if (options_.step_listener != nullptr) options_.step_listener->OnStop();
  }
}

void Engine::Finish(Sequence* seq, FinishReason reason, absl::Status status) {
  auto it = sinks_.find(seq->id);
  EventSink sink = it == sinks_.end() ? nullptr : std::move(it->second);
  if (it != sinks_.end()) sinks_.erase(it);
  const std::string id = seq->id;
  GenerationEvent ev;
  ev.finish = reason;
  if (seq->export_kv && status.ok() && reason != FinishReason::kCancelled) {
    // Before the pages go; codebook layers move their entries as they are.
    auto snap = ExportKv(*cache_, *pools_, seq->kv, seq->residency != nullptr);
    if (snap.ok()) {
      if (seq->residency != nullptr) {
        seq->residency->ExportState(*cache_, *pools_, seq->kv, &*snap);
      }
      ev.kv = std::make_shared<const KvSnapshot>(std::move(*snap));
    } else {
      status = snap.status();
    }
  }
  if (status.ok()) IndexPrefix(*seq);
  ev.status = std::move(status);
  scheduler_->Remove(id);  // releases pages; seq is gone after this
  released_.push_back(id);
  if (sink) sink(ev);
}

void Engine::Loop() {
  while (true) {
    std::vector<Incoming> inbox;
    std::vector<std::string> cancels;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [&] {
        return stop_ || !inbox_.empty() || !cancels_.empty() ||
               !scheduler_->idle();
      };
      if (options_.step_listener != nullptr) {
        // Wake up for keep-alives.
        cv_.wait_for(lock, std::chrono::milliseconds(options_.keepalive_ms),
                     ready);
      } else {
        cv_.wait(lock, ready);
      }
      if (stop_) break;
      inbox.swap(inbox_);
      cancels.swap(cancels_);
    }
    for (auto& in : inbox) {
      const std::string id = in.seq->id;
      in.seq->arrival = next_arrival_++;
      if (sinks_.count(id)) {
        GenerationEvent ev;
        ev.status = absl::AlreadyExistsError(
            absl::StrCat("request id ", id, " is already running"));
        in.sink(ev);
        std::lock_guard<std::mutex> lock(mu_);
        --queued_;
        continue;
      }
      Sequence* raw = in.seq.get();
      const bool imported = raw->import_kv != nullptr && Import(raw);
      absl::Status st = scheduler_->Enqueue(std::move(in.seq));
      if (!st.ok()) {
        GenerationEvent ev;
        ev.status = st;
        in.sink(ev);
        std::lock_guard<std::mutex> lock(mu_);
        --queued_;
        continue;
      }
      sinks_[id] = std::move(in.sink);
      if (imported && raw->import_first_token >= 0) {
        // The transferred first token is this request's first output.
        GenerationEvent ev;
        ev.token = raw->tokens.back();
        sinks_[id](ev);
        if (raw->num_generated() >= raw->max_new_tokens) {
          Finish(raw, FinishReason::kLength, absl::OkStatus());
        }
      }
    }
    for (const auto& id : cancels) {
      if (!sinks_.count(id)) continue;
      EventSink sink = std::move(sinks_[id]);
      sinks_.erase(id);
      scheduler_->Remove(id);  // running or waiting: pages are released
      released_.push_back(id);
      GenerationEvent ev;
      ev.finish = FinishReason::kCancelled;
      sink(ev);
    }
    Step();
  }
  // Stopping: fail whatever is left.
  std::vector<Incoming> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
  }
  GenerationEvent ev;
  ev.status = absl::UnavailableError("worker is shutting down");
  for (auto& in : inbox) in.sink(ev);
  for (auto& [id, sink] : sinks_) {
    scheduler_->Remove(id);
    sink(ev);
  }
  sinks_.clear();
}

bool Engine::Import(Sequence* seq) {
  std::shared_ptr<const KvSnapshot> snap = std::move(seq->import_kv);
  seq->kv.Init(*cache_);
  absl::Status st = ImportKv(*cache_, *pools_, seq->kv, *snap);
  if (st.ok() && snap->has_residency_state()) {
    st = seq->residency == nullptr
             ? absl::InvalidArgumentError(
                   "residency state for a request without a residency plan")
             : seq->residency->ImportState(*cache_, *pools_, seq->kv, *snap);
  }
  if (!st.ok()) {
    seq->kv.Release(*cache_);
    if (seq->residency != nullptr) seq->residency->Reset();
    ++import_failures_;
    return false;  // prefill here instead
  }
  if (seq->import_first_token < 0) {
    // A cached prefix: a full cache of the same length in every (layer,
    // head), shorter than the prompt, and no residency policy.
    const int64_t n = seq->kv.num_tokens(0, 0);
    bool full = n < seq->prompt_len && seq->residency == nullptr;
    for (int32_t l = 0; full && l < cache_->num_layers(); ++l) {
      for (int32_t h = 0; h < cache_->shape(l).n_kv_heads; ++h) {
        full = full && seq->kv.num_tokens(l, h) == n;
      }
    }
    if (!full) {
      seq->kv.Release(*cache_);
      ++import_failures_;
      return false;
    }
    seq->num_cached = n;
    ++imports_;
    return true;
  }
  seq->num_cached = seq->prompt_len;
  seq->tokens.push_back(seq->import_first_token);
  // The prefill worker drew the first token from the same seeded stream:
  // skip that draw (one 64-bit value per sampled token, sampler.cc) so a
  // seeded request samples the same tokens disaggregated as on one worker.
  if (seq->sampling.temperature > 0.0f) seq->rng.discard(1);
  if (seq->residency != nullptr) seq->residency->MarkPromptIn();
  ++imports_;
  return true;
}

void Engine::FailAll(const absl::Status& status) {
  std::vector<std::string> ids;
  for (const auto& [id, sink] : sinks_) ids.push_back(id);
  for (const std::string& id : ids) {
    EventSink sink = std::move(sinks_[id]);
    sinks_.erase(id);
    scheduler_->Remove(id);
    GenerationEvent ev;
    ev.status = status;
    sink(ev);
  }
  released_.clear();
}

void Engine::Step() {
  const auto step_start = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fatal_.ok()) {
      FailAll(absl::UnavailableError(fatal_.message()));
      return;
    }
  }
  std::vector<ScheduledChunk> plan = scheduler_->Schedule();
  for (std::string& id : scheduler_->TakePreempted()) {
    released_.push_back(std::move(id));
  }
  if (StepListener* listener = options_.step_listener; listener != nullptr) {
    const auto now = std::chrono::steady_clock::now();
    if (!plan.empty() || !released_.empty() ||
        now - last_listened_ >=
            std::chrono::milliseconds(options_.keepalive_ms)) {
      std::vector<StepChunkInfo> infos;
      for (const auto& p : plan) {
        infos.push_back({&p.seq->id, p.start, p.seq->tokens.data() + p.start,
                         p.len, p.seq->prompt_len, p.seq->residency != nullptr,
                         p.sample});
      }
      absl::Status st = listener->OnStep(released_, infos);
      released_.clear();
      last_listened_ = now;
      if (!st.ok()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          fatal_ = st;
        }
        FailAll(absl::UnavailableError(
            absl::StrCat("tensor-parallel group failed: ", st.message())));
        return;
      }
    }
  } else {
    released_.clear();
  }
  int64_t generated = 0;
  if (!plan.empty()) {
    std::vector<ForwardChunk> chunks;
    chunks.reserve(plan.size());
    for (const auto& p : plan) {
      ForwardChunk ch;
      ch.kv = &p.seq->kv;
      ch.tokens = p.seq->tokens.data() + p.start;
      ch.len = p.len;
      ch.start = p.start;
      ch.logits =
          p.sample ? ForwardChunk::Logits::kLast : ForwardChunk::Logits::kNone;
      if (p.seq->residency != nullptr) {
        // A chunk at position 0 starts from an empty cache (new, or
        // recomputed after preemption): the policy starts over too.
        if (p.start == 0) p.seq->residency->Reset();
        ch.residency = p.seq->residency.get();
      }
      chunks.push_back(ch);
    }
    absl::Status st = runner_->Forward(chunks, *cache_, *pools_, &logits_);
    if (!st.ok()) {
      for (const auto& p : plan) {
        // Keep the code: a broken tensor-parallel group is UNAVAILABLE (the
        // coordinator retries elsewhere), anything else INTERNAL.
        const absl::StatusCode code =
            absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st)
                ? absl::StatusCode::kUnavailable
                : absl::StatusCode::kInternal;
        Finish(
            p.seq, FinishReason::kNone,
            absl::Status(code, absl::StrCat("forward failed: ", st.message())));
        if (code == absl::StatusCode::kUnavailable &&
            options_.step_listener != nullptr) {
          std::lock_guard<std::mutex> lock(mu_);
          fatal_ = st;
        }
      }
    } else {
      const int32_t vocab = config().vocab_size;
      int64_t row = 0;
      for (const auto& p : plan) {
        Sequence* seq = p.seq;
        seq->num_cached += p.len;
        if (p.start < seq->prompt_len && seq->num_cached >= seq->prompt_len) {
          IndexPrefix(*seq);  // the prompt is in: share it from now on
        }
        if (seq->residency != nullptr) {
          evicted_total_ +=
              seq->residency->evicted_slots() - seq->evicted_reported;
          seq->evicted_reported = seq->residency->evicted_slots();
        }
        if (!p.sample) continue;
        const int32_t tok = SampleToken(logits_.data() + row * vocab, vocab,
                                        seq->sampling, seq->rng, &scratch_);
        ++row;
        if (!seq->ignore_eos &&
            std::find(seq->eos_ids.begin(), seq->eos_ids.end(), tok) !=
                seq->eos_ids.end()) {
          Finish(seq, FinishReason::kStop, absl::OkStatus());
          continue;
        }
        seq->tokens.push_back(tok);
        ++generated;
        auto it = sinks_.find(seq->id);
        if (it != sinks_.end()) {
          GenerationEvent ev;
          ev.token = tok;
          it->second(ev);
        }
        if (seq->num_generated() >= seq->max_new_tokens ||
            static_cast<int64_t>(seq->tokens.size()) >= seq->max_total_tokens) {
          Finish(seq, FinishReason::kLength, absl::OkStatus());
        }
      }
    }
  }
  PublishPrefixEvents();
  if (options_.on_step && !plan.empty()) {
    options_.on_step(std::chrono::steady_clock::now() - step_start);
  }
  std::lock_guard<std::mutex> lock(mu_);
  queued_ = scheduler_->num_waiting() + static_cast<int64_t>(inbox_.size());
  stats_.running = scheduler_->num_running();
  stats_.waiting =
      scheduler_->num_waiting() + static_cast<int32_t>(inbox_.size());
  stats_.kv_pages_in_use = cache_->pages_in_use();
  stats_.kv_bytes_in_use = cache_->bytes_in_use();
  stats_.steps += plan.empty() ? 0 : 1;
  stats_.tokens_generated += generated;
  stats_.preemptions = scheduler_->preemptions();
  stats_.kv_evicted_slots = evicted_total_;
  stats_.kv_imports = imports_;
  stats_.kv_import_failures = import_failures_;
  stats_.kv_layer_bytes_in_use.resize(cache_->num_layers());
  for (int32_t l = 0; l < cache_->num_layers(); ++l) {
    stats_.kv_layer_bytes_in_use[l] = cache_->layer_bytes_in_use(l);
  }
  if (prefix_ != nullptr) {
    stats_.prefix_cached_blocks = prefix_->num_blocks();
    stats_.prefix_cached_pages = prefix_->num_pages();
  }
  stats_.prefix_lookup_tokens = prefix_lookup_tokens_;
  stats_.prefix_hit_tokens = prefix_hit_tokens_;
  stats_.prefix_hits = prefix_hits_;
  stats_.prefix_evicted_blocks = prefix_evicted_;
}

void Engine::AttachPrefix(Sequence* seq) {
  if (prefix_ == nullptr || seq->residency != nullptr || seq->num_cached > 0) {
    return;
  }
  const int64_t len = static_cast<int64_t>(seq->tokens.size());
  prefix_lookup_tokens_ += len;
  // The last token always runs: its logits give the next sample.
  const int64_t n = prefix_->Match(seq->tokens, len - 1);
  if (n == 0) return;
  if (!prefix_->Attach(seq->kv, seq->tokens, n).ok()) {
    seq->kv.Release(*cache_);
    return;
  }
  seq->num_cached = n;
  prefix_hit_tokens_ += n;
  ++prefix_hits_;
}

void Engine::IndexPrefix(const Sequence& seq) {
  if (prefix_ == nullptr || seq.residency != nullptr) return;
  prefix_->Insert(seq.kv, seq.tokens, seq.num_cached);
}

void Engine::PublishPrefixEvents() {
  if (prefix_ == nullptr) return;
  std::vector<PrefixEvent> events = prefix_->TakeEvents();
  if (events.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (PrefixEvent& ev : events) {
    for (BlockKey k : ev.keys) {
      if (ev.stored) {
        prefix_keys_.insert(k);
      } else {
        prefix_keys_.erase(k);
      }
    }
    prefix_log_.emplace_back(++prefix_seq_, std::move(ev));
  }
  while (static_cast<int64_t>(prefix_log_.size()) >
         options_.max_prefix_events) {
    prefix_log_.pop_front();
  }
}

int64_t Engine::LocalPrefixTokens(const std::vector<int32_t>& tokens) const {
  if (prefix_ == nullptr) return 0;
  const int32_t ps = cache_->page_size();
  const std::vector<BlockKey> keys = kvstore::PrefixKeys(tokens, ps);
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (BlockKey k : keys) {
    if (!prefix_keys_.contains(k)) break;
    n += ps;
  }
  return n;
}

PrefixCacheUpdate Engine::PrefixUpdates(uint64_t after_seq,
                                        bool snapshot) const {
  PrefixCacheUpdate u;
  u.block_tokens = cache_->page_size();
  std::lock_guard<std::mutex> lock(mu_);
  u.last_seq = prefix_seq_;
  const uint64_t oldest =
      prefix_log_.empty() ? prefix_seq_ + 1 : prefix_log_.front().first;
  if (snapshot || after_seq > prefix_seq_ || after_seq + 1 < oldest) {
    u.snapshot = true;
    u.events.push_back({true, {prefix_keys_.begin(), prefix_keys_.end()}});
    return u;
  }
  u.first_seq = after_seq + 1;
  for (const auto& [seq, ev] : prefix_log_) {
    if (seq > after_seq) u.events.push_back(ev);
  }
  return u;
}

}  // namespace latentkv::worker
