#include "worker/tp/tensor_parallel.h"

#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "latentkv/v1/worker.pb.h"
#include "worker/cache/kv_snapshot_heads.h"
#include "worker/engine/kv_arrival.h"
#include "worker/tp/tp_kv.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

absl::Status CheckTensorParallelResidency(const ResidencyOptions& options,
                                          int num_layers, int tp_size) {
  if (tp_size <= 1 || options.policy != "spindle") return absl::OkStatus();
  const int32_t shallow = options.codebook_layers;
  if (shallow == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "codebook layers (--kv_codebook_layers=", shallow, " of ", num_layers,
      ") are not supported with tensor parallelism: their page use depends "
      "on each rank's data; use --kv_codebook_layers=0 with --tp > 1"));
}

std::string GroupKvLayout(const EngineOptions& options,
                          const model::ModelConfig& c) {
  const ResidencyOptions& r = options.residency;
  std::string out = absl::StrCat(
      "page_size=", options.kv.page_size, " kv_bytes=", options.kv.max_bytes,
      " kv_dtype=", std::string(DTypeName(options.kv.dtype)),
      " policy=", r.policy, " budget=", r.budget, " window=", r.window,
      " codebook_layers=", r.codebook_layers,
      " prefix_caching=", options.prefix_caching ? 1 : 0,
      " capacity=", absl::StrJoin(r.capacity, ","), " heads=", c.num_heads, "/",
      c.num_kv_heads, " layers=");
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    absl::StrAppend(&out, l ? "," : "",
                    i < c.qk_head_dim.size() ? c.qk_head_dim[i] : 0, "x",
                    i < c.vo_head_dim.size() ? c.vo_head_dim[i] : 0);
    if (i < c.rope_dims.size()) absl::StrAppend(&out, "r", c.rope_dims[i]);
  }
  return out;
}

absl::Status AgreeOnGroupLayout(Communicator* comm, const std::string& layout) {
  std::vector<std::string> all;
  if (absl::Status st = comm->GatherStrings(layout, 0, &all); !st.ok()) {
    return st;
  }
  std::string verdict;
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    verdict = absl::StrCat("tensor-parallel rank ", r,
                           " is configured differently from rank 0: [", all[r],
                           "] vs [", all[0], "]");
    break;
  }
  if (absl::Status st = comm->BroadcastString(&verdict, 0); !st.ok()) {
    return st;
  }
  if (verdict.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(verdict);
}

namespace {

void AddOps(const std::vector<GroupKvOp>& ops, pb::TpStep* step) {
  for (const GroupKvOp& op : ops) {
    pb::TpKvOp* out = step->add_ops();
    switch (op.kind) {
      case GroupKvOp::Kind::kRelease:
        out->set_kind(pb::TpKvOp::RELEASE);
        break;
      case GroupKvOp::Kind::kIndex:
        out->set_kind(pb::TpKvOp::INDEX);
        break;
      case GroupKvOp::Kind::kAttach:
        out->set_kind(pb::TpKvOp::ATTACH);
        break;
      case GroupKvOp::Kind::kEvict:
        out->set_kind(pb::TpKvOp::EVICT);
        break;
      case GroupKvOp::Kind::kPublish:
        out->set_kind(pb::TpKvOp::PUBLISH);
        break;
      case GroupKvOp::Kind::kPark:
        out->set_kind(pb::TpKvOp::PARK);
        break;
    }
    out->set_id(op.id);
    out->mutable_tokens()->Add(op.tokens.begin(), op.tokens.end());
    out->set_n(op.n);
  }
}

// A step of `ops` and one import of `info`'s sequence.
pb::TpStep ImportStep(const std::vector<GroupKvOp>& ops,
                      const StepImportInfo& info) {
  pb::TpStep step;
  AddOps(ops, &step);
  pb::TpImport* im = step.add_imports();
  im->set_id(*info.id);
  im->set_prompt_len(info.prompt_len);
  im->set_compressed(info.compressed);
  im->set_prompt_in(info.prompt_in);
  return step;
}

}  // namespace

absl::Status TpLeader::OnStep(const std::vector<GroupKvOp>& ops,
                              const std::vector<StepChunkInfo>& chunks) {
  pb::TpStep step;
  AddOps(ops, &step);
  for (const StepChunkInfo& c : chunks) {
    pb::TpChunk* out = step.add_chunks();
    out->set_id(*c.id);
    out->set_start(c.start);
    out->mutable_tokens()->Add(c.tokens, c.tokens + c.len);
    out->set_prompt_len(c.prompt_len);
    out->set_compressed(c.compressed);
    out->set_logits(c.logits);
    out->set_all_logits(c.all_logits);
  }
  return Send(step);
}

