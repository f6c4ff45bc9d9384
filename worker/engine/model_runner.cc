#include "worker/engine/model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
  auto vec = [&](const void* data, size_t floats) {
    return static_cast<const float*>(Upload(data, floats * sizeof(float)));
  };
  const model::ModelConfig& c = weights_->config;
  for (size_t l = 0; l < weights_->layers.size(); ++l) {
    const model::LayerWeights& w = weights_->layers[l];
    matrices_.push_back({matrix(w.q_proj), matrix(w.k_proj), matrix(w.v_proj),
                         matrix(w.o_proj), matrix(w.gate_proj),
                         matrix(w.up_proj), matrix(w.down_proj)});
    LayerVectors v{vec(w.attn_norm.data, c.hidden_size),
                   vec(w.ffn_norm.data, c.hidden_size),
                   vec(w.rope_inv_freq.data(), w.rope_inv_freq.size())};
    if (c.qk_norm) {
      v.q_norm = vec(w.q_norm.data, c.qk_proj_dim(l));
      v.k_norm = vec(w.k_norm.data, c.qk_proj_dim(l));
    }
    if (c.qk_latent_maps()) {
      v.q_latent = vec(w.q_latent.data, w.q_latent.numel());
      v.k_latent = vec(w.k_latent.data, w.k_latent.numel());
    }
    if (c.post_norms) {
      v.post_attn_norm = vec(w.post_attn_norm.data, c.hidden_size);
      v.post_ffn_norm = vec(w.post_ffn_norm.data, c.hidden_size);
    }
    if (c.qkv_bias) {
      v.q_bias = vec(w.q_bias.data, w.q_bias.numel());
      v.k_bias = vec(w.k_bias.data, w.k_bias.numel());
      v.v_bias = vec(w.v_bias.data, w.v_bias.numel());
    }
    vectors_.push_back(v);
  }
  lm_head_ = matrix(weights_->lm_head);
  // A table: never packed; f32 where the backend has no kernel for its dtype.
  std::vector<float> embed_f32;
  embed_ = Readable(weights_->embed_tokens, &embed_f32);
  embed_.data = Upload(
      embed_.data, static_cast<size_t>(
                       DTypeRowBytes(embed_.dtype, embed_.cols) * embed_.rows));
  KeepOrRelease(std::move(embed_f32));
  final_norm_ = vec(weights_->final_norm.data, c.hidden_size);
  if (converted_matrices_ > 0) {
    std::fprintf(stderr,
                 "latentkv: the %s backend has no kernels for %s weights: %d "
                 "matrices converted to f32 at load (%.1f MiB)\n",
                 std::string(backend_->name()).c_str(),
                 absl::StrJoin(converted_dtypes_, ", ").c_str(),
                 converted_matrices_,
                 static_cast<double>(converted_bytes_) / (1 << 20));
  }
}

ModelRunner::~ModelRunner() = default;

const void* ModelRunner::Upload(const void* data, size_t bytes) {
  if (backend_->host_addressable() || data == nullptr || bytes == 0) {
    return data;
  }
  auto buf = backend_->Alloc(bytes, "model weights");
  if (!buf.ok()) {
    if (init_status_.ok()) init_status_ = buf.status();
    return nullptr;
  }
  backend_->CopyIn(buf->data(), data, bytes);
  uploads_.push_back(std::move(*buf));
  return uploads_.back().data();
}

kernels::WeightView ModelRunner::Readable(const model::Tensor& t,
                                          std::vector<float>* f32) {
  kernels::WeightView w = View(t);
  if (w.rows <= 0 || w.cols <= 0 || backend_->SupportsWeights(w.dtype)) {
    return w;
  }
  f32->resize(static_cast<size_t>(w.rows * w.cols));
  ConvertToF32(w.data, w.dtype, w.rows * w.cols, f32->data());
  converted_dtypes_.insert(std::string(DTypeName(w.dtype)));
  ++converted_matrices_;
  converted_bytes_ += static_cast<int64_t>(f32->size() * sizeof(float));
  w.data = f32->data();
  w.dtype = DType::kF32;
  return w;
}

void ModelRunner::KeepOrRelease(std::vector<float> f32) {
  if (f32.empty()) return;
  if (backend_->host_addressable()) {
    converted_.push_back(std::move(f32));  // the backend reads it in place
    return;
  }
  // Uploaded from it: wait for the copy before the buffer goes.
  absl::Status s = backend_->Synchronize();
  if (!s.ok() && init_status_.ok()) init_status_ = s;
}

