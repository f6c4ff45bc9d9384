#include "worker/engine/engine_core.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/generation_rules.h"
#include "worker/cache/kv_snapshot_heads.h"

namespace latentkv::worker {
namespace {

// Whether a chunk needs every row's logits: prompt positions of a sequence
// that asked for the prompt's log-probabilities.
bool WantsAllLogits(const ScheduledChunk& p) {
  return p.seq->sampling.prompt_logprobs && p.start < p.seq->prompt_len;
}

// Whether a row's token is the backend's argmax: greedy and nothing to do
// to its logits first.
bool UsesDeviceArgmax(const Sequence& seq) {
  const SamplingOptions& s = seq.sampling;
  return !(s.temperature > 0.0f) && !s.controls.ChangesLogits() &&
         s.logprobs < 0 && seq.constraint == nullptr;
}

bool IsEos(const Sequence& seq, int32_t tok) {
  return std::find(seq.eos_ids.begin(), seq.eos_ids.end(), tok) !=
         seq.eos_ids.end();
}

}  // namespace

absl::StatusOr<std::unique_ptr<EngineCore>> EngineCore::Create(
    std::shared_ptr<const model::ModelWeights> weights,
    std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
    Communicator* comm) {
  if (options.step_listener != nullptr && options.keepalive_ms <= 0) {
    return absl::InvalidArgumentError("keepalive_ms must be > 0");
  }
  std::unique_ptr<EngineCore> e(new EngineCore());
  e->options_ = options;
  e->weights_ = std::move(weights);
  e->backend_ = std::move(backend);
  e->runner_ = std::make_unique<ModelRunner>(e->weights_, e->backend_.get(),
                                             comm, options.pack_weights);
  if (!e->runner_->init_status().ok()) return e->runner_->init_status();
  auto kv = CreateKvStorage(*e->runner_, e->backend_.get(), options.kv);
  if (!kv.ok()) return kv.status();
  e->cache_ = std::move(kv->cache);
  e->pools_ = std::move(kv->pools);
  e->scheduler_ =
      std::make_unique<Scheduler>(options.scheduler, e->cache_.get());
  const model::ModelConfig& c = e->runner_->config();
  auto policy = CreateResidencyPolicy(
      options.residency, {c.num_layers, c.num_heads, c.num_kv_heads,
                          c.qk_head_dim, c.sliding_window});
  if (!policy.ok()) return policy.status();
  e->policy_ = std::move(*policy);
  if (e->policy_ != nullptr) {
    absl::Status st = e->policy_->CheckPools(*e->pools_);
    if (!st.ok()) return st;
  }
  if (options.prefix_caching) {
    e->prefix_ = std::make_unique<PrefixIndex>(e->cache_.get(),
                                               options.max_prefix_events);
    e->scheduler_->set_reclaimer([p = e.get()] {
      p->RecordPreempted();  // their pages went first
      if (p->prefix_->Evict(1) == 0) return false;
      ++p->prefix_evicted_;
      p->Record({GroupKvOp::Kind::kEvict, "", {}, 1});
      return true;
    });
    // A sequence admitted with nothing cached shares the longest cached
    // prefix.
    e->scheduler_->set_admit_hook([p = e.get()](Sequence* s) {
      p->RecordPreempted();
      if (!p->from_prefix_->Applies(*s) || !p->from_prefix_->Attach(s)) {
        return;
      }
      p->RecordTokens(GroupKvOp::Kind::kAttach, *s, s->num_cached);
    });
  }
  e->from_prefill_ = MakePrefillArrival(e->cache_.get(), e->pools_.get());
  e->from_store_ = MakeKvStoreArrival(e->cache_.get(), e->pools_.get());
  e->from_prefix_ = MakeLocalPrefixArrival(e->cache_.get(), e->prefix_.get());
  if (e->prefix_ != nullptr) {
    e->sharing_ = std::make_unique<PromptSharing>(e->prefix_.get(),
                                                  e->cache_->page_size());
  }
  for (int32_t l = 0; l < e->cache_->num_layers(); ++l) {
    e->kv_pages_total_ += e->cache_->allocator(l).num_pages();
  }
  {
    // Binary search: pages needed grow with the tokens.
    SequenceKv probe;
    probe.Init(*e->cache_);
    int64_t lo = 0, hi = e->config().max_position_embeddings;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (probe.PagesNeeded(*e->cache_, mid) <= e->kv_pages_total_) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    e->max_sequence_tokens_ = lo;
  }
  return e;
}

EngineCore::~EngineCore() {
  // The sequences' and the index's pages go back before the cache goes.
  scheduler_.reset();
  prefix_.reset();
}

absl::StatusOr<std::unique_ptr<Sequence>> EngineCore::Prepare(
    GenerationRequest req) const {
  const model::ModelConfig& c = config();
  const SamplingOptions& s = req.sampling;
  absl::Status valid = ValidateGeneration(
      {.prompt = req.prompt,
       .max_new_tokens = req.max_new_tokens,
       .temperature = s.temperature,
       .top_p = s.top_p,
       .top_k = s.top_k,
       .controls = &s.controls,
       .logprobs = s.logprobs,
       .prompt_logprobs = s.prompt_logprobs},
      {.vocab_size = c.vocab_size, .context = c.max_position_embeddings});
  if (!valid.ok()) return valid;
  if (req.import_kv != nullptr &&
      (req.import_first_token < -1 || req.import_first_token >= c.vocab_size)) {
    return absl::InvalidArgumentError("imported KV needs a valid first token");
  }
  if (!req.import_store_keys.empty() &&
      (req.import_kv == nullptr || req.import_first_token != -1)) {
    return absl::InvalidArgumentError(
        "stored block keys come with this rank's KV of a stored prefix");
  }
  if (!req.import_pull.transfer_id.empty() &&
      (req.import_kv == nullptr || req.import_first_token < 0)) {
    return absl::InvalidArgumentError(
        "a rank-to-rank pull comes with this rank's KV of a prefilled prompt");
  }
  if (req.kv_mode == KvMode::kCompressed && policy_ == nullptr) {
    return absl::InvalidArgumentError(
        "compressed KV cache requested but this server has no KV compression "
        "configured");
  }
  if (req.embed &&
      (req.constraint != nullptr || req.import_kv != nullptr || req.export_kv ||
       req.publish_kv || req.park_kv || s.prompt_logprobs)) {
    return absl::InvalidArgumentError(
        "an embedding request takes no structured output, KV transfer or "
        "prompt log-probabilities");
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = std::move(req.id);
  seq->embed = req.embed;
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
  seq->publish_kv = req.publish_kv && options_.kv_store != nullptr;
  seq->import_kv = std::move(req.import_kv);
  seq->import_store_keys = std::move(req.import_store_keys);
  seq->park_kv = req.park_kv && options_.kv_parking != nullptr;
  seq->import_pull = std::move(req.import_pull);
  seq->import_first_token = req.import_first_token;
  seq->import_first_logprobs = std::move(req.import_first_logprobs);
  seq->constraint = std::move(req.constraint);
  seq->kv.Init(*cache_);  // shapes only: the cache's immutable geometry
  // (Embeddings see the whole input: no residency policy.)
  if (policy_ != nullptr && req.kv_mode != KvMode::kFull && !req.embed) {
    seq->kv.SetCapacity(policy_->capacities());
    seq->residency = policy_->NewSequence(seq->prompt_len);
  }
  const int64_t most = std::min<int64_t>(
      seq->prompt_len + int64_t{seq->max_new_tokens}, seq->max_total_tokens);
  const int64_t need = seq->kv.PagesNeeded(*cache_, most);
  if (need > kv_pages_total_) {
    // Permanent, not a momentary shortage: a client must not retry it.
    return absl::InvalidArgumentError(
        absl::StrCat("request needs ", need, " KV pages for ", most,
                     " tokens but the KV memory holds ", kv_pages_total_,
                     ": it can never fit (at most ", max_sequence_tokens_,
                     " tokens per sequence here)"));
  }
  return seq;
}

void EngineCore::Admit(std::unique_ptr<Sequence> seq, EventSink sink) {
  const std::string id = seq->id;
  seq->arrival = next_arrival_++;
  if (sinks_.count(id)) {
    GenerationEvent ev;
    ev.status = absl::AlreadyExistsError(
        absl::StrCat("request id ", id, " is already running"));
    sink(ev);
    return;
  }
  Sequence* raw = seq.get();
  const bool imported = raw->import_kv != nullptr && ArriveTransferred(raw);
  const bool shares =
      sharing_ != nullptr && !imported && from_prefix_->Applies(*raw);
  const absl::Span<const int32_t> prompt(raw->tokens.data(), raw->prompt_len);
  if (shares) {
    if (std::optional<std::string> leader = sharing_->LeaderFor(prompt)) {
      // Its prompt's blocks are being computed: wait, then share them.
      sinks_[id] = std::move(sink);
      sharing_->Park(std::move(seq), std::move(*leader));
      return;
    }
  }
  absl::Status st = scheduler_->Enqueue(std::move(seq));
  if (!st.ok()) {
    // The group's other ranks imported their parts: they free them too.
    if (imported) Record({GroupKvOp::Kind::kRelease, id, {}, 0});
    GenerationEvent ev;
    ev.status = st;
    sink(ev);
    return;
  }
  if (shares) {
    sharing_->AddLeader(id, std::vector<int32_t>(prompt.begin(), prompt.end()));
  }
  sinks_[id] = std::move(sink);
  if (imported && raw->import_first_token >= 0) {
    // The transferred first token is this request's first output.
    GenerationEvent ev;
    ev.token = raw->tokens.back();
    if (raw->sampling.logprobs >= 0) {
      ev.logprobs = raw->import_first_logprobs.value_or(TokenLogprobs{});
    }
    sinks_[id](ev);
    if (raw->constraint != nullptr) {
      // The prefill worker drew it under the same constraint.
      if (absl::Status c = raw->constraint->Accept(ev.token); !c.ok()) {
        Finish(raw, FinishReason::kStop, c);
        return;
      }
      if (raw->constraint->Done()) {
        Finish(raw, FinishReason::kStop, absl::OkStatus());
        return;
      }
    }
    if (raw->num_generated() >= raw->max_new_tokens) {
      Finish(raw, FinishReason::kLength, absl::OkStatus());
    }
  }
}

void EngineCore::Cancel(const std::string& id) {
  auto it = sinks_.find(id);
  if (it == sinks_.end()) return;
  EventSink sink = std::move(it->second);
  sinks_.erase(it);
  if (sharing_ == nullptr || sharing_->Unpark(id) == nullptr) {
    scheduler_->Remove(id);  // running or waiting: pages are released
    Record({GroupKvOp::Kind::kRelease, id, {}, 0});
    ReleaseFollowers(id);
  }
  GenerationEvent ev;
  ev.finish = FinishReason::kCancelled;
  sink(ev);
}

void EngineCore::Finish(Sequence* seq, FinishReason reason,
                        absl::Status status) {
  auto it = sinks_.find(seq->id);
  EventSink sink = it == sinks_.end() ? nullptr : std::move(it->second);
  if (it != sinks_.end()) sinks_.erase(it);
  const std::string id = seq->id;
  GenerationEvent ev;
  ev.finish = reason;
  TakePromptLogprobs(seq, &ev);
  if ((seq->export_kv || seq->park_kv) && status.ok() &&
      reason != FinishReason::kCancelled) {
    // Before the pages go. Parked: this rank's heads here, the other ranks'
    // in their own parking (kPark); exported: every rank's heads joined.
    auto snap =
        ExportSequenceKv(*cache_, *pools_, seq->kv, seq->residency.get());
    if (!snap.ok()) {
      status = snap.status();
    } else if (seq->park_kv) {
      options_.kv_parking->Park(seq->id, std::move(*snap));
      Record({GroupKvOp::Kind::kPark, seq->id, {}, 0});
    } else if (absl::StatusOr<KvSnapshot> group =
                   GroupExport(*seq, std::move(*snap));
               group.ok()) {
      ev.kv = std::make_shared<const KvSnapshot>(std::move(*group));
    } else {
      status = group.status();
    }
  }
  if (seq->embed && status.ok() && reason == FinishReason::kStop &&
      seq->embed_rows == seq->prompt_len) {
    ev.embedding.reserve(seq->embed_sum.size());
    for (const double v : seq->embed_sum) {
      ev.embedding.push_back(static_cast<float>(v / seq->embed_rows));
    }
  }
  if (status.ok()) IndexPrefix(*seq);
  if (status.ok() && reason != FinishReason::kCancelled) Publish(*seq);
  ev.status = std::move(status);
  scheduler_->Remove(id);  // releases pages; seq is gone after this
  Record({GroupKvOp::Kind::kRelease, id, {}, 0});
  if (sink) sink(ev);
  ReleaseFollowers(id);
}

void EngineCore::Publish(const Sequence& seq) {
  if (!seq.publish_kv ||
      !PublishSequenceKv(*cache_, *pools_, seq.kv, seq.residency.get(),
                         seq.tokens, options_.kv_store)) {
    return;
  }
  // The group's other ranks publish their KV heads before they free them.
  GroupKvOp op{GroupKvOp::Kind::kPublish, seq.id, seq.tokens,
               static_cast<int64_t>(seq.tokens.size())};
  Record(std::move(op));
}

void EngineCore::ReleaseFollowers(const std::string& leader) {
  if (sharing_ == nullptr) return;
  for (std::unique_ptr<Sequence>& f : sharing_->Release(leader)) {
    const std::string id = f->id;
    absl::Status st = scheduler_->Enqueue(std::move(f));
    if (st.ok()) continue;
    auto it = sinks_.find(id);
    if (it == sinks_.end()) continue;
    EventSink sink = std::move(it->second);
    sinks_.erase(it);
    GenerationEvent ev;
    ev.status = st;
    sink(ev);
  }
}

absl::StatusOr<KvSnapshot> EngineCore::GroupExport(const Sequence& seq,
                                                   KvSnapshot mine) {
  StepListener* listener = options_.step_listener;
  if (listener == nullptr || listener->ranks() <= 1) return mine;
  std::vector<KvSnapshot> others;
  absl::Status st =
      listener->OnExport(seq.id, seq.residency != nullptr, mine, &others);
  if (absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st)) fatal_ = st;
  if (!st.ok()) return st;
  std::vector<KvSnapshot> parts;
  parts.reserve(others.size() + 1);
  parts.push_back(std::move(mine));
  for (KvSnapshot& o : others) parts.push_back(std::move(o));
  return JoinHeads(parts, QueriesPerKvHead());
}

int32_t EngineCore::QueriesPerKvHead() const {
  const model::ModelConfig& c = config();
  return c.num_kv_heads > 0 ? c.num_heads / c.num_kv_heads : 1;
}

bool EngineCore::ArriveTransferred(Sequence* seq) {
  StepListener* listener = options_.step_listener;
  const int ranks = listener == nullptr ? 1 : listener->ranks();
  if (ranks > 1 && (!seq->import_store_keys.empty() ||
                    !seq->import_pull.transfer_id.empty())) {
    return ArriveFetchedByRanks(seq);
  }
  std::vector<KvSnapshot> parts;
  if (ranks > 1) {
    // This rank imports its KV heads; the others get theirs in OnImport.
    // Ragged heads (a partial or hostile peer's KV) would leave the ranks'
    // caches out of step: refused before any rank imports.
    auto split = HeadsHoldEqualTokens(*seq->import_kv)
                     ? SplitHeads(*seq->import_kv, ranks, QueriesPerKvHead())
                     : absl::InvalidArgumentError("ragged KV heads");
    if (!split.ok()) {
      seq->import_kv = nullptr;  // prefilled here
      ++import_refused_;
      return false;
    }
    parts = std::move(*split);
    seq->import_kv = std::make_shared<const KvSnapshot>(std::move(parts[0]));
  }
  for (KvArrival* a : {from_prefill_.get(), from_store_.get()}) {
    if (!a->Applies(*seq)) continue;
    const bool prompt_in = a == from_prefill_.get();
    if (!a->Attach(seq)) return false;
    if (ranks > 1) {
      const StepImportInfo info{&seq->id, seq->prompt_len,
                                seq->residency != nullptr, prompt_in};
      absl::Status st = listener->OnImport(group_ops_, info, parts);
      group_ops_.clear();
      // The group broke: the next step fails every request.
      if (!st.ok()) fatal_ = st;
    }
    return true;
  }
  return false;
}

bool EngineCore::ArriveFetchedByRanks(Sequence* seq) {
  // This rank's heads arrived with the request (from the store, or pulled
  // from the prefill ranks); the other ranks fetch theirs now.
  const bool pulled = !seq->import_pull.transfer_id.empty();
  KvArrival* arrival = pulled ? from_prefill_.get() : from_store_.get();
  if (!arrival->Applies(*seq) || !arrival->Attach(seq)) return false;
  StepListener* listener = options_.step_listener;
  const StepImportInfo info{&seq->id, seq->prompt_len,
                            seq->residency != nullptr, pulled};
  StepListener::RankFetch fetch;
  fetch.store_keys = seq->import_store_keys;
  if (pulled) fetch.pull = &seq->import_pull;
  auto got = listener->OnRankFetch(group_ops_, info, fetch);
  group_ops_.clear();
  if (!got.ok()) {
    fatal_ = got.status();  // the group broke: the next step fails all
    return true;
  }
  if (pulled) peer_pull_bytes_ += got->bytes;
  if (got->all) return true;
  // Some rank could not fetch its heads (evicted in between, a dead source,
  // a store error): no rank keeps any, and the group computes the prompt.
  arrival->Retract(pulled ? seq->prompt_len : seq->num_cached);
  seq->kv.Release(*cache_);
  seq->num_cached = 0;
  if (pulled) {
    // Undo the transferred first token: the group samples it itself, from
    // the request's seeded stream as if nothing had arrived.
    seq->tokens.resize(seq->prompt_len);
    seq->rng.seed(seq->sampling.seed);
    if (seq->residency != nullptr) {
      seq->residency = policy_->NewSequence(seq->prompt_len);
    }
  }
  Record({GroupKvOp::Kind::kRelease, seq->id, {}, 0});
  return false;
}

void EngineCore::FailAll(const absl::Status& status) {
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
  if (sharing_ != nullptr) sharing_->TakeAll();
  group_ops_.clear();
}

bool EngineCore::Announce(const std::vector<ScheduledChunk>& plan) {
  StepListener* listener = options_.step_listener;
  if (listener == nullptr) return true;
  const auto now = std::chrono::steady_clock::now();
  if (plan.empty() && group_ops_.empty() &&
      now - last_listened_ < std::chrono::milliseconds(options_.keepalive_ms)) {
    return true;
  }
  std::vector<StepChunkInfo> infos;
  for (const auto& p : plan) {
    infos.push_back({&p.seq->id, p.start, p.seq->tokens.data() + p.start, p.len,
                     p.seq->prompt_len, p.seq->residency != nullptr, p.sample,
                     WantsAllLogits(p)});
  }
  absl::Status st = listener->OnStep(group_ops_, infos);
  group_ops_.clear();
  last_listened_ = now;
  if (st.ok()) return true;
  fatal_ = st;
  FailAll(absl::UnavailableError(
      absl::StrCat("tensor-parallel group failed: ", st.message())));
  return false;
}

void EngineCore::Step() {
  const auto step_start = std::chrono::steady_clock::now();
  if (!fatal_.ok()) {
    FailAll(absl::UnavailableError(fatal_.message()));
    return;
  }
  std::vector<ScheduledChunk> plan = scheduler_->Schedule();
  RecordPreempted();
  if (!Announce(plan)) return;
  if (!plan.empty()) {
    std::vector<ForwardChunk> chunks;
    chunks.reserve(plan.size());
    for (const auto& p : plan) {
      ForwardChunk ch;
      ch.kv = &p.seq->kv;
      ch.tokens = p.seq->tokens.data() + p.start;
      ch.len = p.len;
      ch.start = p.start;
      ch.logits = p.seq->embed        ? ForwardChunk::Logits::kNone
                  : WantsAllLogits(p) ? ForwardChunk::Logits::kAll
                  : p.sample          ? ForwardChunk::Logits::kLast
                                      : ForwardChunk::Logits::kNone;
      ch.hidden = p.seq->embed;
      // Greedy rows need only their argmax (SampleToken's greedy rule).
      ch.greedy = UsesDeviceArgmax(*p.seq);
      if (p.seq->residency != nullptr) {
        // A chunk at position 0 starts from an empty cache (new, or
        // recomputed after preemption): the policy starts over too.
        if (p.start == 0) p.seq->residency->Reset();
        ch.residency = p.seq->residency.get();
      }
      chunks.push_back(ch);
    }
    if (PrefetchesMasks()) {
      std::vector<Sequence*> constrained;
      for (const auto& p : plan) {
        if (p.sample && p.seq->constraint != nullptr) {
          constrained.push_back(p.seq);
        }
      }
      masks_.Start(std::move(constrained));
    }
    absl::Status st = runner_->Forward(chunks, *cache_, *pools_, &logits_,
                                       &greedy_, &hidden_);
    masks_.Wait();
    if (!st.ok()) {
      // Keep the code: a broken tensor-parallel group is UNAVAILABLE (the
      // coordinator retries elsewhere), anything else INTERNAL.
      const absl::StatusCode code =
          absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st)
              ? absl::StatusCode::kUnavailable
              : absl::StatusCode::kInternal;
      for (const auto& p : plan) {
        Finish(
            p.seq, FinishReason::kNone,
            absl::Status(code, absl::StrCat("forward failed: ", st.message())));
      }
      if (code == absl::StatusCode::kUnavailable &&
          options_.step_listener != nullptr) {
        fatal_ = st;
      }
    } else {
      tokens_generated_ += Emit(plan);
      ++steps_;
    }
  }
  if (prefix_ != nullptr) prefix_->Publish();
  if (options_.on_step && !plan.empty()) {
    options_.on_step(std::chrono::steady_clock::now() - step_start);
  }
}

