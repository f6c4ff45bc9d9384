#include "model/shard.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::model {
namespace {

// Rows [r0, r0 + nr) of a [rows, cols] matrix.
Tensor Rows(const Tensor& t, int64_t r0, int64_t nr) {
  const int64_t cols = t.shape.back();
  const size_t row_bytes = DTypeRowBytes(t.dtype, cols);
  Tensor out;
  out.dtype = t.dtype;
  out.shape = {nr, cols};
  out.owned.resize(static_cast<size_t>(nr) * row_bytes);
  std::memcpy(out.owned.data(),
              static_cast<const uint8_t*>(t.data) + r0 * row_bytes,
              out.owned.size());
  out.data = out.owned.data();
  return out;
}

// The columns [c0, c0 + nc) of a [rows, cols] matrix (whole quantization
// blocks: the caller checks c0 and nc are multiples of the block size).
Tensor Cols(const Tensor& t, int64_t c0, int64_t nc) {
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const size_t in_row = DTypeRowBytes(t.dtype, cols);
  const size_t out_row = DTypeRowBytes(t.dtype, nc);
  const size_t skip = DTypeRowBytes(t.dtype, c0);
  Tensor out;
  out.dtype = t.dtype;
  out.shape = {rows, nc};
  out.owned.resize(static_cast<size_t>(rows) * out_row);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.owned.data() + r * out_row,
                static_cast<const uint8_t*>(t.data) + r * in_row + skip,
                out_row);
  }
  out.data = out.owned.data();
  return out;
}

// Elements [i0, i0 + n) of an f32 vector, as a non-owning view.
Tensor Slice(const Tensor& t, int64_t i0, int64_t n) {
  Tensor v;
  v.dtype = t.dtype;
  v.shape = {n};
  v.data = t.f32() + i0;
  return v;
}

// A non-owning view of `t` (valid while the full model lives).
Tensor View(const Tensor& t) {
  Tensor v;
  v.dtype = t.dtype;
  v.shape = t.shape;
  v.data = t.data;
  return v;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ModelWeights>> ShardForTensorParallel(
    std::shared_ptr<const ModelWeights> full, int rank, int size) {
  const ModelConfig& c = full->config;
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallel rank ", rank, " of ", size));
  }
  if (c.num_kv_heads % size != 0 || c.num_heads % size != 0 ||
      c.intermediate_size % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor parallel size ", size, " must divide the KV heads (",
        c.num_kv_heads, "), the heads (", c.num_heads, ") and the MLP width (",
        c.intermediate_size, ")"));
  }
  // Row-parallel matrices (o_proj, down_proj) are cut along their columns:
  // with quantized weights each rank's slice must be whole blocks.
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& f = full->layers[l];
    const struct {
      const Tensor* t;
      int64_t slice;
      const char* name;
    } cuts[] = {{&f.o_proj, c.num_heads / size * c.vo_head_dim[l], "o_proj"},
                {&f.down_proj, c.intermediate_size / size, "down_proj"}};
    for (const auto& cut : cuts) {
      const int block = DTypeBlockElems(cut.t->dtype);
      if (cut.slice % block != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor parallel size ", size, ": layer ", l, " ", cut.name,
            " slices of ", cut.slice, " columns are not whole ",
            std::string(DTypeName(cut.t->dtype)), " blocks of ", block));
      }
    }
  }
  // The shard and the full model it views, freed together.
  struct Holder {
    ModelWeights shard;
    std::shared_ptr<const ModelWeights> full;
  };
  auto holder = std::make_shared<Holder>();
  holder->full = full;
  ModelWeights* out = &holder->shard;
  ModelConfig& s = out->config;
  s = c;
  s.qk_head_dim = c.qk_head_dim;
  s.vo_head_dim = c.vo_head_dim;
  s.num_heads = c.num_heads / size;
  s.num_kv_heads = c.num_kv_heads / size;
  s.intermediate_size = c.intermediate_size / size;
  out->embed_tokens = View(full->embed_tokens);
  out->final_norm = View(full->final_norm);
  out->lm_head = View(full->lm_head);
  out->file = full->file;
  out->gguf = full->gguf;
  const int64_t I = s.intermediate_size;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& f = full->layers[l];
    LayerWeights w;
    const int64_t dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
    const int64_t dp = c.qk_proj_dim(l);  // q/k heads as projected
    w.attn_norm = View(f.attn_norm);
    w.ffn_norm = View(f.ffn_norm);
    w.q_proj = Rows(f.q_proj, rank * s.num_heads * dp, s.num_heads * dp);
    w.k_proj = Rows(f.k_proj, rank * s.num_kv_heads * dp, s.num_kv_heads * dp);
    w.v_proj =
        Rows(f.v_proj, rank * s.num_kv_heads * dvo, s.num_kv_heads * dvo);
    w.o_proj = Cols(f.o_proj, rank * s.num_heads * dvo, s.num_heads * dvo);
    w.gate_proj = Rows(f.gate_proj, rank * I, I);
    w.up_proj = Rows(f.up_proj, rank * I, I);
    w.down_proj = Cols(f.down_proj, rank * I, I);
    w.rope_inv_freq = f.rope_inv_freq;
    // Per-head and hidden-width norms: every rank uses them whole.
    w.q_norm = View(f.q_norm);
    w.k_norm = View(f.k_norm);
    w.post_attn_norm = View(f.post_attn_norm);
    w.post_ffn_norm = View(f.post_ffn_norm);
    // Per-head maps after the norms follow their heads.
    if (c.qk_latent_maps()) {
      w.q_latent =
          Rows(f.q_latent, rank * s.num_heads * dqk, s.num_heads * dqk);
      w.k_latent =
          Rows(f.k_latent, rank * s.num_kv_heads * dqk, s.num_kv_heads * dqk);
    }
    // Biases follow their projections' rows.
    if (c.qkv_bias) {
      w.q_bias = Slice(f.q_bias, rank * s.num_heads * dp, s.num_heads * dp);
      w.k_bias =
          Slice(f.k_bias, rank * s.num_kv_heads * dp, s.num_kv_heads * dp);
      w.v_bias =
          Slice(f.v_bias, rank * s.num_kv_heads * dvo, s.num_kv_heads * dvo);
    }
    out->layers.push_back(std::move(w));
  }
  return std::shared_ptr<const ModelWeights>(holder, out);
}

}  // namespace latentkv::model
