// ModelRunner::Forward: one step, planned on the host, run on the backend.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/engine/model_runner.h"

namespace latentkv::worker {
namespace {

// Grows `buf` to hold `bytes` (contents not kept).
absl::Status Grow(kernels::Backend& be, kernels::DeviceBuffer& buf,
                  size_t bytes, const char* what) {
  if (buf.bytes() >= bytes) return absl::OkStatus();
  buf.Reset();
  auto b = be.Alloc(std::max<size_t>(bytes, 64), what);
  if (!b.ok()) return b.status();
  buf = std::move(*b);
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelRunner::EnsureCapacity(int64_t rows) {
  if (rows <= capacity_rows_) return absl::OkStatus();
  const auto& c = config();
  int64_t max_q = 0, max_v = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    max_q = std::max<int64_t>(max_q, c.qk_head_dim[l]);
    max_v = std::max<int64_t>(max_v, c.vo_head_dim[l]);
  }
  kernels::Backend& be = *backend_;
  const size_t f = sizeof(float);
  const size_t n = static_cast<size_t>(rows);
  for (auto [buf, elems] :
       {std::pair{&x_, n * c.hidden_size}, std::pair{&h_, n * c.hidden_size},
        std::pair{&q_, n * c.num_heads * max_q},
        std::pair{&k_, n * c.num_kv_heads * max_q},
        std::pair{&v_, n * c.num_kv_heads * max_v},
        std::pair{&attn_, n * c.num_heads * max_v},
        std::pair{&gate_, n * c.intermediate_size},
        std::pair{&up_, n * c.intermediate_size},
        std::pair{&q_src_, n * c.num_heads * c.qk_norm_dim},
        std::pair{&k_src_, n * c.num_kv_heads * c.qk_norm_dim}}) {
    if (elems == 0) continue;
    absl::Status st = Grow(be, *buf, elems * f, "activations");
    if (!st.ok()) return st;
  }
  capacity_rows_ = rows;
  return absl::OkStatus();
}

absl::Status ModelRunner::CodebookAttention(
    const std::vector<ForwardChunk>& chunks, const KvCache& cache,
    KvPools& pools, int32_t layer, const kernels::PagedAttentionArgs& main) {
  const int32_t nh = main.n_heads, dqk = main.d_qk, dvo = main.d_vo;
  const kernels::RopeTable rope = HostRope(layer);
  // Host-addressable (checked at engine start): device pointers are host's.
  const float* q = q_.as<float>();
  const int32_t* pos = plan_.at(plan_.positions);
  float* attn = attn_.as<float>();
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
      cb_q_.insert(cb_q_.end(), q + r * nh * dqk, q + (r + ch.len) * nh * dqk);
      cb_pos_.insert(cb_pos_.end(), pos + r, pos + r + ch.len);
      cb_q_indptr_.push_back(cb_q_indptr_.back() + ch.len);
      absl::Status st = ch.residency->AppendCodebookView(
          cache, pools, *ch.kv, layer, rope, &scratch_, &cb_kv_indptr_,
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
  b.total_q = 0;  // host memory: no hints needed
  b.max_q_rows = 0;
  b.max_pages = 0;
  backend_->PagedAttention(b);
  int64_t from = 0;
  for (const auto& [first, len] : rows) {
    std::copy_n(cb_out_.data() + from * nh * dvo, int64_t{len} * nh * dvo,
                attn + first * nh * dvo);
    from += len;
  }
  return absl::OkStatus();
}

absl::Status ModelRunner::RunResidency(const std::vector<ForwardChunk>& chunks,
                                       KvCache& cache, KvPools& pools,
                                       int32_t layer) {
  const auto& c = config();
  const int64_t row = int64_t{c.num_heads} * c.qk_head_dim[layer];
  const kernels::RopeTable rope = HostRope(layer);
  const int32_t* pos = plan_.at(plan_.positions);
  int64_t r = 0;
  for (const auto& ch : chunks) {
    if (ch.residency != nullptr && ch.len > 0) {
      const float* q = q_.as<float>() + r * row;
      if (!backend_->host_addressable()) {
        // The policy keeps window queries on the host: copy this chunk's.
        host_q_.resize(static_cast<size_t>(ch.len * row));
        backend_->CopyOut(host_q_.data(), q, host_q_.size() * sizeof(float));
        absl::Status st = backend_->Synchronize();
        if (!st.ok()) return st;
        q = host_q_.data();
      }
      absl::Status st = ch.residency->AfterLayer(cache, pools, *ch.kv, layer, q,
                                                 pos + r, ch.len, rope);
      if (!st.ok()) return st;
    }
    r += ch.len;
  }
  return absl::OkStatus();
}

absl::Status ModelRunner::Forward(const std::vector<ForwardChunk>& chunks,
                                  KvCache& cache, KvPools& pools,
                                  std::vector<float>* logits,
                                  std::vector<int32_t>* argmax,
                                  std::vector<float>* hidden) {
  if (!init_status_.ok()) return init_status_;
  const auto& c = config();
  const int64_t H = c.hidden_size;
  absl::Status st = BuildStepPlan(chunks, cache, c.vocab_size,
                                  c.max_position_embeddings, &plan_);
  if (!st.ok()) return st;
  const int64_t T = plan_.num_tokens;
  st = EnsureCapacity(T);
  if (st.ok()) {
    st = Grow(*backend_, plan_ints_, plan_.ints.size() * sizeof(int32_t),
              "the step plan");
  }
  if (st.ok()) {
    st = Grow(*backend_, plan_slots_, plan_.slots.size() * sizeof(int64_t),
              "the step plan");
  }
  if (!st.ok()) return st;

  // The plan goes up once; every layer reads it there.
  kernels::Backend& be = *backend_;
  be.CopyIn(plan_ints_.data(), plan_.ints.data(),
            plan_.ints.size() * sizeof(int32_t));
  be.CopyIn(plan_slots_.data(), plan_.slots.data(),
            plan_.slots.size() * sizeof(int64_t));
  const int32_t* ints = plan_ints_.as<int32_t>();
  const int64_t* slots = plan_slots_.as<int64_t>();
  const int32_t* positions = ints + plan_.positions;
  float* x = x_.as<float>();
  float* h = h_.as<float>();
  float* q = q_.as<float>();
  float* k = k_.as<float>();
  float* v = v_.as<float>();
  float* attn = attn_.as<float>();
  float* gate = gate_.as<float>();
  float* up = up_.as<float>();
  be.Embed(embed_, ints + plan_.tokens, T, x);
  if (c.embedding_scale != 1.0f) be.Scale(x, T * H, c.embedding_scale);

  for (int l = 0; l < c.num_layers; ++l) {
    const LayerMatrices& m = matrices_[l];
    const LayerVectors& lv = vectors_[l];
    const StepPlan::Layer& pl = plan_.layers[l];
    const int32_t dqk = c.qk_head_dim[l];
    const int32_t nh = c.num_heads, nkv = c.num_kv_heads;

    be.RmsNorm(x, lv.attn_norm, T, H, c.rms_norm_eps, h);
    // q/k as projected: into q/k, or, with maps after the norms, into their
    // wider source buffers first.
    const bool mapped = lv.q_latent != nullptr;
    float* qp = mapped ? q_src_.as<float>() : q;
    float* kp = mapped ? k_src_.as<float>() : k;
    const int32_t dp = c.qk_proj_dim(l);
    {
      const kernels::WeightView ws[3] = {m.q, m.k, m.v};
      float* const ys[3] = {qp, kp, v};
      be.MatMulGroup(h, T, ws, ys, 3);
    }
    if (lv.q_bias != nullptr) {
      be.AddRowBias(qp, lv.q_bias, T, m.q.rows);
      be.AddRowBias(kp, lv.k_bias, T, m.k.rows);
      be.AddRowBias(v, lv.v_bias, T, m.v.rows);
    }
    if (lv.q_norm != nullptr) {
      be.RmsNorm(qp, lv.q_norm, T * nh, dp, c.rms_norm_eps, qp);
      be.RmsNorm(kp, lv.k_norm, T * nkv, dp, c.rms_norm_eps, kp);
    }
    if (mapped) {
      be.MapHeads(qp, T, nh, dp, lv.q_latent, dqk, q);
      be.MapHeads(kp, T, nkv, dp, lv.k_latent, dqk, k);
    }
    const int32_t rope = c.rope_dim(l);
    be.ApplyRope(q, T, nh, dqk, rope, positions, lv.inv_freq);
    be.ApplyRope(k, T, nkv, dqk, rope, positions, lv.inv_freq);
    const kernels::KvPoolView& pool = pools.view(l);
    be.WriteKv(k, v, positions, T, slots + pl.slots, pool);

    kernels::PagedAttentionArgs a;
    a.SetPool(pool);
    a.num_seqs = plan_.num_seqs;
    a.n_heads = nh;
    a.scale = c.attention_scale(l);
    a.window = c.window(l);
    a.q_indptr = ints + plan_.q_indptr;
    a.q = q;
    a.q_pos = positions;
    a.kv_indptr = ints + pl.kv_indptr;
    a.kv_indices = ints + pl.kv_indices;
    a.kv_last_page_len = ints + pl.kv_last;
    a.out = attn;
    a.total_q = static_cast<int32_t>(T);
    a.max_q_rows = plan_.max_q_rows;
    a.max_pages = pl.max_pages;
    be.PagedAttention(a);
    if (pl.any_codebook) {
      st = CodebookAttention(chunks, cache, pools, l, a);
      if (!st.ok()) return st;
    }
    // Residency policies see this layer's queries and may evict its slots
    // (layer l's page table only: later layers' plans stay valid).
    st = RunResidency(chunks, cache, pools, l);
    if (!st.ok()) return st;

    be.MatMul(attn, T, m.o, h);
    if (comm_ != nullptr) {
      st = comm_->AllReduceSum(h, static_cast<size_t>(T * H));
      if (!st.ok()) return st;
    }
    if (lv.post_attn_norm != nullptr) {
      be.RmsNorm(h, lv.post_attn_norm, T, H, c.rms_norm_eps, h);
    }
    be.AddInPlace(x, h, T * H);

    be.RmsNorm(x, lv.ffn_norm, T, H, c.rms_norm_eps, h);
    {
      const kernels::WeightView ws[2] = {m.gate, m.up};
      float* const ys[2] = {gate, up};
      be.MatMulGroup(h, T, ws, ys, 2);
    }
    if (c.hidden_act == model::Activation::kGeluTanh) {
      be.GeluTanhGlu(gate, up, T * c.intermediate_size, gate);
    } else {
      be.SwiGlu(gate, up, T * c.intermediate_size, gate);
    }
    be.MatMul(gate, T, m.down, h);
    if (comm_ != nullptr) {
      st = comm_->AllReduceSum(h, static_cast<size_t>(T * H));
      if (!st.ok()) return st;
    }
    if (lv.post_ffn_norm != nullptr) {
      be.RmsNorm(h, lv.post_ffn_norm, T, H, c.rms_norm_eps, h);
    }
    be.AddInPlace(x, h, T * H);
  }

  // Embeddings: the hidden chunks' rows, final-normed, copied out (h is
  // free until the logits below).
  if (hidden != nullptr) {
    // Sized once: the copies land there asynchronously (until Synchronize).
    int64_t rows = 0;
    for (const ForwardChunk& ch : chunks) rows += ch.hidden ? ch.len : 0;
    hidden->resize(static_cast<size_t>(rows * H));
    int64_t r = 0, at = 0;
    for (const ForwardChunk& ch : chunks) {
      if (ch.hidden) {
        be.RmsNorm(x + r * H, final_norm_, ch.len, H, c.rms_norm_eps,
                   h + r * H);
        be.CopyOut(hidden->data() + at * H, h + r * H,
                   static_cast<size_t>(ch.len) * H * sizeof(float));
        at += ch.len;
      }
      r += ch.len;
    }
  }

  // Only the rows that sample: gather, final norm, LM head, copy out.
  const int64_t n_rows = plan_.logit_rows;
  logits->resize(n_rows * c.vocab_size);
  if (n_rows > 0) {
    st = Grow(be, logits_, logits->size() * sizeof(float), "logits");
    if (!st.ok()) return st;
    be.GatherRows(x, H, ints + plan_.logit_row, n_rows, h);
    be.RmsNorm(h, final_norm_, n_rows, H, c.rms_norm_eps, h);
    be.MatMul(h, n_rows, lm_head_, logits_.as<float>());
    if (argmax == nullptr) {
      be.CopyOut(logits->data(), logits_.data(),
                 logits->size() * sizeof(float));
    } else {
      st = Grow(be, argmax_, n_rows * sizeof(int32_t), "greedy tokens");
      if (!st.ok()) return st;
      argmax->resize(n_rows);
      be.ArgmaxRows(logits_.as<float>(), n_rows, c.vocab_size,
                    argmax_.as<int32_t>());
      be.CopyOut(argmax->data(), argmax_.data(), n_rows * sizeof(int32_t));
      // The other rows' logits, one copy per run of consecutive rows.
      const int64_t V = c.vocab_size;
      int64_t run_begin = -1;
      auto flush = [&](int64_t end) {
        if (run_begin < 0) return;
        be.CopyOut(logits->data() + run_begin * V,
                   logits_.as<float>() + run_begin * V,
                   (end - run_begin) * V * sizeof(float));
        run_begin = -1;
      };
      for (int64_t row = 0; row < n_rows; ++row) {
        if (plan_.logit_greedy[row]) {
          flush(row);
        } else if (run_begin < 0) {
          run_begin = row;
        }
      }
      flush(n_rows);
    }
  } else if (argmax != nullptr) {
    argmax->clear();
  }
  return be.Synchronize();
}

}  // namespace latentkv::worker
