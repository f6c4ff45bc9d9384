#include "worker/residency/policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace latentkv::worker {

absl::StatusOr<std::vector<int64_t>> ParseCapacityList(const std::string& s) {
  std::vector<int64_t> out;
  if (s.empty()) return out;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV capacity must be non-negative integers, got '", part, "'"));
    }
    out.push_back(v);
  }
  return out;
}

bool ResidencyPlan::Needed(const ResidencyOptions& options,
                           const std::vector<int32_t>& windows) {
  if (options.enabled()) return true;
  if (!options.bound_windows) return false;
  for (int32_t w : windows) {
    if (w > 0) return true;
  }
  return false;
}

bool ResidencyOptions::enabled() const {
  if (policy != "none") return true;
  for (int64_t cap : capacity) {
    if (cap > 0) return true;
  }
  return false;
}

absl::StatusOr<std::shared_ptr<const ResidencyPlan>>
ResidencyPlan::CreateIfEnabled(const ResidencyOptions& options,
                               int32_t num_layers, int32_t n_heads,
                               int32_t n_kv_heads,
                               const std::vector<int32_t>& windows) {
  if (!Needed(options, windows)) {
    return std::shared_ptr<const ResidencyPlan>();
  }
  return Create(options, num_layers, n_heads, n_kv_heads, windows);
}

absl::StatusOr<std::shared_ptr<const ResidencyPlan>> ResidencyPlan::Create(
    const ResidencyOptions& o, int32_t num_layers, int32_t n_heads,
    int32_t n_kv_heads, const std::vector<int32_t>& windows) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("residency: ", parts...));
  };
  if (num_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 ||
      n_heads % n_kv_heads != 0) {
    return bad("bad model shape: layers ", num_layers, " heads ", n_heads,
               " kv heads ", n_kv_heads);
  }
  if (o.policy != "none" && o.policy != "spindle") {
    return bad("policy must be none or spindle, got '", o.policy, "'");
  }
  if (!(o.budget > 0.0 && o.budget <= 1.0)) {
    return bad("budget must be in (0, 1], got ", o.budget);
  }
  if (!(o.pyramid_beta >= 1.0)) {
    return bad("pyramid_beta must be >= 1, got ", o.pyramid_beta);
  }
  if (o.window <= 0) return bad("window must be > 0, got ", o.window);
  if (o.pool_kernel < 1 || o.pool_kernel % 2 == 0) {
    return bad("pool_kernel must be odd and >= 1, got ", o.pool_kernel);
  }
  if (o.codebook_layers < -1 || o.codebook_layers > num_layers) {
    return bad("codebook_layers must be in [-1, ", num_layers, "], got ",
               o.codebook_layers);
  }
  if (!(o.theta_k > 0.0f && o.theta_k <= 1.0f) ||
      !(o.theta_v > 0.0f && o.theta_v <= 1.0f)) {
    return bad("theta_k and theta_v must be in (0, 1], got ", o.theta_k, ", ",
               o.theta_v);
  }
  if (o.capacity.size() > 1 &&
      static_cast<int32_t>(o.capacity.size()) != num_layers) {
    return bad("capacity needs one value or one per layer (", num_layers,
               "), got ", o.capacity.size());
  }
  if (o.capacity_slack < 0) {
    return bad("capacity_slack must be >= 0, got ", o.capacity_slack);
  }
  auto plan = std::shared_ptr<ResidencyPlan>(new ResidencyPlan());
  plan->options_ = o;
  plan->group_ = n_heads / n_kv_heads;
  plan->layers_.assign(num_layers, LayerPolicy::kFull);
  plan->capacity_.assign(num_layers, 0);
  plan->windows_.assign(num_layers, 0);
  if (!windows.empty() && static_cast<int32_t>(windows.size()) != num_layers) {
    return bad("windows needs one value per layer (", num_layers, "), got ",
               windows.size());
  }
  for (int32_t l = 0; l < num_layers; ++l) {
    if (!o.capacity.empty()) {
      plan->capacity_[l] =
          o.capacity.size() == 1 ? o.capacity[0] : o.capacity[l];
    }
    const int64_t cap = plan->capacity_[l];
    if (cap > 0 && plan->CapacityTarget(l) < 1) {
      return bad("capacity ", cap, " of layer ", l,
                 " must exceed capacity_slack (", o.capacity_slack, ")");
    }
    // A sliding-window layer: at most 2W tokens (a smaller capacity given
    // by the options stays, and evicts by score below the window).
    const int32_t w = windows.empty() ? 0 : windows[l];
    if (w > 0 && o.bound_windows) {
      plan->windows_[l] = w;
      const int64_t bound = 2 * int64_t{w};
      if (cap <= 0 || cap > bound) plan->capacity_[l] = bound;
    }
  }
  if (o.policy == "spindle") {
    int32_t shallow = o.codebook_layers;
    if (shallow < 0) {
      shallow = num_layers > 1 ? std::max(1, (num_layers + 3) / 4) : 0;
    }
    for (int32_t l = 0; l < num_layers; ++l) {
      plan->layers_[l] =
          l < shallow ? LayerPolicy::kCodebook : LayerPolicy::kEvict;
    }
  }
  plan->evict_rank_.assign(num_layers, -1);
  for (int32_t l = 0; l < num_layers; ++l) {
    if (plan->layers_[l] == LayerPolicy::kEvict) {
      plan->evict_rank_[l] = plan->num_evict_++;
    }
  }
  return std::shared_ptr<const ResidencyPlan>(std::move(plan));
}

