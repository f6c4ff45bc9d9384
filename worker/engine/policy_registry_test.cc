// Residency policies are chosen by name from a registry: the built-in
// "spindle", and a policy registered by a test reaches the engine through
// the same ResidencyOptions::policy name, without engine changes.
#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/engine/stories260k_for_tests.h"
#include "worker/residency/residency_policy.h"

namespace latentkv::worker {
namespace {

// Keeps the last `keep` tokens of every (layer, KV head) after each layer:
// a sliding window, written only against the SequencePolicy interface.
class WindowSequence final : public SequencePolicy {
 public:
  explicit WindowSequence(int64_t keep) : keep_(keep) {}
  void Reset() override {}
  void MarkPromptIn() override {}
  void ExportState(const KvCache&, KvPools&, const SequenceKv&,
                   KvSnapshot*) const override {}
  absl::Status ImportState(KvCache&, KvPools&, SequenceKv&,
                           const KvSnapshot&) override {
    return absl::OkStatus();
  }
  absl::Status AfterLayer(KvCache& cache, KvPools& pools, SequenceKv& kv,
                          int32_t layer, const float*, const int32_t*, int32_t,
                          kernels::RopeTable) override {
    for (int32_t h = 0; h < cache.shape(layer).n_kv_heads; ++h) {
      const int64_t n = kv.num_tokens(layer, h);
      if (n <= keep_) continue;
      std::vector<int64_t> keep;
      for (int64_t i = n - keep_; i < n; ++i) keep.push_back(i);
      KvMoves moves;
      absl::Status st = kv.Retain(cache, layer, h, keep, &moves);
      if (st.ok()) st = pools.Apply(layer, moves);
      if (!st.ok()) return st;
      evicted_ += n - keep_;
    }
    return absl::OkStatus();
  }
  bool ReadsCodebook(const SequenceKv&, int32_t) const override {
    return false;
  }
  absl::Status AppendCodebookView(const KvCache&, KvPools&, const SequenceKv&,
                                  int32_t, kernels::RopeTable,
                                  AttentionScratch*, std::vector<int32_t>*,
                                  std::vector<int32_t>*,
                                  std::vector<int32_t>*) const override {
    return absl::UnimplementedError("no codebooks");
  }
  int64_t LayerDataBytes(const KvCache& cache, const SequenceKv& kv,
                         int32_t layer) const override {
    int64_t n = 0;
    for (int32_t h = 0; h < cache.shape(layer).n_kv_heads; ++h) {
      n += kv.num_tokens(layer, h);
    }
    return n * cache.token_data_bytes(layer);
  }
  int64_t evicted_slots() const override { return evicted_; }

 private:
  int64_t keep_;
  int64_t evicted_ = 0;
};

class WindowPolicy final : public ResidencyPolicy {
 public:
  const std::string& name() const override { return name_; }
  std::string Describe() const override { return "last 12 tokens"; }
  const std::vector<int64_t>& capacities() const override { return caps_; }
  absl::Status CheckPools(const KvPools&) const override {
    return absl::OkStatus();
  }
  std::unique_ptr<SequencePolicy> NewSequence(int64_t) const override {
    return std::make_unique<WindowSequence>(12);
  }

 private:
  std::string name_ = "test-window";
  std::vector<int64_t> caps_;
};

TEST(ResidencyPolicyRegistryTest, BuiltInsAndUnknownNames) {
  const ResidencyModel model{5, 8, 4, std::vector<int32_t>(5, 8)};
  ResidencyOptions none;
  auto full = CreateResidencyPolicy(none, model);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(*full, nullptr);  // a full cache: no policy at all
  ResidencyOptions cap;
  cap.capacity = {64};
  auto capped = CreateResidencyPolicy(cap, model);
  ASSERT_TRUE(capped.ok() && *capped != nullptr);
  EXPECT_EQ((*capped)->capacities(), std::vector<int64_t>(5, 64));
  ResidencyOptions spindle;
  spindle.policy = "spindle";
  auto s = CreateResidencyPolicy(spindle, model);
  ASSERT_TRUE(s.ok() && *s != nullptr);
  EXPECT_EQ((*s)->name(), "spindle");
  EXPECT_NE((*s)->NewSequence(10), nullptr);
  ResidencyOptions unknown;
  unknown.policy = "h2o";
  const absl::Status st = CreateResidencyPolicy(unknown, model).status();
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_NE(st.message().find("spindle"), std::string::npos) << st;
  ResidencyModel bad = model;
  bad.d_qk.pop_back();
  EXPECT_TRUE(
      absl::IsInvalidArgument(CreateResidencyPolicy(spindle, bad).status()));
}

TEST(ResidencyPolicyRegistryTest, ARegisteredPolicyRunsInTheEngineByName) {
  RegisterResidencyPolicy(
      "test-window",
      [](const ResidencyOptions&, const ResidencyModel&)
          -> absl::StatusOr<std::shared_ptr<const ResidencyPolicy>> {
        return std::make_shared<const WindowPolicy>();
      });
  const std::vector<std::string> names = RegisteredResidencyPolicies();
  EXPECT_NE(std::find(names.begin(), names.end(), "test-window"), names.end());
  EngineOptions o;
  o.kv.page_size = 4;
  o.residency.policy = "test-window";
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(e.ok()) << e.status();
  GenerationRequest r;
  r.id = "w";
  r.prompt = {1};
  for (int j = 0; j < 40; ++j) r.prompt.push_back(259 + j * 11 % 250);
  r.max_new_tokens = 20;
  r.ignore_eos = true;
  std::vector<int32_t> tokens;
  std::promise<void> done;
  ASSERT_TRUE((*e)->Submit(r,
                           [&](const GenerationEvent& ev) {
                             if (ev.token >= 0) tokens.push_back(ev.token);
                             if (ev.finish != FinishReason::kNone ||
                                 !ev.status.ok()) {
                               done.set_value();
                             }
                           })
                  .ok());
  done.get_future().wait();
  EXPECT_EQ(tokens.size(), 20u);
  (*e)->Stop();
  // Every layer and head dropped all but 12 tokens after the prompt and
  // after each decode step: 5 layers x 4 heads x ((41 - 12) + 19 x 1).
  EXPECT_EQ((*e)->Stats().kv_evicted_slots, 5 * 4 * (29 + 19));
}

}  // namespace
}  // namespace latentkv::worker