kernels::WeightView ModelRunner::Matrix(const model::Tensor& t, bool pack) {
  std::vector<float> f32;
  kernels::WeightView w = Readable(t, &f32);
  if (w.rows <= 0 || w.cols <= 0) return w;
  if (pack && backend_->PrefersPanels(w.dtype) &&
      backend_->host_addressable()) {
    auto dst = backend_->Alloc(static_cast<size_t>(kernels::PanelBytes(w)),
                               "packed weights");
    if (dst.ok()) {
      uploads_.push_back(std::move(*dst));
      return kernels::PackPanels(w, uploads_.back().data());
    }
    // No memory for a copy: multiply in place.
  } else {
    // Stored as loaded (quantized blocks stay blocks): rows of
    // DTypeRowBytes(dtype, cols) bytes.
    w.data = Upload(
        w.data, static_cast<size_t>(DTypeRowBytes(w.dtype, w.cols) * w.rows));
  }
  KeepOrRelease(std::move(f32));
  return w;
}

absl::StatusOr<KvStorage> CreateKvStorage(const ModelRunner& runner,
                                          kernels::Backend* backend,
                                          const KvCacheOptions& options) {
  auto cache = KvCache::Create(runner.KvShapes(), options);
  if (!cache.ok()) return cache.status();
  KvScales scales;
  if (options.dtype == DType::kF8E4M3) scales = runner.Fp8KvScales();
  auto pools = KvPools::Create(backend, **cache, std::move(scales));
  if (!pools.ok()) return pools.status();
  return KvStorage{std::move(*cache), std::move(*pools)};
}

std::vector<LayerKvShape> KvShapesOf(const model::ModelConfig& c) {
  std::vector<LayerKvShape> shapes;
  for (int l = 0; l < c.num_layers; ++l) {
    shapes.push_back({c.num_kv_heads, c.qk_head_dim[l], c.vo_head_dim[l],
                      c.qk_head_dim[l] - c.rope_dim(l)});
  }
  return shapes;
}

std::vector<LayerKvShape> ModelRunner::KvShapes() const {
  return KvShapesOf(config());
}

KvScales ModelRunner::Fp8KvScales() const {
  const auto& c = config();
  const int64_t H = c.hidden_size;
  const double sqrt_h = std::sqrt(static_cast<double>(H));
  KvScales scales;
  std::vector<float> row(H);
  for (int l = 0; l < c.num_layers; ++l) {
    const model::LayerWeights& w = weights_->layers[l];
    const float* g = w.attn_norm.f32();
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
    const int32_t half = c.rope_dim(l) / 2;  // rotary pairs (j, j + half)
    scales.k.emplace_back();
    scales.v.emplace_back();
    for (int32_t h = 0; h < c.num_kv_heads; ++h) {
      double kmax = 0, vmax = 0;
      if (c.qk_latent_maps()) {
        // The normed head u * g has ||u||_2 <= sqrt(P) (P = qk_norm_dim), so
        // latent channel j = M_j . (g * u) is at most sqrt(P) ||M_j * g||_2
        // (Cauchy-Schwarz); a rotated pair at most the hypot of its two.
        const int32_t P = c.qk_norm_dim;
        const float* kn = w.k_norm.f32();
        std::vector<double> b(dqk);
        for (int32_t j = 0; j < dqk; ++j) {
          const float* mj = w.k_latent.f32() + (int64_t{h} * dqk + j) * P;
          double ss = 0;
          for (int32_t i = 0; i < P; ++i) {
            const double x = double{mj[i]} * kn[i];
            ss += x * x;
          }
          b[j] = std::sqrt(static_cast<double>(P) * ss);
        }
        for (int32_t j = 0; j < half; ++j) {
          kmax = std::max(kmax, std::hypot(b[j], b[j + half]));
        }
        for (int32_t j = 2 * half; j < dqk; ++j) kmax = std::max(kmax, b[j]);
      } else if (c.qk_norm) {
        // A normed head has sum of squares <= d_qk before its weights, so a
        // channel, and a rotated pair's norm, is at most sqrt(d_qk) times
        // the largest weight involved.
        const float* kn = w.k_norm.f32();
        for (int32_t j = 0; j < dqk; ++j) {
          kmax = std::max(kmax, std::sqrt(static_cast<double>(dqk)) *
                                    std::fabs(double{kn[j]}));
        }
      } else {
        // A rotated pair mixes its two channels; position-free channels
        // (partial rotary: j >= 2 * half) stay as they are.
        const double* kh = &kb[h * dqk];
        for (int32_t j = 0; j < half; ++j) {
          kmax = std::max(kmax, std::hypot(kh[j], kh[j + half]));
        }
        for (int32_t j = 2 * half; j < dqk; ++j) kmax = std::max(kmax, kh[j]);
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

}  // namespace latentkv::worker
