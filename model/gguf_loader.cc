#include "model/gguf_loader.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "model/gguf/ggml_quants.h"
#include "model/gguf_arch.h"

namespace latentkv::model {
namespace {

namespace fs = std::filesystem;

std::string DimsString(const std::vector<int64_t>& d) {
  return absl::StrCat("[", absl::StrJoin(d, ", "), "]");
}

// Undoes llama.cpp's Q/K permutation of a [heads * hd, cols] matrix on its
// stored rows (`row_bytes` each): HF row (h*hd + half*hd/2 + i) = GGUF row
// (h*hd + 2i + half).
std::vector<uint8_t> UnpermuteRows(const uint8_t* src, int64_t heads,
                                   int64_t hd, size_t row_bytes) {
  std::vector<uint8_t> dst(static_cast<size_t>(heads * hd) * row_bytes);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t half = 0; half < 2; ++half) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const int64_t to = h * hd + half * (hd / 2) + i;
        const int64_t from = h * hd + 2 * i + half;
        std::memcpy(dst.data() + to * row_bytes, src + from * row_bytes,
                    row_bytes);
      }
    }
  }
  return dst;
}

class Loader {
 public:
  Loader(const GgufFile& f, const LoadOptions& o) : f_(f), o_(o) {}

  // Loads `name` as a [rows, cols] tensor (GGUF dims {cols, rows}; a vector
  // when rows == 0). `rope_heads` > 0 undoes the Q/K permutation.
  absl::Status Load(const std::string& name, int64_t rows, int64_t cols,
                    bool norm, int64_t rope_heads, Tensor* out) {
    const GgufTensorInfo* t = f_.FindTensor(name);
    const std::vector<int64_t> want = rows == 0
                                          ? std::vector<int64_t>{cols}
                                          : std::vector<int64_t>{cols, rows};
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(f_.path(), ": missing tensor ",
                                              name, " (expected dims ",
                                              DimsString(want), ")"));
    }
    if (t->dims != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(f_.path(), ": ", name, ": expected dims ",
                       DimsString(want), ", got ", DimsString(t->dims)));
    }
    const std::optional<DType> stored = GgmlToDType(t->type);
    if (!stored) {
      return absl::InvalidArgumentError(
          absl::StrCat(f_.path(), ": ", name, ": unsupported tensor type ",
                       GgmlTypeName(t->type)));
    }
    const int64_t r = rows == 0 ? 1 : rows;
    // Every stored type is a dtype the kernels read (the k-quants and
    // Q5_0/Q5_1 too): rows must be whole blocks (k-quants: super-blocks of
    // 256 elements).
    if (cols % DTypeBlockElems(*stored) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          f_.path(), ": ", name, ": rows of ", cols, " are not whole ",
          GgmlTypeName(t->type), " blocks of ", DTypeBlockElems(*stored)));
    }
    DType target = *stored;
    if (norm) {
      target = DType::kF32;
    } else if (o_.matrix_dtype) {
      target = *o_.matrix_dtype;
    } else if (target == DType::kF16) {
      target = DType::kF32;
    }
    out->dtype = target;
    out->shape = rows == 0 ? std::vector<int64_t>{cols}
                           : std::vector<int64_t>{rows, cols};
    const uint8_t* src = t->data;
    std::vector<uint8_t> permuted;
    if (rope_heads > 0) {
      permuted = UnpermuteRows(src, rope_heads, rows / rope_heads,
                               DTypeRowBytes(*stored, cols));
      src = permuted.data();
    }
    if (target == *stored) {
      if (!permuted.empty()) {
        out->owned = std::move(permuted);
        out->data = out->owned.data();
      } else if (reinterpret_cast<uintptr_t>(src) % 4 == 0) {  // a view
        out->data = src;
      } else {
        out->owned.assign(src, src + t->nbytes);
        out->data = out->owned.data();
      }
      return absl::OkStatus();
    }
    absl::Status s = ConvertMatrix(src, *stored, r, cols, target, &out->owned);
    if (!s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat(f_.path(), ": ", name, ": ", s.message()));
    }
    out->data = out->owned.data();
    return absl::OkStatus();
  }

 private:
  const GgufFile& f_;
  const LoadOptions& o_;
};

