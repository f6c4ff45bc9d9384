#include "worker/residency/sequence_residency.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
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
  // The stores' pages went with the SequenceKv's release.
  stores_.assign(d_qk_.size(), {});
}

absl::Status SequenceResidency::AfterLayer(KvCache& cache, KvPools& pools,
                                           SequenceKv& kv, int32_t layer,
                                           const float* q, const int32_t* pos,
                                           int32_t len,
                                           kernels::RopeTable rope) {
  if (len <= 0) return absl::OkStatus();
  const ResidencyPlan& plan = *plan_;
  const LayerPolicy policy = plan.policy(layer);
  const bool evicts =
      policy == LayerPolicy::kEvict && plan.options().budget < 1.0;
  const bool codebook = policy == LayerPolicy::kCodebook;
  const int64_t cap = plan.capacities()[layer];
  if (!evicts && !codebook && cap <= 0) return absl::OkStatus();

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

  const bool prompt_in = pos[len - 1] + 1 >= prompt_len_;
  if (prompt_in && (evicts || codebook)) {
    const bool first = !prompt_done_[layer];
    prompt_done_[layer] = 1;
    absl::Status st;
    if (evicts && first) {
      st = EvictLayer(cache, pools, kv, layer,
                      plan.PromptBudget(layer, prompt_len_), rope);
    } else if (codebook) {
      st = EncodeLayer(cache, pools, kv, layer, first, rope);
    }
    if (!st.ok()) return st;
  }
  if (cap > 0) {
    const int32_t n_kv = cache.shape(layer).n_kv_heads;
    auto full = [&] {
      for (int32_t h = 0; h < n_kv; ++h) {
        if (kv.held_tokens(layer, h) >= cap) return true;
      }
      return false;
    };
    if (full() && plan.window(layer) > 0) {
      // The next query (at pos[len - 1] + 1) sees positions above
      // pos[len - 1] + 1 - W: everything before that is gone for good.
      absl::Status st = DropBefore(cache, pools, kv, layer,
                                   pos[len - 1] + 2 - plan.window(layer));
      if (!st.ok()) return st;
    }
    if (full()) {
      return EvictLayer(cache, pools, kv, layer, plan.CapacityTarget(layer),
                        rope);
    }
  }
  return absl::OkStatus();
}