int64_t EngineCore::Emit(const std::vector<ScheduledChunk>& plan) {
  const int32_t vocab = config().vocab_size;
  int64_t row = 0, generated = 0;
  int64_t hidden_row = 0;  // rows of hidden_ (embed chunks, in order)
  for (const auto& p : plan) {
    Sequence* seq = p.seq;
    seq->num_cached += p.len;
    if (p.start < seq->prompt_len && seq->num_cached >= seq->prompt_len) {
      IndexPrefix(*seq);  // the prompt is in: share it from now on
      ReleaseFollowers(seq->id);
    }
    if (seq->embed) {
      AddEmbeddingRows(p, hidden_.data() + hidden_row * config().hidden_size);
      hidden_row += p.len;
      if (seq->num_cached >= seq->prompt_len) {
        Finish(seq, FinishReason::kStop, absl::OkStatus());
      }
      continue;
    }
    if (seq->residency != nullptr) {
      evicted_total_ += seq->residency->evicted_slots() - seq->evicted_reported;
      seq->evicted_reported = seq->residency->evicted_slots();
    }
    if (WantsAllLogits(p)) {
      // Rows row .. row + len - 1 are the chunk's positions; a sampled
      // chunk's last row is also its sampling row (below).
      RecordPromptLogprobs(p, logits_.data() + row * vocab);
      row += p.len - 1;
      if (!p.sample) {
        ++row;
        continue;
      }
    } else if (!p.sample) {
      continue;
    }
    // Greedy rows without logit controls were chosen on the backend (the
    // same rule, and no random number drawn); the others take the controls
    // and sample from their copied logits.
    int32_t tok;
    std::optional<TokenLogprobs> logprobs;
    if (UsesDeviceArgmax(*seq)) {
      tok = greedy_[row];
    } else {
      float* logits = logits_.data() + row * vocab;
      // Log-probabilities are of the raw logits: keep them from the
      // controls (a copy only when both are asked for).
      const float* raw = logits;
      if (seq->sampling.logprobs >= 0 &&
          seq->sampling.controls.ChangesLogits()) {
        raw_logits_.assign(logits, logits + vocab);
        raw = raw_logits_.data();
      }
      const absl::Span<const int32_t> all(seq->tokens);
      ApplyLogitControls(logits, vocab, seq->sampling.controls,
                         all.subspan(0, seq->prompt_len),
                         all.subspan(seq->prompt_len));
      if (seq->constraint != nullptr) {
        absl::StatusOr<int32_t> t = SampleConstrained(seq, logits);
        if (!t.ok()) {
          Finish(seq, FinishReason::kStop, t.status());
          continue;
        }
        tok = *t;
      } else {
        tok = SampleToken(logits, vocab, seq->sampling, seq->rng, &scratch_);
      }
      if (seq->sampling.logprobs >= 0) {
        logprobs =
            ComputeLogprobs(raw, vocab, tok, seq->sampling.logprobs, &scratch_);
      }
    }
    ++row;
    const auto& stops = seq->sampling.controls.stop_token_ids;
    // A constrained sequence ends where its grammar puts EOS, ignore_eos
    // or not.
    if (((!seq->ignore_eos || seq->constraint != nullptr) &&
         IsEos(*seq, tok)) ||
        std::find(stops.begin(), stops.end(), tok) != stops.end()) {
      Finish(seq, FinishReason::kStop, absl::OkStatus());
      continue;
    }
    if (seq->constraint != nullptr) {
      if (absl::Status st = seq->constraint->Accept(tok); !st.ok()) {
        Finish(seq, FinishReason::kStop, st);
        continue;
      }
    }
    seq->tokens.push_back(tok);
    ++generated;
    auto it = sinks_.find(seq->id);
    if (it != sinks_.end()) {
      GenerationEvent ev;
      ev.token = tok;
      ev.logprobs = std::move(logprobs);
      TakePromptLogprobs(seq, &ev);
      it->second(ev);
    }
    if (seq->constraint != nullptr && seq->constraint->Done()) {
      Finish(seq, FinishReason::kStop, absl::OkStatus());
    } else if (seq->num_generated() >= seq->max_new_tokens ||
               static_cast<int64_t>(seq->tokens.size()) >=
                   seq->max_total_tokens) {
      Finish(seq, FinishReason::kLength, absl::OkStatus());
    }
  }
  return generated;
}

