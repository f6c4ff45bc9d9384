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
                         kernels::Backend* backend, Communicator* comm,
                         bool pack_weights)
    : weights_(std::move(weights)),
      backend_(backend),
      comm_(comm != nullptr && comm->size() > 1 ? comm : nullptr) {
  auto matrix = [&](const model::Tensor& t) { return Matrix(t, pack_weights); };
  for (const model::LayerWeights& w : weights_->layers) {
    matrices_.push_back({matrix(w.q_proj), matrix(w.k_proj), matrix(w.v_proj),
                         matrix(w.o_proj), matrix(w.gate_proj),
                         matrix(w.up_proj), matrix(w.down_proj)});
  }
  lm_head_ = matrix(weights_->lm_head);
}

ModelRunner::~ModelRunner() {
  for (void* p : packed_) backend_->Free(p);
}

kernels::WeightView ModelRunner::Matrix(const model::Tensor& t, bool pack) {
  const kernels::WeightView w = View(t);
  if (!pack || w.rows <= 0 || w.cols <= 0 ||
      !backend_->PrefersPanels(w.dtype)) {
    return w;
  }
  void* dst = backend_->Allocate(static_cast<size_t>(kernels::PanelBytes(w)));
  if (dst == nullptr) return w;  // no memory for a copy: multiply in place
  packed_.push_back(dst);
  return kernels::PackPanels(w, dst);
}

absl::StatusOr<std::unique_ptr<KvPools>> CreateKvPools(
    const ModelRunner& runner, kernels::Backend* backend,
    const KvCache& cache) {
  KvScales scales;
  if (cache.dtype() == DType::kF8E4M3) scales = runner.Fp8KvScales();
  return KvPools::Create(backend, cache, std::move(scales));
}

std::vector<LayerKvShape> ModelRunner::KvShapes() const {
  const auto& c = config();
  std::vector<LayerKvShape> shapes;
  for (int l = 0; l < c.num_layers; ++l) {
    shapes.push_back({c.num_kv_heads, c.qk_head_dim[l], c.vo_head_dim[l]});
  }
  return shapes;
}