absl::Status SequenceResidency::DropBefore(KvCache& cache, KvPools& pools,
                                           SequenceKv& kv, int32_t layer,
                                           int32_t min_pos) {
  const LayerKvShape& shape = cache.shape(layer);
  for (int32_t h = 0; h < shape.n_kv_heads; ++h) {
    const int64_t n = kv.num_tokens(layer, h);
    if (n == 0) continue;
    slots_.resize(n);
    for (int64_t i = 0; i < n; ++i) slots_[i] = kv.SlotOf(cache, layer, h, i);
    keys_.resize(n * shape.d_qk);
    kpos_.resize(n);
    absl::Status st = pools.ReadF32(layer, h, slots_, keys_.data(),
                                    /*v=*/nullptr, kpos_.data());
    if (!st.ok()) return st;
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < n; ++i) {
      if (kpos_[i] >= min_pos) keep.push_back(i);
    }
    if (static_cast<int64_t>(keep.size()) == n) continue;
    evicted_ += n - static_cast<int64_t>(keep.size());
    moves_.clear();
    st = kv.Retain(cache, layer, h, keep, &moves_);
    if (st.ok()) st = pools.Apply(layer, moves_);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status SequenceResidency::EncodeLayer(KvCache& cache, KvPools& pools,
                                            SequenceKv& kv, int32_t layer,
                                            bool first,
                                            kernels::RopeTable rope) {
  const LayerKvShape& s = cache.shape(layer);
  std::vector<CodebookStore>& stores = stores_[layer];
  if (stores.empty()) stores.resize(s.n_kv_heads);
  const ResidencyOptions& o = plan_->options();
  absl::StatusOr<HostKvPool> hp = pools.HostF32(layer);
  if (!hp.ok()) return hp.status();
  std::vector<int32_t> neg;
  for (int32_t h = 0; h < s.n_kv_heads; ++h) {
    const int64_t n = kv.num_tokens(layer, h);
    if (n == 0) continue;
    keys_.resize(n * s.d_qk);
    vals_.resize(n * s.d_vo);
    kpos_.resize(n);
    neg.resize(n);
    slots_.resize(n);
    for (int64_t i = 0; i < n; ++i) slots_[i] = kv.SlotOf(cache, layer, h, i);
    absl::Status read = pools.ReadF32(layer, h, slots_, keys_.data(),
                                      vals_.data(), kpos_.data());
    if (!read.ok()) return read;
    for (int64_t i = 0; i < n; ++i) neg[i] = -kpos_[i];
    // Undo RoPE: codebooks cluster keys before rotation.
    kernels::ApplyRope(keys_.data(), n, 1, s.d_qk, rope.dims, neg.data(),
                       rope.inv_freq);
    absl::Status st = stores[h].Add(cache, *hp, kv.aux(layer, h), layer,
                                    keys_.data(), vals_.data(), kpos_.data(), n,
                                    o.theta_k, o.theta_v, first);
    if (absl::IsResourceExhausted(st)) continue;  // stays in the page list
    if (!st.ok()) return st;
    moves_.clear();
    st = kv.Retain(cache, layer, h, {}, &moves_);  // empties: no moves
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

void SequenceResidency::ExportState(const KvCache& cache, KvPools& pools,
                                    const SequenceKv& kv,
                                    KvSnapshot* snap) const {
  std::vector<std::vector<std::string>> out(cache.num_layers());
  bool any = false;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    out[l].resize(cache.shape(l).n_kv_heads);
    if (stores_[l].empty()) continue;
    // Codebook layers exist only where host access works (the engine checks
    // at start), so this cannot fail here.
    const HostKvPool hp = *pools.HostF32(l);
    for (size_t h = 0; h < stores_[l].size(); ++h) {
      out[l][h] = stores_[l][h].Export(cache, hp,
                                       kv.aux(l, static_cast<int32_t>(h)), l);
      any = any || !out[l][h].empty();
    }
  }
  if (any) snap->codebooks = std::move(out);
  std::vector<std::string> wins(windows_.size());
  any = false;
  for (size_t l = 0; l < windows_.size(); ++l) {
    const Window& w = windows_[l];
    if (w.count == 0) continue;
    // Until the ring is full its entries are slots [0, count) and next ==
    // count: only those move.
    const size_t row = w.q.size() / w.pos.size();
    std::string& b = wins[l];
    b.append(reinterpret_cast<const char*>(&w.count), 4);
    b.append(reinterpret_cast<const char*>(&w.next), 4);
    b.append(reinterpret_cast<const char*>(w.q.data()), 4 * row * w.count);
    b.append(reinterpret_cast<const char*>(w.pos.data()), 4 * w.count);
    any = true;
  }
  if (any) snap->windows = std::move(wins);
}

absl::Status SequenceResidency::ImportState(KvCache& cache, KvPools& pools,
                                            SequenceKv& kv,
                                            const KvSnapshot& snap) {
  for (size_t l = 0; l < snap.windows.size() && l < windows_.size(); ++l) {
    const std::string& b = snap.windows[l];
    if (b.empty()) continue;
    Window& w = windows_[l];
    const int32_t size = static_cast<int32_t>(w.pos.size());
    const size_t row = w.q.size() / w.pos.size();
    int32_t count = 0, next = 0;
    if (b.size() >= 8) {
      std::memcpy(&count, b.data(), 4);
      std::memcpy(&next, b.data() + 4, 4);
    }
    const bool fits =
        count >= 1 && count <= size && next >= 0 && next < size &&
        (count == size || next == count) &&
        b.size() == 8 + 4 * (row + 1) * static_cast<size_t>(count);
    if (!fits) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV snapshot window of layer ", l, " (", b.size(),
          " bytes) does not fit this plan's window of ", size, " queries"));
    }
    w.count = count;
    w.next = next;
    std::memcpy(w.q.data(), b.data() + 8, 4 * row * count);
    std::memcpy(w.pos.data(), b.data() + 8 + 4 * row * count, 4 * count);
  }
  if (!snap.has_codebooks()) return absl::OkStatus();
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const int32_t n_kv = cache.shape(l).n_kv_heads;
    bool has = false;
    for (const std::string& b : snap.codebooks[l]) has = has || !b.empty();
    if (!has) continue;
    if (plan_->policy(l) != LayerPolicy::kCodebook) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV snapshot has codebook entries in layer ", l,
          ", which is not a codebook layer here (different residency plans)"));
    }
    absl::StatusOr<HostKvPool> hp = pools.HostF32(l);
    if (!hp.ok()) return hp.status();
    stores_[l].assign(n_kv, CodebookStore{});
    for (int32_t h = 0; h < n_kv; ++h) {
      const std::string& b = snap.codebooks[l][h];
      if (b.empty()) continue;
      absl::Status st = stores_[l][h].Import(cache, *hp, kv.aux(l, h), l, b);
      if (!st.ok()) {
        return absl::Status(st.code(), absl::StrCat("layer ", l, " head ", h,
                                                    ": ", st.message()));
      }
    }
  }
  return absl::OkStatus();
}