int64_t ResidencyPlan::CapacityTarget(int32_t layer) const {
  const int64_t cap = capacity_[layer];
  if (cap <= 0) return 0;
  const int64_t slack = options_.capacity_slack > 0
                            ? options_.capacity_slack
                            : std::max<int64_t>(1, cap / 8);
  return std::max<int64_t>(0, cap - slack);
}

int64_t ResidencyPlan::PromptBudget(int32_t layer, int64_t prompt_len) const {
  if (layers_[layer] != LayerPolicy::kEvict || options_.budget >= 1.0) {
    return prompt_len;
  }
  const double mean = options_.budget * static_cast<double>(prompt_len);
  const double b_min = mean / options_.pyramid_beta;
  const double b_max = 2.0 * mean - b_min;
  const int32_t e = evict_rank_[layer];
  const double b =
      num_evict_ <= 1
          ? mean
          : b_max - (b_max - b_min) * e / static_cast<double>(num_evict_ - 1);
  const int64_t kept = static_cast<int64_t>(std::ceil(b));
  return std::clamp<int64_t>(
      kept, std::min<int64_t>(options_.window, prompt_len), prompt_len);
}

bool ResidencyPlan::keeps_everything() const {
  for (int32_t l = 0; l < num_layers(); ++l) {
    if (capacity_[l] > 0) return false;
    if (layers_[l] == LayerPolicy::kEvict && options_.budget < 1.0) {
      return false;
    }
    if (layers_[l] == LayerPolicy::kCodebook &&
        (options_.theta_k < 1.0f || options_.theta_v < 1.0f)) {
      return false;
    }
  }
  return true;
}

std::string ResidencyPlan::Describe() const {
  std::string out = absl::StrCat("policy=", options_.policy, " layers=");
  for (int32_t l = 0; l < num_layers(); ++l) {
    absl::StrAppend(&out, l ? "," : "",
                    layers_[l] == LayerPolicy::kEvict      ? "E"
                    : layers_[l] == LayerPolicy::kCodebook ? "C"
                                                           : "F");
    if (capacity_[l] > 0) absl::StrAppend(&out, "/cap", capacity_[l]);
    if (windows_[l] > 0) absl::StrAppend(&out, "/win", windows_[l]);
  }
  if (num_evict_ > 0) {
    absl::StrAppend(
        &out, " budget=", options_.budget, " beta=", options_.pyramid_beta,
        " window=", options_.window, " pool=", options_.pool_kernel);
  }
  if (options_.policy == "spindle") {
    absl::StrAppend(&out, " theta_k=", options_.theta_k,
                    " theta_v=", options_.theta_v);
  }
  return out;
}

std::vector<int64_t> SelectSlots(const float* scores, int32_t group, int64_t n,
                                 const int32_t* k_pos, int64_t budget,
                                 int32_t window_first_pos,
                                 int32_t pool_kernel) {
  std::vector<int64_t> keep;
  if (n <= budget) {
    keep.resize(n);
    std::iota(keep.begin(), keep.end(), 0);
    return keep;
  }
  if (budget <= 0) return keep;
  std::vector<char> kept(n, 0);
  int64_t count = 0;
  // The observation window, latest first so a too-small budget keeps the
  // most recent tokens.
  for (int64_t s = n - 1; s >= 0 && count < budget; --s) {
    if (k_pos[s] < window_first_pos) break;
    kept[s] = 1;
    ++count;
  }
  // Each query head's ranking of the other slots by pooled score.
  const int64_t half = pool_kernel / 2;
  std::vector<std::vector<int64_t>> rank(group);
  std::vector<float> pooled(n);
  for (int32_t g = 0; g < group; ++g) {
    const float* sc = scores + static_cast<int64_t>(g) * n;
    for (int64_t s = 0; s < n; ++s) {
      float m = sc[s];
      const int64_t lo = std::max<int64_t>(0, s - half);
      const int64_t hi = std::min<int64_t>(n - 1, s + half);
      for (int64_t j = lo; j <= hi; ++j) m = std::max(m, sc[j]);
      pooled[s] = m;
    }
    std::vector<int64_t>& r = rank[g];
    for (int64_t s = 0; s < n; ++s) {
      if (!kept[s]) r.push_back(s);
    }
    std::stable_sort(r.begin(), r.end(), [&](int64_t a, int64_t b) {
      return pooled[a] > pooled[b];
    });
  }
  for (size_t depth = 0; count < budget; ++depth) {
    bool any = false;
    for (int32_t g = 0; g < group && count < budget; ++g) {
      if (depth >= rank[g].size()) continue;
      any = true;
      const int64_t s = rank[g][depth];
      if (!kept[s]) {
        kept[s] = 1;
        ++count;
      }
    }
    if (!any) break;
  }
  for (int64_t s = 0; s < n; ++s) {
    if (kept[s]) keep.push_back(s);
  }
  return keep;
}

}  // namespace latentkv::worker