EngineStats EngineCore::Stats() const {
  EngineStats s;
  s.running = scheduler_->num_running();
  s.waiting = scheduler_->num_waiting() +
              (sharing_ != nullptr ? sharing_->num_parked() : 0);
  s.kv_pages_in_use = cache_->pages_in_use();
  s.kv_pages_total = kv_pages_total_;
  s.kv_bytes_in_use = cache_->bytes_in_use();
  s.kv_bytes_capacity = cache_->capacity_bytes();
  s.steps = steps_;
  s.tokens_generated = tokens_generated_;
  s.preemptions = scheduler_->preemptions();
  s.kv_evicted_slots = evicted_total_;
  s.kv_imports = from_prefill_->attached() + from_store_->attached();
  s.kv_import_failures =
      from_prefill_->failed() + from_store_->failed() + import_refused_;
  s.kv_peer_pull_bytes = peer_pull_bytes_;
  s.kv_layer_bytes_in_use.resize(cache_->num_layers());
  for (int32_t l = 0; l < cache_->num_layers(); ++l) {
    s.kv_layer_bytes_in_use[l] = cache_->layer_bytes_in_use(l);
  }
  if (prefix_ != nullptr) {
    s.prefix_cached_blocks = prefix_->num_blocks();
    s.prefix_cached_pages = prefix_->num_pages();
  }
  s.prefix_lookup_tokens = from_prefix_->looked_up();
  s.prefix_hit_tokens = from_prefix_->tokens();
  s.prefix_hits = from_prefix_->attached();
  s.prefix_evicted_blocks = prefix_evicted_;
  return s;
}