bool SequenceResidency::ReadsCodebook(const SequenceKv& kv,
                                      int32_t layer) const {
  if (stores_[layer].empty()) return false;
  for (size_t h = 0; h < stores_[layer].size(); ++h) {
    if (kv.aux(layer, static_cast<int32_t>(h)).tokens > 0) return true;
  }
  return false;
}

absl::Status SequenceResidency::AppendCodebookView(
    const KvCache& cache, KvPools& pools, const SequenceKv& kv, int32_t layer,
    kernels::RopeTable rope, AttentionScratch* scratch,
    std::vector<int32_t>* indptr, std::vector<int32_t>* indices,
    std::vector<int32_t>* last_page_len) const {
  const LayerKvShape& s = cache.shape(layer);
  absl::StatusOr<HostKvPool> hp = pools.HostF32(layer);
  if (!hp.ok()) return hp.status();
  std::vector<float> k, v;
  std::vector<int32_t> p;
  std::vector<int64_t> slots;
  for (int32_t h = 0; h < s.n_kv_heads; ++h) {
    const int64_t n_rec = kv.aux(layer, h).tokens;
    const int64_t n_list = kv.num_tokens(layer, h);
    k.resize((n_rec + n_list) * s.d_qk);
    v.resize((n_rec + n_list) * s.d_vo);
    p.resize(n_rec + n_list);
    if (n_rec > 0) {
      stores_[layer][h].Reconstruct(cache, *hp, kv.aux(layer, h), layer,
                                    k.data(), v.data(), p.data());
      kernels::ApplyRope(k.data(), n_rec, 1, s.d_qk, rope.dims, p.data(),
                         rope.inv_freq);
    }
    slots.resize(n_list);
    for (int64_t i = 0; i < n_list; ++i) {
      slots[i] = kv.SlotOf(cache, layer, h, i);
    }
    absl::Status st =
        pools.ReadF32(layer, h, slots, k.data() + n_rec * s.d_qk,
                      v.data() + n_rec * s.d_vo, p.data() + n_rec);
    if (!st.ok()) return st;
    const int32_t first_page = scratch->pages;
    int64_t used = 0;
    for (int64_t i = 0; i < n_rec + n_list; ++i) {
      scratch->Push(k.data() + i * s.d_qk, v.data() + i * s.d_vo, p[i], &used);
    }
    for (int32_t pg = first_page; pg < scratch->pages; ++pg) {
      indices->push_back(pg);
    }
    indptr->push_back(static_cast<int32_t>(indices->size()));
    last_page_len->push_back(
        used == 0 ? 0
                  : static_cast<int32_t>(
                        used - int64_t{scratch->pages - first_page - 1} *
                                   scratch->page_size));
  }
  return absl::OkStatus();
}

int64_t SequenceResidency::LayerDataBytes(const KvCache& cache,
                                          const SequenceKv& kv,
                                          int32_t layer) const {
  const LayerKvShape& s = cache.shape(layer);
  int64_t bytes = 0;
  for (int32_t h = 0; h < s.n_kv_heads; ++h) {
    bytes += kv.num_tokens(layer, h) * cache.token_data_bytes(layer);
    if (!stores_[layer].empty()) {
      bytes += stores_[layer][h].data_bytes(kv.aux(layer, h), s.d_qk, s.d_vo);
    }
  }
  return bytes;
}

