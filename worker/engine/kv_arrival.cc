#include "worker/engine/kv_arrival.h"

#include <utility>

#include "worker/kv/kv_io.h"
#include "worker/residency/residency_policy.h"

namespace latentkv::worker {
namespace {

// Rows (and residency state) of a snapshot into seq->kv; on any error the
// sequence holds nothing again.
bool ImportRows(KvCache& cache, KvPools& pools, Sequence* seq,
                const KvSnapshot& snap) {
  seq->kv.Init(cache);
  if (ImportSequenceKv(cache, pools, seq->kv, seq->residency.get(), snap)
          .ok()) {
    return true;
  }
  seq->kv.Release(cache);
  if (seq->residency != nullptr) seq->residency->Reset();
  return false;
}

// The arrivals of transferred rows (a prefill worker's, the kvstore's).
class RowsArrival : public KvArrival {
 public:
  RowsArrival(KvCache* cache, KvPools* pools) : cache_(cache), pools_(pools) {}

 protected:
  KvCache* cache_;
  KvPools* pools_;
};

class PrefillArrival final : public RowsArrival {
 public:
  using RowsArrival::RowsArrival;
  std::string_view name() const override { return "prefill"; }
  bool Applies(const Sequence& seq) const override {
    return seq.import_kv != nullptr && seq.import_first_token >= 0;
  }
  bool Attach(Sequence* seq) override {
    std::shared_ptr<const KvSnapshot> snap = std::move(seq->import_kv);
    if (!ImportRows(*cache_, *pools_, seq, *snap)) return Count(false, 0);
    seq->num_cached = seq->prompt_len;
    seq->tokens.push_back(seq->import_first_token);
    // The prefill worker drew the first token from the same seeded stream:
    // skip that draw (one 64-bit value per sampled token, sampler.cc) so a
    // seeded request samples the same tokens disaggregated as on one worker.
    if (seq->sampling.temperature > 0.0f) seq->rng.discard(1);
    if (seq->residency != nullptr) seq->residency->MarkPromptIn();
    return Count(true, seq->prompt_len);
  }
};

class KvStoreArrival final : public RowsArrival {
 public:
  using RowsArrival::RowsArrival;
  std::string_view name() const override { return "kvstore"; }
  bool Applies(const Sequence& seq) const override {
    return seq.import_kv != nullptr && seq.import_first_token < 0;
  }
  bool Attach(Sequence* seq) override {
    std::shared_ptr<const KvSnapshot> snap = std::move(seq->import_kv);
    if (!ImportRows(*cache_, *pools_, seq, *snap)) return Count(false, 0);
    // A stored prefix: a full cache of the same length in every (layer,
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
      return Count(false, 0);
    }
    seq->num_cached = n;
    return Count(true, n);
  }
};

class LocalPrefixArrival final : public KvArrival {
 public:
  LocalPrefixArrival(KvCache* cache, PrefixIndex* index)
      : cache_(cache), index_(index) {}
  std::string_view name() const override { return "local_prefix"; }
  bool Applies(const Sequence& seq) const override {
    return index_ != nullptr && seq.residency == nullptr &&
           seq.num_cached == 0 && seq.import_kv == nullptr &&
           !seq.sampling.prompt_logprobs && !seq.embed;
  }
  bool Attach(Sequence* seq) override {
    const int64_t len = static_cast<int64_t>(seq->tokens.size());
    CountLookup(len);
    // The last token always runs: its logits give the next sample.
    const int64_t n = index_->Match(seq->tokens, len - 1);
    if (n == 0) return false;  // nothing cached: not a failure
    if (!index_->Attach(seq->kv, seq->tokens, n).ok()) {
      seq->kv.Release(*cache_);
      return Count(false, 0);
    }
    seq->num_cached = n;
    return Count(true, n);
  }

 private:
  KvCache* cache_;
  PrefixIndex* index_;
};

}  // namespace

absl::StatusOr<KvSnapshot> ExportSequenceKv(const KvCache& cache,
                                            KvPools& pools,
                                            const SequenceKv& kv,
                                            const SequencePolicy* residency) {
  // Codebook layers move their entries as they are.
  absl::StatusOr<KvSnapshot> snap =
      ExportKv(cache, pools, kv, residency != nullptr);
  if (snap.ok() && residency != nullptr) {
    residency->ExportState(cache, pools, kv, &*snap);
  }
  return snap;
}

absl::Status ImportSequenceKv(KvCache& cache, KvPools& pools, SequenceKv& kv,
                              SequencePolicy* residency,
                              const KvSnapshot& snap) {
  absl::Status st = ImportKv(cache, pools, kv, snap);
  if (!st.ok() || !snap.has_residency_state()) return st;
  if (residency == nullptr) {
    return absl::InvalidArgumentError(
        "residency state for a request without a residency policy");
  }
  return residency->ImportState(cache, pools, kv, snap);
}

std::unique_ptr<KvArrival> MakePrefillArrival(KvCache* cache, KvPools* pools) {
  return std::make_unique<PrefillArrival>(cache, pools);
}

std::unique_ptr<KvArrival> MakeKvStoreArrival(KvCache* cache, KvPools* pools) {
  return std::make_unique<KvStoreArrival>(cache, pools);
}

std::unique_ptr<KvArrival> MakeLocalPrefixArrival(KvCache* cache,
                                                  PrefixIndex* index) {
  return std::make_unique<LocalPrefixArrival>(cache, index);
}

bool PublishSequenceKv(const KvCache& cache, KvPools& pools,
                       const SequenceKv& kv, const SequencePolicy* residency,
                       std::vector<int32_t> tokens, RankKvStore* store) {
  if (residency != nullptr) return false;
  auto snap = ExportSequenceKv(cache, pools, kv, nullptr);
  if (!snap.ok()) return false;
  store->PublishAsync(std::move(tokens), std::move(*snap));
  return true;
}

}  // namespace latentkv::worker
