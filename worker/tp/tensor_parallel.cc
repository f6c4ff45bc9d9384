#include "worker/tp/tensor_parallel.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "latentkv/v1/worker.pb.h"

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

absl::Status TpLeader::OnStep(const std::vector<std::string>& released,
                              const std::vector<StepChunkInfo>& chunks) {
  pb::TpStep step;
  for (const std::string& id : released) step.add_released(id);
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
  buffer_.clear();
  step.SerializeToString(&buffer_);
  return comm_->BroadcastString(&buffer_, 0);
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
  f->runner_ =
      std::make_unique<ModelRunner>(f->weights_, f->backend_.get(), comm);
  auto kv = CreateKvStorage(*f->runner_, f->backend_.get(), options.kv);
  if (!kv.ok()) return kv.status();
  f->cache_ = std::move(kv->cache);
  f->pools_ = std::move(kv->pools);
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
}

void TpFollower::Release(const std::string& id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  it->second.kv.Release(*cache_);
  seqs_.erase(it);
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
    for (const std::string& id : step.released()) Release(id);
    if (step.chunks().empty()) continue;  // keep-alive
    std::vector<ForwardChunk> chunks;
    chunks.reserve(step.chunks_size());
    for (const pb::TpChunk& ch : step.chunks()) {
      if (ch.start() == 0) Release(ch.id());  // new, or recomputed
      auto [it, fresh] = seqs_.try_emplace(ch.id());
      Seq& s = it->second;
      if (fresh) {
        s.kv.Init(*cache_);
        if (policy_ != nullptr && ch.compressed()) {
          s.kv.SetCapacity(policy_->capacities());
          s.residency = policy_->NewSequence(ch.prompt_len());
        }
      }
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