absl::Status SequenceResidency::EvictLayer(KvCache& cache, KvPools& pools,
                                           SequenceKv& kv, int32_t layer,
                                           int64_t target,
                                           kernels::RopeTable rope) {
  const Window& win = windows_[layer];
  const int32_t d = d_qk_[layer];
  const LayerKvShape& shape = cache.shape(layer);
  const int32_t group = plan_->group();
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
  const bool codebook = !stores_[layer].empty();
  for (int32_t h = 0; h < shape.n_kv_heads; ++h) {
    // Codebook layers evict among their records (the page list then holds
    // only tokens that could not be encoded, and stays); others among the
    // page list.
    const int64_t staged = codebook ? kv.num_tokens(layer, h) : 0;
    const int64_t n =
        codebook ? kv.aux(layer, h).tokens : kv.num_tokens(layer, h);
    const int64_t want = target - staged;
    if (n <= std::max<int64_t>(want, 0)) continue;
    // The window queries of the query heads reading KV head h:
    // [n_w, group, d].
    wq_.resize(n_w * group * d);
    for (int64_t i = 0; i < n_w; ++i) {
      const int32_t slot = static_cast<int32_t>((win.next - n_w + i + w) % w);
      const float* src =
          win.q.data() + (int64_t{slot} * n_heads_ + int64_t{h} * group) * d;
      std::copy_n(src, int64_t{group} * d, wq_.data() + i * group * d);
    }
    kpos_.resize(n);
    if (codebook) {
      keys_.resize(n * d);
      absl::StatusOr<HostKvPool> hp = pools.HostF32(layer);
      if (!hp.ok()) return hp.status();
      vals_.resize(n * shape.d_vo);
      stores_[layer][h].Reconstruct(cache, *hp, kv.aux(layer, h), layer,
                                    keys_.data(), vals_.data(), kpos_.data());
      kernels::ApplyRope(keys_.data(), n, 1, d, rope.dims, kpos_.data(),
                         rope.inv_freq);
      scores_.resize(group * n);
      kernels::WindowAttentionScores(wq_.data(), wpos_.data(), n_w, group,
                                     keys_.data(), kpos_.data(), n, d, scale,
                                     scores_.data());
    } else {
      // Scored where the keys live (the backend); the selection below runs
      // on the host over the small score arrays.
      slots_.resize(n);
      for (int64_t i = 0; i < n; ++i) slots_[i] = kv.SlotOf(cache, layer, h, i);
      scores_.resize(group * n);
      absl::Status st =
          pools.WindowScores(layer, h, slots_, wq_.data(), wpos_.data(), n_w,
                             group, scale, scores_.data(), kpos_.data());
      if (!st.ok()) return st;
    }
    std::vector<int64_t> keep = SelectSlots(
        scores_.data(), group, n, kpos_.data(), std::max<int64_t>(want, 0),
        n_w > 0 ? first_pos : kpos_[n - 1] + 1, plan_->options().pool_kernel);
    evicted_ += n - static_cast<int64_t>(keep.size());
    if (codebook) {
      stores_[layer][h].Retain(cache, *pools.HostF32(layer), kv.aux(layer, h),
                               layer, keep);
    } else {
      moves_.clear();
      absl::Status st = kv.Retain(cache, layer, h, keep, &moves_);
      if (st.ok()) st = pools.Apply(layer, moves_);
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCodebookLayersSupported(const ResidencyPlan& plan,
                                          const KvPools& pools) {
  for (int32_t l = 0; l < plan.num_layers(); ++l) {
    if (plan.policy(l) != LayerPolicy::kCodebook) continue;
    absl::StatusOr<HostKvPool> hp = pools.HostF32(l);
    if (!hp.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "SpindleKV codebook layers (layer ", l,
          ") run on the host only: they need --device cpu and --kv_dtype f32 (",
          hp.status().message(), ")"));
    }
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace latentkv::worker