void EngineCore::AddEmbeddingRows(const ScheduledChunk& p, const float* rows) {
  Sequence* seq = p.seq;
  const int64_t H = config().hidden_size;
  if (p.start == 0) {  // (re)computed from the start: after a preemption too
    seq->embed_sum.assign(H, 0.0);
    seq->embed_rows = 0;
  }
  if (p.start != seq->embed_rows) return;  // not the next rows
  const int64_t n = std::min<int64_t>(p.len, seq->prompt_len - p.start);
  for (int64_t i = 0; i < n; ++i) {
    const float* r = rows + i * H;
    for (int64_t j = 0; j < H; ++j) seq->embed_sum[j] += r[j];
  }
  seq->embed_rows += n;
}

void EngineCore::RecordPromptLogprobs(const ScheduledChunk& p,
                                      const float* rows) {
  Sequence* seq = p.seq;
  if (seq->prompt_lp_sent) return;  // recomputed after a preemption
  const int32_t vocab = config().vocab_size;
  for (int32_t i = 0; i < p.len; ++i) {
    // Position start + i predicts the token after it.
    const int64_t next = p.start + i + 1;
    if (next >= seq->prompt_len) break;
    if (next != static_cast<int64_t>(seq->prompt_lp.size()) + 1) continue;
    seq->prompt_lp.push_back(
        ComputeLogprobs(rows + int64_t{i} * vocab, vocab, seq->tokens[next],
                        seq->sampling.logprobs, &scratch_));
  }
}

