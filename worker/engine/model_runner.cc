#include "worker/engine/model_runner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

kernels::WeightView View(const model::Tensor& t) {
  kernels::WeightView w;
  w.data = t.data;
  w.dtype = t.dtype;
  w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  w.cols = t.shape.empty() ? 0 : t.shape.back();
  return w;
}

ModelRunner::ModelRunner(std::shared_ptr<const model::ModelWeights> weights,
                         kernels::Backend* backend)
    : weights_(std::move(weights)), backend_(backend) {}

std::vector<LayerKvShape> ModelRunner::KvShapes() const {
  const auto& c = config();
  std::vector<LayerKvShape> shapes;
  for (int l = 0; l < c.num_layers; ++l) {
    shapes.push_back({c.num_kv_heads, c.qk_head_dim[l], c.vo_head_dim[l]});
  }
  return shapes;
}

void ModelRunner::EnsureCapacity(int64_t rows) {
  if (rows <= capacity_rows_) return;
  const auto& c = config();
  int64_t max_q = 0, max_v = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    max_q = std::max<int64_t>(max_q, c.qk_head_dim[l]);
    max_v = std::max<int64_t>(max_v, c.vo_head_dim[l]);
  }
  capacity_rows_ = rows;
  x_.resize(rows * c.hidden_size);
  h_.resize(rows * c.hidden_size);
  q_.resize(rows * c.num_heads * max_q);
  k_.resize(rows * c.num_kv_heads * max_q);
  v_.resize(rows * c.num_kv_heads * max_v);
  attn_.resize(rows * c.num_heads * max_v);
  gate_.resize(rows * c.intermediate_size);
  up_.resize(rows * c.intermediate_size);
  tokens_.resize(rows);
  pos_.resize(rows);
  slots_.resize(rows * c.num_kv_heads);
}

