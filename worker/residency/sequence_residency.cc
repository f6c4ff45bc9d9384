#include "worker/residency/sequence_residency.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/ops.h"

namespace latentkv::worker {

SequenceResidency::SequenceResidency(std::shared_ptr<const ResidencyPlan> plan,
                                     std::vector<int32_t> d_qk, int32_t n_heads,
                                     int64_t prompt_len)
    : plan_(std::move(plan)),
      d_qk_(std::move(d_qk)),
      n_heads_(n_heads),
      prompt_len_(prompt_len) {
  Reset();
}

void SequenceResidency::Reset() {
  const int32_t w = plan_->options().window;
  windows_.assign(d_qk_.size(), Window{});
  for (size_t l = 0; l < d_qk_.size(); ++l) {
    windows_[l].q.assign(static_cast<size_t>(w) * n_heads_ * d_qk_[l], 0.0f);
    windows_[l].pos.assign(w, 0);
  }
  prompt_done_.assign(d_qk_.size(), 0);
}

absl::Status SequenceResidency::AfterLayer(KvCache& cache, SequenceKv& kv,
                                           int32_t layer, const float* q,
                                           const int32_t* pos, int32_t len) {
  if (len <= 0) return absl::OkStatus();
  const ResidencyPlan& plan = *plan_;
  const bool evicts =
      plan.policy(layer) == LayerPolicy::kEvict && plan.options().budget < 1.0;
  const int64_t cap = plan.capacities()[layer];
  if (!evicts && cap <= 0) return absl::OkStatus();

  // Record the chunk's last `window` queries.
  Window& win = windows_[layer];
  const int32_t w = plan.options().window;
  const int64_t row = static_cast<int64_t>(n_heads_) * d_qk_[layer];
  for (int32_t t = std::max(0, len - w); t < len; ++t) {
    std::copy_n(q + t * row, row, win.q.data() + int64_t{win.next} * row);
    win.pos[win.next] = pos[t];
    win.next = (win.next + 1) % w;
    win.count = std::min(win.count + 1, w);
  }

  if (evicts && !prompt_done_[layer] && pos[len - 1] + 1 >= prompt_len_) {
    prompt_done_[layer] = 1;
    absl::Status st =
        EvictLayer(cache, kv, layer, plan.PromptBudget(layer, prompt_len_));
    if (!st.ok()) return st;
  }
  if (cap > 0) {
    const int32_t n_kv = cache.shape(layer).n_kv_heads;
    for (int32_t h = 0; h < n_kv; ++h) {
      if (kv.num_tokens(layer, h) >= cap) {
        return EvictLayer(cache, kv, layer, plan.CapacityTarget(layer));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SequenceResidency::EvictLayer(KvCache& cache, SequenceKv& kv,
                                           int32_t layer, int64_t target) {
  const Window& win = windows_[layer];
  const int32_t d = d_qk_[layer];
  const int32_t group = plan_->group();
  const int32_t n_kv = cache.shape(layer).n_kv_heads;
  const int32_t w = plan_->options().window;
  const int64_t n_w = win.count;
  // Window rows in time order.
  wpos_.resize(n_w);
  int32_t first_pos = 0;
  for (int64_t i = 0; i < n_w; ++i) {
    const int32_t slot = static_cast<int32_t>((win.next - n_w + i + w) % w);
    wpos_[i] = win.pos[slot];
    first_pos = i == 0 ? wpos_[i] : std::min(first_pos, wpos_[i]);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float* k_pool = cache.k_pool(layer);
  const int32_t* pos_pool = cache.pos_pool(layer);
  for (int32_t h = 0; h < n_kv; ++h) {
    const int64_t n = kv.num_tokens(layer, h);
    if (n <= target) continue;
    // The window queries of the query heads reading KV head h:
    // [n_w, group, d].
    wq_.resize(n_w * group * d);
    for (int64_t i = 0; i < n_w; ++i) {
      const int32_t slot = static_cast<int32_t>((win.next - n_w + i + w) % w);
      const float* src =
          win.q.data() + (int64_t{slot} * n_heads_ + int64_t{h} * group) * d;
      std::copy_n(src, int64_t{group} * d, wq_.data() + i * group * d);
    }
    keys_.resize(n * d);
    kpos_.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t flat = kv.SlotOf(cache, layer, h, i);
      std::copy_n(k_pool + flat * d, d, keys_.data() + i * d);
      kpos_[i] = pos_pool[flat];
    }
    scores_.resize(group * n);
    kernels::WindowAttentionScores(wq_.data(), wpos_.data(), n_w, group,
                                   keys_.data(), kpos_.data(), n, d, scale,
                                   scores_.data());
    std::vector<int64_t> keep = SelectSlots(
        scores_.data(), group, n, kpos_.data(), target,
        n_w > 0 ? first_pos : kpos_[n - 1] + 1, plan_->options().pool_kernel);
    evicted_ += n - static_cast<int64_t>(keep.size());
    absl::Status st = kv.Retain(cache, layer, h, keep);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace latentkv::worker