absl::Status TpLeader::Send(const pb::TpStep& step) {
  buffer_.clear();
  step.SerializeToString(&buffer_);
  return comm_->BroadcastString(&buffer_, 0);
}

absl::Status TpLeader::OnExport(const std::string& id, bool with_state,
                                const KvSnapshot& mine,
                                std::vector<KvSnapshot>* others) {
  pb::TpStep step;
  step.set_export_id(id);
  step.set_export_codebooks(with_state);
  if (absl::Status st = Send(step); !st.ok()) return st;
  std::vector<std::string> all;
  if (absl::Status st = comm_->GatherStrings("", 0, &all); !st.ok()) {
    return st;
  }
  others->clear();
  for (int r = 1; r < comm_->size(); ++r) {
    auto part = ParseTpKv(all[r], mine.shapes, mine.dtype);
    if (!part.ok()) {
      return absl::InternalError(absl::StrCat("tensor-parallel rank ", r,
                                              " could not export ", id, ": ",
                                              part.status().message()));
    }
    others->push_back(std::move(*part));
  }
  return absl::OkStatus();
}

absl::Status TpLeader::OnImport(const std::vector<GroupKvOp>& ops,
                                const StepImportInfo& info,
                                const std::vector<KvSnapshot>& parts) {
  if (parts.size() != static_cast<size_t>(comm_->size())) {
    return absl::InternalError("KV import parts do not match the group");
  }
  pb::TpStep step = ImportStep(ops, info);
  if (absl::Status st = Send(step); !st.ok()) return st;
  std::vector<std::string> wire(parts.size());
  for (size_t r = 1; r < parts.size(); ++r) wire[r] = SerializeTpKv(parts[r]);
  std::string mine;
  return comm_->ScatterStrings(wire, 0, &mine);
}

absl::StatusOr<StepListener::RankFetchResult> TpLeader::OnRankFetch(
    const std::vector<GroupKvOp>& ops, const StepImportInfo& info,
    const RankFetch& fetch) {
  pb::TpStep step = ImportStep(ops, info);
  pb::TpImport* im = step.mutable_imports(0);
  im->mutable_store_keys()->Add(fetch.store_keys.begin(),
                                fetch.store_keys.end());
  if (fetch.pull != nullptr) PullToProto(*fetch.pull, im->mutable_pull());
  if (absl::Status st = Send(step); !st.ok()) return st;
  std::vector<std::string> verdicts;
  if (absl::Status st = comm_->GatherStrings("", 0, &verdicts); !st.ok()) {
    return st;
  }
  RankFetchResult result;
  result.all = true;
  for (size_t r = 1; r < verdicts.size(); ++r) {
    int64_t bytes = 0;
    if (!verdicts[r].empty() && verdicts[r][0] == '=' &&
        absl::SimpleAtoi(verdicts[r].substr(1), &bytes)) {
      result.bytes += bytes;
      continue;
    }
    result.all = false;
    std::fprintf(stderr,
                 "latentkv-worker: rank %zu could not fetch its KV heads of "
                 "%s (the group computes it): %s\n",
                 r, info.id->c_str(), verdicts[r].c_str());
  }
  return result;
}

void TpLeader::OnStop() {
  pb::TpStep step;
  step.set_shutdown(true);
  buffer_.clear();
  step.SerializeToString(&buffer_);
  // Followers that are already gone make this fail; nothing to do then.
  comm_->BroadcastString(&buffer_, 0).IgnoreError();
}

absl::StatusOr<std::unique_ptr<TpFollower>> TpFollower::Create(
    std::shared_ptr<const model::ModelWeights> shard,
    std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
    Communicator* comm) {
  std::unique_ptr<TpFollower> f(new TpFollower());
  f->weights_ = std::move(shard);
  f->backend_ = std::move(backend);
  f->comm_ = comm;
  f->kv_store_ = options.kv_store;
  f->kv_parking_ = options.kv_parking;
  f->kv_puller_ = options.kv_puller;
  f->runner_ =
      std::make_unique<ModelRunner>(f->weights_, f->backend_.get(), comm);
  auto kv = CreateKvStorage(*f->runner_, f->backend_.get(), options.kv);
  if (!kv.ok()) return kv.status();
  f->cache_ = std::move(kv->cache);
  f->pools_ = std::move(kv->pools);
  if (options.prefix_caching) {
    // The leader's index decides; this one repeats its changes (Apply).
    f->prefix_ = std::make_unique<PrefixIndex>(f->cache_.get());
  }
  const model::ModelConfig& c = f->weights_->config;
  const ResidencyOptions& ro = options.residency;
  auto policy =
      CreateResidencyPolicy(ro, {c.num_layers, c.num_heads, c.num_kv_heads,
                                 c.qk_head_dim, c.sliding_window});
  if (!policy.ok()) return policy.status();
  f->policy_ = std::move(*policy);
  return f;
}

