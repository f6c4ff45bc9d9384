#include "worker/residency/residency_policy.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/named_registry.h"
#include "worker/residency/sequence_residency.h"

namespace latentkv::worker {

void AttentionScratch::Reset(int32_t ps, int32_t dqk, int32_t dvo) {
  page_size = ps;
  d_qk = dqk;
  d_vo = dvo;
  pages = 0;
}

void AttentionScratch::Push(const float* k_row, const float* v_row, int32_t p,
                            int64_t* used) {
  if (*used % page_size == 0) {
    ++pages;
    const size_t slots = static_cast<size_t>(pages) * page_size;
    if (pos.size() < slots) {
      k.resize(slots * d_qk);
      v.resize(slots * d_vo);
      pos.resize(slots);
    }
  }
  const int64_t slot = int64_t{pages - 1} * page_size + *used % page_size;
  std::copy_n(k_row, d_qk, k.data() + slot * d_qk);
  std::copy_n(v_row, d_vo, v.data() + slot * d_vo);
  pos[slot] = p;
  ++*used;
}

namespace {

// SpindleKV eviction and codebooks, PyramidKV budgets and the predefined
// capacity, as planned by ResidencyPlan.
class SpindlePolicy final : public ResidencyPolicy {
 public:
  SpindlePolicy(std::string name, std::shared_ptr<const ResidencyPlan> plan,
                const ResidencyModel& model)
      : name_(std::move(name)), plan_(std::move(plan)), model_(model) {}
  const std::string& name() const override { return name_; }
  std::string Describe() const override { return plan_->Describe(); }
  const std::vector<int64_t>& capacities() const override {
    return plan_->capacities();
  }
  absl::Status CheckPools(const KvPools& pools) const override {
    return CheckCodebookLayersSupported(*plan_, pools);
  }
  std::unique_ptr<SequencePolicy> NewSequence(
      int64_t prompt_len) const override {
    return std::make_unique<SequenceResidency>(plan_, model_.d_qk,
                                               model_.n_heads, prompt_len);
  }

 private:
  std::string name_;
  std::shared_ptr<const ResidencyPlan> plan_;
  ResidencyModel model_;
};

absl::StatusOr<std::shared_ptr<const ResidencyPolicy>> MakeSpindle(
    const ResidencyOptions& options, const ResidencyModel& model) {
  auto plan = ResidencyPlan::Create(options, model.num_layers, model.n_heads,
                                    model.n_kv_heads, model.window);
  if (!plan.ok()) return plan.status();
  return std::make_shared<const SpindlePolicy>(options.policy, std::move(*plan),
                                               model);
}

NamedRegistry<ResidencyPolicyFactory>& Policies() {
  static NamedRegistry<ResidencyPolicyFactory>* r = [] {
    auto* reg = new NamedRegistry<ResidencyPolicyFactory>;
    reg->Register("spindle", MakeSpindle);
    return reg;
  }();
  return *r;
}

}  // namespace

void RegisterResidencyPolicy(const std::string& name,
                             ResidencyPolicyFactory factory) {
  Policies().Register(name, std::move(factory));
}

std::vector<std::string> RegisteredResidencyPolicies() {
  return Policies().Names();
}

absl::StatusOr<std::shared_ptr<const ResidencyPolicy>> CreateResidencyPolicy(
    const ResidencyOptions& options, const ResidencyModel& model) {
  if (!ResidencyPlan::Needed(options, model.window)) return nullptr;
  if (static_cast<int32_t>(model.d_qk.size()) != model.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("residency model: ", model.d_qk.size(),
                     " d_qk entries for ", model.num_layers, " layers"));
  }
  // A capacity alone (policy "none") is the spindle plan without eviction
  // or codebook layers.
  const std::string name =
      options.policy == "none" ? "spindle" : options.policy;
  ResidencyPolicyFactory factory = Policies().Find(name);
  if (!factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown KV residency policy \"", options.policy,
                     "\" (registered: none, ",
                     absl::StrJoin(RegisteredResidencyPolicies(), ", "), ")"));
  }
  return factory(options, model);
}

}  // namespace latentkv::worker