absl::Status ModelRunner::Forward(const std::vector<ForwardChunk>& chunks,
                                  KvCache& cache, std::vector<float>* logits) {
  const auto& c = config();
  const int64_t H = c.hidden_size;
  int64_t T = 0;
  for (const auto& ch : chunks) T += ch.len;
  if (T == 0) return absl::InvalidArgumentError("empty batch");
  EnsureCapacity(T);

  // Flatten tokens and positions; build query indptr.
  q_indptr_.assign(1, 0);
  {
    int64_t r = 0;
    for (const auto& ch : chunks) {
      for (int32_t i = 0; i < ch.len; ++i, ++r) {
        const int32_t tok = ch.tokens[i];
        if (tok < 0 || tok >= c.vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrCat("token id ", tok, " outside the vocabulary [0, ",
                           c.vocab_size, ")"));
        }
        tokens_[r] = tok;
        pos_[r] = static_cast<int32_t>(ch.start + i);
      }
      if (ch.start + ch.len > c.max_position_embeddings) {
        return absl::InvalidArgumentError(
            absl::StrCat("positions up to ", ch.start + ch.len,
                         " exceed the context of ", c.max_position_embeddings));
      }
      q_indptr_.push_back(static_cast<int32_t>(r));
    }
  }

  kernels::Backend& be = *backend_;
  float* x = x_.data();
  float* h = h_.data();
  be.Embed(View(weights_->embed_tokens), tokens_.data(), T, x);

  for (int l = 0; l < c.num_layers; ++l) {
    const model::LayerWeights& w = weights_->layers[l];
    const int32_t dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
    const int32_t nh = c.num_heads, nkv = c.num_kv_heads;

    be.RmsNorm(x, w.attn_norm.f32(), T, H, c.rms_norm_eps, h);
    {
      const kernels::WeightView ws[3] = {View(w.q_proj), View(w.k_proj),
                                         View(w.v_proj)};
      float* const ys[3] = {q_.data(), k_.data(), v_.data()};
      be.MatMulGroup(h, T, ws, ys, 3);
    }
    be.ApplyRope(q_.data(), T, nh, dqk, pos_.data(), w.rope_inv_freq.data());
    be.ApplyRope(k_.data(), T, nkv, dqk, pos_.data(), w.rope_inv_freq.data());

    // Slots for the new tokens, then the ragged description of every
    // sequence's pages (which now include the new tokens).
    kv_indptr_.assign(1, 0);
    kv_indices_.clear();
    kv_last_.clear();
    int64_t r = 0;
    for (const auto& ch : chunks) {
      ch.kv->Append(cache, l, ch.len, slots_.data() + r * nkv);
      ch.kv->Describe(cache, l, &kv_indptr_, &kv_indices_, &kv_last_);
      r += ch.len;
    }
    be.WriteKv(k_.data(), v_.data(), pos_.data(), T, nkv, dqk, dvo,
               slots_.data(), cache.k_pool(l), cache.v_pool(l),
               cache.pos_pool(l));

    kernels::PagedAttentionArgs a;
    a.num_seqs = static_cast<int32_t>(chunks.size());
    a.n_heads = nh;
    a.n_kv_heads = nkv;
    a.d_qk = dqk;
    a.d_vo = dvo;
    a.page_size = cache.page_size();
    a.scale = 1.0f / std::sqrt(static_cast<float>(dqk));
    a.q_indptr = q_indptr_.data();
    a.q = q_.data();
    a.q_pos = pos_.data();
    a.kv_indptr = kv_indptr_.data();
    a.kv_indices = kv_indices_.data();
    a.kv_last_page_len = kv_last_.data();
    a.k_pool = cache.k_pool(l);
    a.v_pool = cache.v_pool(l);
    a.pos_pool = cache.pos_pool(l);
    a.out = attn_.data();
    be.PagedAttention(a);

    // Residency policies see this layer's queries and may evict its slots.
    r = 0;
    for (const auto& ch : chunks) {
      if (ch.residency != nullptr) {
        absl::Status st =
            ch.residency->AfterLayer(cache, *ch.kv, l, q_.data() + r * nh * dqk,
                                     pos_.data() + r, ch.len);
        if (!st.ok()) return st;
      }
      r += ch.len;
    }

    be.MatMul(attn_.data(), T, View(w.o_proj), h);
    be.AddInPlace(x, h, T * H);

    be.RmsNorm(x, w.ffn_norm.f32(), T, H, c.rms_norm_eps, h);
    {
      const kernels::WeightView ws[2] = {View(w.gate_proj), View(w.up_proj)};
      float* const ys[2] = {gate_.data(), up_.data()};
      be.MatMulGroup(h, T, ws, ys, 2);
    }
    be.SwiGlu(gate_.data(), up_.data(), T * c.intermediate_size, gate_.data());
    be.MatMul(gate_.data(), T, View(w.down_proj), h);
    be.AddInPlace(x, h, T * H);
  }

  // Gather the rows whose logits are wanted, then norm + LM head on them.
  int64_t n_rows = 0;
  {
    int64_t r = 0;
    for (const auto& ch : chunks) {
      int64_t first = r + ch.len, count = 0;
      if (ch.logits == ForwardChunk::Logits::kLast) {
        first = r + ch.len - 1;
        count = 1;
      } else if (ch.logits == ForwardChunk::Logits::kAll) {
        first = r;
        count = ch.len;
      }
      if (count > 0 && first != n_rows) {
        std::copy_n(x + first * H, count * H, x + n_rows * H);
      }
      n_rows += count;
      r += ch.len;
    }
  }
  logits->resize(n_rows * c.vocab_size);
  if (n_rows == 0) return absl::OkStatus();
  be.RmsNorm(x, weights_->final_norm.f32(), n_rows, H, c.rms_norm_eps, h);
  be.MatMul(h, n_rows, View(weights_->lm_head), logits->data());
  return absl::OkStatus();
}

}  // namespace latentkv::worker