TpFollower::~TpFollower() {
  for (auto& [id, s] : seqs_) s.kv.Release(*cache_);
  prefix_.reset();  // its page references go before the cache
}

void TpFollower::Release(const std::string& id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  it->second.kv.Release(*cache_);
  seqs_.erase(it);
}

TpFollower::Seq& TpFollower::Start(const std::string& id, bool compressed,
                                   int32_t prompt_len) {
  Release(id);
  Seq& s = seqs_[id];
  s.kv.Init(*cache_);
  if (policy_ != nullptr && compressed) {
    s.kv.SetCapacity(policy_->capacities());
    s.residency = policy_->NewSequence(prompt_len);
  }
  return s;
}

absl::Status TpFollower::ImportInto(const pb::TpImport& im,
                                    const absl::StatusOr<KvSnapshot>& snap) {
  absl::Status st = snap.status();
  Seq& s = Start(im.id(), im.compressed(), im.prompt_len());
  if (st.ok()) {
    st = ImportSequenceKv(*cache_, *pools_, s.kv, s.residency.get(), *snap);
  }
  if (!st.ok()) {
    Release(im.id());
    return st;
  }
  if (im.prompt_in() && s.residency != nullptr) s.residency->MarkPromptIn();
  return absl::OkStatus();
}

absl::Status TpFollower::Import(const pb::TpImport& im,
                                const std::string& part) {
  std::vector<LayerKvShape> shapes;
  for (int32_t l = 0; l < cache_->num_layers(); ++l) {
    shapes.push_back(cache_->shape(l));
  }
  absl::Status st = ImportInto(im, ParseTpKv(part, shapes, pools_->dtype()));
  if (!st.ok()) {
    return absl::InternalError(
        absl::StrCat("tensor-parallel rank ", comm_->rank(),
                     " diverged from the leader importing KV for ", im.id(),
                     ": ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status TpFollower::Apply(const pb::TpKvOp& op) {
  if (op.kind() == pb::TpKvOp::RELEASE) {
    Release(op.id());
    return absl::OkStatus();
  }
  auto diverged = [&](absl::string_view what) {
    return absl::InternalError(absl::StrCat(
        "tensor-parallel rank ", comm_->rank(),
        " diverged from the leader's prefix cache (", what, " ", op.id(), ")"));
  };
  if (op.kind() == pb::TpKvOp::PUBLISH) {
    Publish(op.id(),
            {op.tokens().data(), static_cast<size_t>(op.tokens_size())});
    return absl::OkStatus();
  }
  if (op.kind() == pb::TpKvOp::PARK) {
    Park(op.id());
    return absl::OkStatus();
  }
  if (prefix_ == nullptr) return diverged("no prefix cache here for");
  const absl::Span<const int32_t> tokens(op.tokens().data(), op.tokens_size());
  switch (op.kind()) {
    case pb::TpKvOp::INDEX: {
      auto it = seqs_.find(op.id());
      if (it == seqs_.end()) return diverged("indexing unknown");
      prefix_->Insert(it->second.kv, tokens, op.n());
      return absl::OkStatus();
    }
    case pb::TpKvOp::ATTACH: {
      Seq& s = Start(op.id(), /*compressed=*/false, 0);
      if (!prefix_->Attach(s.kv, tokens, op.n()).ok()) {
        Release(op.id());
        return diverged("attaching");
      }
      return absl::OkStatus();
    }
    case pb::TpKvOp::EVICT:
      if (prefix_->Evict(op.n()) != op.n()) return diverged("evicting for");
      return absl::OkStatus();
    default:
      return diverged("unknown op for");
  }
}

void TpFollower::Publish(const std::string& id,
                         absl::Span<const int32_t> tokens) {
  auto it = seqs_.find(id);
  // Without a store link (or the sequence) there is nothing to publish: the
  // store never completes those blocks, and nothing else changes.
  if (kv_store_ == nullptr || it == seqs_.end()) return;
  PublishSequenceKv(*cache_, *pools_, it->second.kv, it->second.residency.get(),
                    std::vector<int32_t>(tokens.begin(), tokens.end()),
                    kv_store_);
}

void TpFollower::Park(const std::string& id) {
  auto it = seqs_.find(id);
  // Without parking (or the sequence) the decode side's pull of these heads
  // fails and it computes the prompt itself; nothing else changes.
  if (kv_parking_ == nullptr || it == seqs_.end()) return;
  auto snap = ExportSequenceKv(*cache_, *pools_, it->second.kv,
                               it->second.residency.get());
  if (snap.ok()) kv_parking_->Park(id, std::move(*snap));
}

std::string TpFollower::ImportFetched(const pb::TpImport& im) {
  absl::StatusOr<KvSnapshot> snap;
  int64_t bytes = 0;
  if (im.has_pull()) {
    snap = kv_puller_ == nullptr
               ? absl::FailedPreconditionError("no rank-to-rank puller")
               : kv_puller_->Pull(PullFromProto(im.pull()), &bytes);
  } else {
    snap = kv_store_ == nullptr
               ? absl::FailedPreconditionError("no kvstore")
               : kv_store_->FetchBlocks(
                     {im.store_keys().data(),
                      static_cast<size_t>(im.store_keys_size())});
    if (snap.ok()) bytes = snap->bytes();
  }
  if (snap.ok() && !HeadsHoldEqualTokens(*snap)) {
    snap = absl::DataLossError("fetched KV heads hold unequal token counts");
  }
  if (absl::Status st = ImportInto(im, snap); !st.ok()) {
    return absl::StrCat("rank ", comm_->rank(), ": ", st.message());
  }
  return absl::StrCat("=", bytes);
}

std::string TpFollower::Export(const std::string& id, bool with_state) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) {
    return SerializeTpKvError(
        absl::StrCat("rank ", comm_->rank(), " holds no KV for ", id));
  }
  Seq& s = it->second;
  // `with_state` is the leader's residency flag; ours follows the same
  // chunk flags, so it is s.residency != nullptr.
  absl::StatusOr<KvSnapshot> snap = ExportSequenceKv(
      *cache_, *pools_, s.kv, with_state ? s.residency.get() : nullptr);
  if (!snap.ok()) {
    return SerializeTpKvError(std::string(snap.status().message()));
  }
  return SerializeTpKv(*snap);
}

absl::Status TpFollower::Run() {
  std::string buffer;
  std::vector<float> logits;
  while (true) {
    absl::Status st = comm_->BroadcastString(&buffer, 0);
    if (!st.ok()) return st;
    pb::TpStep step;
    if (!step.ParseFromString(buffer)) {
      return absl::DataLossError("tensor-parallel step message is corrupt");
    }
    if (step.shutdown()) return absl::OkStatus();
    for (const pb::TpKvOp& op : step.ops()) {
      st = Apply(op);
      if (!st.ok()) return st;
    }
    for (const pb::TpImport& im : step.imports()) {
      if (im.store_keys_size() > 0 || im.has_pull()) {
        std::vector<std::string> unused;
        st = comm_->GatherStrings(ImportFetched(im), 0, &unused);
        if (!st.ok()) return st;
        continue;
      }
      std::string part;
      st = comm_->ScatterStrings({}, 0, &part);
      if (!st.ok()) return st;
      st = Import(im, part);
      if (!st.ok()) return st;
    }
    if (!step.export_id().empty()) {
      std::vector<std::string> unused;
      st = comm_->GatherStrings(
          Export(step.export_id(), step.export_codebooks()), 0, &unused);
      if (!st.ok()) return st;
    }
    if (step.chunks().empty()) continue;  // keep-alive
    std::vector<ForwardChunk> chunks;
    chunks.reserve(step.chunks_size());
    for (const pb::TpChunk& ch : step.chunks()) {
      // New, or recomputed from the start: its KV starts over.
      auto it = seqs_.find(ch.id());
      Seq& s = ch.start() == 0 || it == seqs_.end()
                   ? Start(ch.id(), ch.compressed(), ch.prompt_len())
                   : it->second;
      st = s.kv.Reserve(*cache_, ch.tokens_size());
      if (!st.ok()) {
        return absl::InternalError(
            absl::StrCat("tensor-parallel rank ", comm_->rank(),
                         " diverged from the leader reserving KV for ", ch.id(),
                         ": ", st.message()));
      }
      ForwardChunk fc;
      fc.kv = &s.kv;
      fc.tokens = ch.tokens().data();
      fc.len = ch.tokens_size();
      fc.start = ch.start();
      fc.logits = ch.all_logits() ? ForwardChunk::Logits::kAll
                  : ch.logits()   ? ForwardChunk::Logits::kLast
                                  : ForwardChunk::Logits::kNone;
      fc.residency = s.residency.get();
      chunks.push_back(fc);
    }
    st = runner_->Forward(chunks, *cache_, *pools_, &logits);
    if (!st.ok()) return st;
    ++steps_;
  }
}

}  // namespace latentkv::worker