absl::StatusOr<std::string> ArchPrefix(const GgufFile& f) {
  auto arch = f.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  if (!internal::SupportedGgufArchitecture(*arch)) {
    return absl::UnimplementedError(absl::StrCat(
        f.path(), ": architecture '", *arch,
        "' is not supported (llama: Llama, Mistral, SmolLM, ...; gemma3; "
        "qwen2; qwen3)"));
  }
  return *arch + ".";
}

}  // namespace

absl::StatusOr<std::string> FindGgufFile(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_regular_file(p, ec)) {
    if (p.extension() == ".gguf") return path;
    return absl::NotFoundError(
        absl::StrCat(path, " is a file but not a .gguf model"));
  }
  if (!fs::is_directory(p, ec)) {
    return absl::NotFoundError(
        absl::StrCat("no model at ", path,
                     " (neither a directory with config.json nor a "
                     ".gguf)"));
  }
  if (fs::exists(p / "config.json", ec)) {
    return absl::NotFoundError(
        absl::StrCat(path, " holds config.json (not a GGUF model)"));
  }
  const std::vector<std::string> found = GgufFilesIn(path);
  if (found.size() == 1) return found[0];
  if (found.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no config.json and no *.gguf in ", path));
  }
  return absl::NotFoundError(absl::StrCat(path, " holds several GGUF files (",
                                          absl::StrJoin(found, ", "),
                                          "): name one"));
}

bool IsGgufModel(const std::string& path) { return FindGgufFile(path).ok(); }