void EngineCore::TakePromptLogprobs(Sequence* seq, GenerationEvent* ev) {
  if (!seq->sampling.prompt_logprobs || seq->prompt_lp_sent ||
      seq->num_cached < seq->prompt_len) {
    return;
  }
  ev->prompt_logprobs = std::move(seq->prompt_lp);
  seq->prompt_lp.clear();
  seq->prompt_lp_sent = true;
}

void EngineCore::IndexPrefix(const Sequence& seq) {
  if (prefix_ == nullptr || seq.residency != nullptr) return;
  prefix_->Insert(seq.kv, seq.tokens, seq.num_cached);
  RecordTokens(GroupKvOp::Kind::kIndex, seq, seq.num_cached);
}

void EngineCore::Record(GroupKvOp op) {
  if (options_.step_listener != nullptr) group_ops_.push_back(std::move(op));
}

void EngineCore::RecordTokens(GroupKvOp::Kind kind, const Sequence& seq,
                              int64_t n) {
  if (options_.step_listener == nullptr) return;
  GroupKvOp op{kind, seq.id, {}, n};
  op.tokens.assign(seq.tokens.begin(), seq.tokens.begin() + n);
  group_ops_.push_back(std::move(op));
}

void EngineCore::RecordPreempted() {
  for (std::string& id : scheduler_->TakePreempted()) {
    Record({GroupKvOp::Kind::kRelease, std::move(id), {}, 0});
  }
}