KvScales ModelRunner::Fp8KvScales() const {
  const auto& c = config();
  const int64_t H = c.hidden_size;
  const double sqrt_h = std::sqrt(static_cast<double>(H));
  KvScales scales;
  std::vector<float> row(H), g(H);
  for (int l = 0; l < c.num_layers; ++l) {
    const model::LayerWeights& w = weights_->layers[l];
    std::copy_n(w.attn_norm.f32(), H, g.data());
    // bound[j] = sqrt(H) * ||W[j] * g||_2 for every output row j.
    auto bounds = [&](const model::Tensor& t) {
      const int64_t rows = t.shape[0];
      const int64_t row_bytes = DTypeRowBytes(t.dtype, H);
      std::vector<double> b(rows);
      for (int64_t j = 0; j < rows; ++j) {
        ConvertToF32(static_cast<const char*>(t.data) + j * row_bytes, t.dtype,
                     H, row.data());
        double ss = 0;
        for (int64_t i = 0; i < H; ++i) {
          const double x = double{row[i]} * g[i];
          ss += x * x;
        }
        b[j] = sqrt_h * std::sqrt(ss);
      }
      return b;
    };
    const std::vector<double> kb = bounds(w.k_proj), vb = bounds(w.v_proj);
    const int32_t dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
    scales.k.emplace_back();
    scales.v.emplace_back();
    for (int32_t h = 0; h < c.num_kv_heads; ++h) {
      double kmax = 0, vmax = 0;
      for (int32_t j = 0; j < dqk / 2; ++j) {
        const double a = kb[h * dqk + j], b = kb[h * dqk + j + dqk / 2];
        kmax = std::max(kmax, std::sqrt(a * a + b * b));
      }
      for (int32_t j = 0; j < dvo; ++j) vmax = std::max(vmax, vb[h * dvo + j]);
      // A zero bound (an all-zero head) still needs a positive scale.
      scales.k.back().push_back(
          static_cast<float>(std::max(kmax, 1e-30) / kF8E4M3Max));
      scales.v.back().push_back(
          static_cast<float>(std::max(vmax, 1e-30) / kF8E4M3Max));
    }
  }
  return scales;
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

absl::Status ModelRunner::CodebookAttention(
    const std::vector<ForwardChunk>& chunks, const KvCache& cache,
    KvPools& pools, int32_t layer, const kernels::PagedAttentionArgs& main) {
  const int32_t nh = main.n_heads, dqk = main.d_qk, dvo = main.d_vo;
  const float* inv_freq = weights_->layers[layer].rope_inv_freq.data();
  scratch_.Reset(cache.page_size(), dqk, dvo);
  cb_q_.clear();
  cb_pos_.clear();
  cb_q_indptr_.assign(1, 0);
  cb_kv_indptr_.assign(1, 0);
  cb_kv_indices_.clear();
  cb_kv_last_.clear();
  std::vector<std::pair<int64_t, int32_t>> rows;  // (first row, len)
  int64_t r = 0;
  for (const auto& ch : chunks) {
    if (ch.residency != nullptr && ch.residency->ReadsCodebook(*ch.kv, layer)) {
      cb_q_.insert(cb_q_.end(), q_.data() + r * nh * dqk,
                   q_.data() + (r + ch.len) * nh * dqk);
      cb_pos_.insert(cb_pos_.end(), pos_.data() + r, pos_.data() + r + ch.len);
      cb_q_indptr_.push_back(cb_q_indptr_.back() + ch.len);
      absl::Status st = ch.residency->AppendCodebookView(
          cache, pools, *ch.kv, layer, inv_freq, &scratch_, &cb_kv_indptr_,
          &cb_kv_indices_, &cb_kv_last_);
      if (!st.ok()) return st;
      rows.emplace_back(r, ch.len);
    }
    r += ch.len;
  }
  cb_out_.resize(cb_pos_.size() * nh * dvo);
  kernels::PagedAttentionArgs b = main;
  b.num_seqs = static_cast<int32_t>(rows.size());
  b.q_indptr = cb_q_indptr_.data();
  b.q = cb_q_.data();
  b.q_pos = cb_pos_.data();
  b.kv_indptr = cb_kv_indptr_.data();
  b.kv_indices = cb_kv_indices_.data();
  b.kv_last_page_len = cb_kv_last_.data();
  b.kv_dtype = DType::kF32;  // the reconstructed copy is f32
  b.k_pool = scratch_.k.data();
  b.v_pool = scratch_.v.data();
  b.pos_pool = scratch_.pos.data();
  b.k_scale = nullptr;
  b.v_scale = nullptr;
  b.out = cb_out_.data();
  backend_->PagedAttention(b);
  int64_t from = 0;
  for (const auto& [first, len] : rows) {
    std::copy_n(cb_out_.data() + from * nh * dvo, int64_t{len} * nh * dvo,
                attn_.data() + first * nh * dvo);
    from += len;
  }
  return absl::OkStatus();
}

absl::Status ModelRunner::Forward(const std::vector<ForwardChunk>& chunks,
                                  KvCache& cache, KvPools& pools,
                                  std::vector<float>* logits) {
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
    const LayerMatrices& m = matrices_[l];
    const int32_t dqk = c.qk_head_dim[l];
    const int32_t nh = c.num_heads, nkv = c.num_kv_heads;

    be.RmsNorm(x, w.attn_norm.f32(), T, H, c.rms_norm_eps, h);
    {
      const kernels::WeightView ws[3] = {m.q, m.k, m.v};
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
    // Sequences whose layer-l tokens partly live in codebooks get an empty
    // description here and attend over a reconstructed copy below.
    int64_t r = 0;
    bool any_codebook = false;
    for (const auto& ch : chunks) {
      ch.kv->Append(cache, l, ch.len, slots_.data() + r * nkv, ch.start);
      if (ch.residency != nullptr && ch.residency->ReadsCodebook(*ch.kv, l)) {
        any_codebook = true;
        for (int32_t h = 0; h < nkv; ++h) {
          kv_indptr_.push_back(static_cast<int32_t>(kv_indices_.size()));
          kv_last_.push_back(0);
        }
      } else {
        ch.kv->Describe(cache, l, &kv_indptr_, &kv_indices_, &kv_last_);
      }
      r += ch.len;
    }
    const kernels::KvPoolView& pool = pools.view(l);
    be.WriteKv(k_.data(), v_.data(), pos_.data(), T, slots_.data(), pool);

    kernels::PagedAttentionArgs a;
    a.SetPool(pool);
    a.num_seqs = static_cast<int32_t>(chunks.size());
    a.n_heads = nh;
    a.scale = 1.0f / std::sqrt(static_cast<float>(dqk));
    a.q_indptr = q_indptr_.data();
    a.q = q_.data();
    a.q_pos = pos_.data();
    a.kv_indptr = kv_indptr_.data();
    a.kv_indices = kv_indices_.data();
    a.kv_last_page_len = kv_last_.data();
    a.out = attn_.data();
    be.PagedAttention(a);
    if (any_codebook) {
      absl::Status st = CodebookAttention(chunks, cache, pools, l, a);
      if (!st.ok()) return st;
    }

    // Residency policies see this layer's queries and may evict its slots.
    r = 0;
    for (const auto& ch : chunks) {
      if (ch.residency != nullptr) {
        absl::Status st = ch.residency->AfterLayer(
            cache, pools, *ch.kv, l, q_.data() + r * nh * dqk, pos_.data() + r,
            ch.len, w.rope_inv_freq.data());
        if (!st.ok()) return st;
      }
      r += ch.len;
    }

    be.MatMul(attn_.data(), T, m.o, h);
    if (comm_ != nullptr) {
      absl::Status st = comm_->AllReduceSum(h, static_cast<size_t>(T * H));
      if (!st.ok()) return st;
    }
    be.AddInPlace(x, h, T * H);

    be.RmsNorm(x, w.ffn_norm.f32(), T, H, c.rms_norm_eps, h);
    {
      const kernels::WeightView ws[2] = {m.gate, m.up};
      float* const ys[2] = {gate_.data(), up_.data()};
      be.MatMulGroup(h, T, ws, ys, 2);
    }
    be.SwiGlu(gate_.data(), up_.data(), T * c.intermediate_size, gate_.data());
    be.MatMul(gate_.data(), T, m.down, h);
    if (comm_ != nullptr) {
      absl::Status st = comm_->AllReduceSum(h, static_cast<size_t>(T * H));
      if (!st.ok()) return st;
    }
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
  be.MatMul(h, n_rows, lm_head_, logits->data());
  return absl::OkStatus();
}

}  // namespace latentkv::worker