absl::StatusOr<std::optional<std::string>> ResolveModelPath(
    const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec) &&
      fs::exists(fs::path(path) / "config.json", ec)) {
    return std::optional<std::string>();
  }
  auto gguf = FindGgufFile(path);
  if (!gguf.ok()) return gguf.status();
  return std::optional<std::string>(*gguf);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  auto resolved = ResolveModelPath(path);
  if (!resolved.ok()) return resolved.status();
  if (!resolved->has_value()) return ModelConfig::FromDir(path);
  auto file = GgufFile::Open(**resolved);
  if (!file.ok()) return file.status();
  return ConfigFromGguf(**file);
}

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& f) {
  auto prefix = ArchPrefix(f);
  if (!prefix.ok()) return prefix.status();
  const std::string& a = *prefix;
  ModelConfig c;
  auto get_int = [&](const std::string& key, int* out) -> absl::Status {
    auto v = f.GetInt(key);
    if (!v.ok()) return v.status();
    if (*v <= 0 || *v > (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": ", key, " = ", *v));
    }
    *out = static_cast<int>(*v);
    return absl::OkStatus();
  };
  absl::Status s = get_int(a + "block_count", &c.num_layers);
  if (s.ok()) s = get_int(a + "embedding_length", &c.hidden_size);
  if (s.ok()) s = get_int(a + "feed_forward_length", &c.intermediate_size);
  if (s.ok()) s = get_int(a + "attention.head_count", &c.num_heads);
  if (s.ok()) s = get_int(a + "context_length", &c.max_position_embeddings);
  if (!s.ok()) return s;
  c.num_kv_heads = c.num_heads;
  if (f.Has(a + "attention.head_count_kv")) {
    s = get_int(a + "attention.head_count_kv", &c.num_kv_heads);
    if (!s.ok()) return s;
  }
  if (f.Has(a + "vocab_size")) {
    s = get_int(a + "vocab_size", &c.vocab_size);
    if (!s.ok()) return s;
  } else {
    auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
    if (!tokens.ok()) return tokens.status();
    c.vocab_size = static_cast<int>(tokens->size());
  }
  auto eps = f.GetFloat(a + "attention.layer_norm_rms_epsilon");
  if (!eps.ok()) return eps.status();
  c.rms_norm_eps = static_cast<float>(*eps);
  if (f.Has(a + "rope.freq_base")) {
    auto base = f.GetFloat(a + "rope.freq_base");
    if (!base.ok()) return base.status();
    c.rope_theta = *base;
  }
  // Head widths: attention.key_length / value_length when present (Gemma:
  // 256 with a hidden size of 640 and 4 heads), else hidden / heads.
  int head_dim = 0, value_dim = 0;
  for (auto [key, out] : {std::pair{"attention.key_length", &head_dim},
                          std::pair{"attention.value_length", &value_dim}}) {
    if (!f.Has(a + key)) continue;
    s = get_int(a + key, out);
    if (!s.ok()) return s;
  }
  if (head_dim == 0 || value_dim == 0) {
    if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": embedding_length ", c.hidden_size,
                       " is not a multiple of head_count ", c.num_heads));
    }
    if (head_dim == 0) head_dim = c.hidden_size / c.num_heads;
    if (value_dim == 0) value_dim = c.hidden_size / c.num_heads;
  }
  int rot = head_dim;
  if (f.Has(a + "rope.dimension_count")) {
    s = get_int(a + "rope.dimension_count", &rot);
    if (!s.ok()) return s;
    if (rot != head_dim &&
        (a == "llama." || rot < 0 || rot > head_dim || rot % 2 != 0)) {
      // llama.cpp stores Llama's Q/K rows permuted over the whole head for
      // its interleaved RoPE, which has no partial-rotary equivalent in the
      // rotate-half layout; other architectures keep HF's rows.
      return absl::UnimplementedError(absl::StrCat(
          f.path(), ": partial rotary embeddings (rope.dimension_count ", rot,
          " of head dim ", head_dim,
          ") are supported for even counts on "
          "rotate-half architectures only"));
    }
  }
  s = internal::ReadRopeScaling(f, a, rot, &c);
  if (!s.ok()) return s;
  // Absurd counts from a hostile header are refused before the per-layer
  // lists are built.
  if (absl::Status b = c.CheckBounds(); !b.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": ", b.message()));
  }
  c.qk_head_dim.assign(c.num_layers, head_dim);
  c.vo_head_dim.assign(c.num_layers, value_dim);
  if (rot != head_dim) c.rope_dims.assign(c.num_layers, rot);
  s = internal::SetArchFeatures(f, a.substr(0, a.size() - 1), &c);
  if (!s.ok()) return s;
  c.rope_scheme = RopeScheme::kStandard;
  c.tie_word_embeddings = f.FindTensor("output.weight") == nullptr;
  for (auto [key, out] :
       {std::pair{"tokenizer.ggml.bos_token_id", &c.bos_token_id},
        std::pair{"tokenizer.ggml.eos_token_id", &c.eos_token_id}}) {
    if (!f.Has(key)) continue;
    auto v = f.GetInt(key);
    if (!v.ok()) return v.status();
    *out = static_cast<int>(*v);
  }
  // End of generation besides EOS, as llama.cpp decides it: the eot/eom ids
  // and control tokens with a known end-of-turn text.
  for (const char* key :
       {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!f.Has(key)) continue;
    auto v = f.GetInt(key);
    if (!v.ok()) return v.status();
    if (*v >= 0 && *v != c.eos_token_id) {
      c.extra_eos_token_ids.push_back(static_cast<int>(*v));
    }
  }
  if (f.Has("tokenizer.ggml.tokens") && f.Has("tokenizer.ggml.token_type")) {
    auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
    auto types = f.GetIntArray("tokenizer.ggml.token_type");
    if (tokens.ok() && types.ok() && tokens->size() == types->size()) {
      static constexpr const char* kEndOfTurn[] = {
          "<|endoftext|>", "<|im_end|>",    "<|eot_id|>",      "<|eom_id|>",
          "<|end|>",       "<end_of_turn>", "<|end_of_text|>", "</s>"};
      for (size_t id = 0; id < tokens->size(); ++id) {
        if ((*types)[id] != 3 || static_cast<int>(id) == c.eos_token_id) {
          continue;  // control tokens only
        }
        for (const char* t : kEndOfTurn) {
          if ((*tokens)[id] == t &&
              std::find(c.extra_eos_token_ids.begin(),
                        c.extra_eos_token_ids.end(),
                        static_cast<int>(id)) == c.extra_eos_token_ids.end()) {
            c.extra_eos_token_ids.push_back(static_cast<int>(id));
          }
        }
      }
    }
  }
  s = c.Validate();
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(f.path(), ": ", s.message()));
  }
  return c;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadGgufModel(
    std::shared_ptr<const GgufFile> file, const LoadOptions& options) {
  auto config = ConfigFromGguf(*file);
  if (!config.ok()) return config.status();
  auto w = std::make_unique<ModelWeights>();
  w->config = *config;
  w->gguf = file;
  const ModelConfig& c = w->config;
  Loader ld(*file, options);
  // llama.cpp permutes Q/K rows for its interleaved RoPE on Llama only
  // (Gemma's rotate-half "NEOX" rows are stored as HF has them).
  const bool permuted = *file->GetString("general.architecture") == "llama";
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  absl::Status s =
      ld.Load("token_embd.weight", c.vocab_size, h, false, 0, &w->embed_tokens);
  if (!s.ok()) return s;
  w->layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w->layers[l];
    const std::string p = absl::StrCat("blk.", l, ".");
    const int64_t hd = c.qk_head_dim[l], vd = c.vo_head_dim[l];
    const int64_t nh = c.num_heads, nkv = c.num_kv_heads;
    struct Item {
      const char* suffix;
      int64_t rows, cols;
      bool norm;
      int64_t rope_heads;
      Tensor* out;
      bool wanted;
    };
    const Item items[] = {
        {"attn_norm.weight", 0, h, true, 0, &lw.attn_norm, true},
        {"attn_q.weight", nh * hd, h, false, permuted ? nh : 0, &lw.q_proj,
         true},
        {"attn_k.weight", nkv * hd, h, false, permuted ? nkv : 0, &lw.k_proj,
         true},
        {"attn_v.weight", nkv * vd, h, false, 0, &lw.v_proj, true},
        {"attn_output.weight", h, nh * vd, false, 0, &lw.o_proj, true},
        {"ffn_norm.weight", 0, h, true, 0, &lw.ffn_norm, true},
        {"ffn_gate.weight", inter, h, false, 0, &lw.gate_proj, true},
        {"ffn_up.weight", inter, h, false, 0, &lw.up_proj, true},
        {"ffn_down.weight", h, inter, false, 0, &lw.down_proj, true},
        {"attn_q_norm.weight", 0, hd, true, 0, &lw.q_norm, c.qk_norm},
        {"attn_k_norm.weight", 0, hd, true, 0, &lw.k_norm, c.qk_norm},
        {"post_attention_norm.weight", 0, h, true, 0, &lw.post_attn_norm,
         c.post_norms},
        {"post_ffw_norm.weight", 0, h, true, 0, &lw.post_ffn_norm,
         c.post_norms},
        {"attn_q.bias", 0, nh * hd, true, 0, &lw.q_bias, c.qkv_bias},
        {"attn_k.bias", 0, nkv * hd, true, 0, &lw.k_bias, c.qkv_bias},
        {"attn_v.bias", 0, nkv * vd, true, 0, &lw.v_bias, c.qkv_bias},
    };
    for (const Item& it : items) {
      if (!it.wanted) continue;
      s = ld.Load(p + it.suffix, it.rows, it.cols, it.norm, it.rope_heads,
                  it.out);
      if (!s.ok()) return s;
    }
    lw.rope_inv_freq = DefaultRopeInvFreq(c, l);
  }
  s = ld.Load("output_norm.weight", 0, h, true, 0, &w->final_norm);
  if (!s.ok()) return s;
  if (c.tie_word_embeddings) {
    w->lm_head.dtype = w->embed_tokens.dtype;
    w->lm_head.shape = w->embed_tokens.shape;
    w->lm_head.data = w->embed_tokens.data;
  } else {
    s = ld.Load("output.weight", c.vocab_size, h, false, 0, &w->lm_head);
    if (!s.ok()) return s;
  }
  return w;
}

}  // namespace latentkv::model