bool EngineCore::PrefetchesMasks() const {
  switch (options_.structured_output_masks) {
    case EngineOptions::MaskMode::kPrefetch:
      return true;
    case EngineOptions::MaskMode::kLazy:
      return false;
    case EngineOptions::MaskMode::kAuto:
      break;
  }
  return !backend_->host_addressable();
}

absl::StatusOr<int32_t> EngineCore::SampleConstrained(Sequence* seq,
                                                      float* logits) {
  const int32_t vocab = config().vocab_size;
  const SamplingOptions& s = seq->sampling;
  const bool untruncated =
      s.top_k == 0 && s.top_p >= 1.0f && s.controls.min_p <= 0.0f;
  // One value of the sequence's stream per sampled token, as for any row
  // (a decode worker skips the prefill worker's draw), and the two tries
  // below on streams seeded from it: both mask modes give the same tokens.
  const uint64_t u = s.temperature > 0.0f ? seq->rng() : 0;
  if (untruncated) {
    // A draw the constraint allows is a draw from the masked distribution
    // (rejection sampling; for greedy, the masked argmax).
    SamplerRng first(u);
    const int32_t tok = SampleToken(logits, vocab, s, first, &scratch_);
    const bool allowed = seq->mask_ready
                             ? seq->mask_status.ok() &&
                                   tok / 32 < std::ssize(seq->mask) &&
                                   (seq->mask[tok / 32] >> (tok % 32) & 1u) != 0
                             : seq->constraint->Allows(tok);
    if (allowed) {
      seq->mask_ready = false;
      return tok;
    }
  }
  if (absl::Status st = MaskDisallowed(seq, logits); !st.ok()) return st;
  SamplerRng second(u ^ 0x9E3779B97F4A7C15ull);
  return SampleToken(logits, vocab, s, second, &scratch_);
}

absl::Status EngineCore::MaskDisallowed(Sequence* seq, float* logits) {
  const int32_t vocab = config().vocab_size;
  TokenConstraint& c = *seq->constraint;
  if (int64_t{c.mask_words()} * 32 < vocab) {
    return absl::InternalError(
        "structured output mask is smaller than the "
        "vocabulary");
  }
  if (!seq->mask_ready) FillSequenceMask(seq);  // not prefetched
  seq->mask_ready = false;
  if (!seq->mask_status.ok()) return seq->mask_status;
  const std::vector<uint32_t>& mask = seq->mask;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (int32_t w = 0; w * 32 < vocab; ++w) {
    const uint32_t bits = mask[w];
    any = any || bits != 0;
    if (bits == 0xFFFFFFFFu) continue;
    const int32_t end = std::min(vocab, (w + 1) * 32);
    for (int32_t t = w * 32; t < end; ++t) {
      if ((bits >> (t - w * 32) & 1u) == 0) logits[t] = kNegInf;
    }
  }
  if (!any) {
    return absl::InternalError("structured output allows no next token");
  }
  return absl::OkStatus();
}

}  // namespace latentkv::worker
