#include "model/convert.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/safetensors.h"

namespace latentkv::model {
namespace {

absl::Status MakeDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot create ", path));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<char>> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const std::streamsize size = in.tellg();
  if (size < 0) return absl::DataLossError(absl::StrCat("cannot read ", path));
  std::vector<char> buf(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(buf.data(), size)) {
    return absl::DataLossError(absl::StrCat("cannot read ", path));
  }
  return buf;
}

// Permutes the rows of a [heads * hs, cols] matrix from llama2.c's interleaved
// RoPE pairs (2i, 2i+1) to HF's rotate-half pairs (i, i + hs/2):
// new row (h*hs + half*hs/2 + i) = old row (h*hs + 2i + half).
std::vector<float> PermuteRope(const float* src, int heads, int hs,
                               int64_t cols) {
  std::vector<float> dst(static_cast<size_t>(heads) * hs * cols);
  for (int h = 0; h < heads; ++h) {
    for (int half = 0; half < 2; ++half) {
      for (int i = 0; i < hs / 2; ++i) {
        const int64_t nr = static_cast<int64_t>(h) * hs + half * (hs / 2) + i;
        const int64_t orow = static_cast<int64_t>(h) * hs + 2 * i + half;
        std::memcpy(&dst[nr * cols], src + orow * cols, cols * sizeof(float));
      }
    }
  }
  return dst;
}

std::vector<uint8_t> ByteTokenizer(int vocab_size) {
  std::vector<std::string> tokens;
  tokens.reserve(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    if (i == 0) {
      tokens.push_back("<unk>");
    } else if (i == 1) {
      tokens.push_back("\n<s>\n");
    } else if (i == 2) {
      tokens.push_back("\n</s>\n");
    } else if (i < 259) {
      tokens.push_back(absl::StrFormat("<0x%02X>", i - 3));
    } else {
      tokens.push_back(absl::StrCat("<extra_", i, ">"));
    }
  }
  int32_t max_len = 0;
  for (const auto& t : tokens) {
    max_len = std::max<int32_t>(max_len, static_cast<int32_t>(t.size()));
  }
  std::vector<uint8_t> out;
  auto put = [&out](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  put(&max_len, 4);
  for (const auto& t : tokens) {
    const float score = 0.0f;
    const int32_t len = static_cast<int32_t>(t.size());
    put(&score, 4);
    put(&len, 4);
    put(t.data(), t.size());
  }
  return out;
}

}  // namespace

absl::Status ConvertLlama2c(const std::string& checkpoint_path,
                            const std::string& tokenizer_path,
                            const std::string& out_dir, DType dtype) {
  auto file = ReadFile(checkpoint_path);
  if (!file.ok()) return file.status();
  const std::vector<char>& bytes = *file;
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint_path, ": ", what));
  };
  if (bytes.size() < 28) return bad("too short for the llama2.c header");
  int32_t hdr[7];
  std::memcpy(hdr, bytes.data(), sizeof(hdr));
  const int dim = hdr[0], hidden = hdr[1], layers = hdr[2], heads = hdr[3],
            kv_heads = hdr[4], seq_len = hdr[6];
  const bool tied = hdr[5] > 0;
  const int64_t vocab64 = hdr[5] > 0 ? hdr[5] : -static_cast<int64_t>(hdr[5]);
  const int vocab = vocab64 > INT32_MAX ? 0 : static_cast<int>(vocab64);
  if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 ||
      vocab <= 0 || seq_len <= 0) {
    return bad(absl::StrFormat(
        "bad header (dim=%d hidden_dim=%d n_layers=%d n_heads=%d "
        "n_kv_heads=%d vocab_size=%d seq_len=%d)",
        hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6]));
  }
  if (dim % heads != 0 || heads % kv_heads != 0 || (dim / heads) % 2 != 0) {
    return bad(
        absl::StrFormat("inconsistent header: dim=%d n_heads=%d n_kv_heads=%d",
                        dim, heads, kv_heads));
  }
  const int hs = dim / heads;
  const int64_t D = dim, H = hidden, L = layers, V = vocab;
  const int64_t kvd = static_cast<int64_t>(kv_heads) * hs;
  // Float counts in file order (all products fit in int64: each factor is
  // below 2^31 and at most three factors with one bounded by 2^31).
  const __int128 floats =
      static_cast<__int128>(V) * D + L * D + static_cast<__int128>(L) * D * D +
      static_cast<__int128>(L) * kvd * D * 2 +
      static_cast<__int128>(L) * D * D + L * D +
      static_cast<__int128>(L) * H * D * 3 + D +
      static_cast<__int128>(seq_len) * hs + (tied ? 0 : V * D);
  const __int128 expected = 28 + floats * 4;
  if (static_cast<__int128>(bytes.size()) != expected) {
    return bad(absl::StrCat(
        "file has ", bytes.size(), " bytes, the header implies ",
        static_cast<int64_t>(expected),
        static_cast<__int128>(bytes.size()) < expected ? " (truncated)"
                                                       : " (trailing data)"));
  }
  std::vector<float> all(static_cast<size_t>(floats));
  std::memcpy(all.data(), bytes.data() + 28, all.size() * sizeof(float));
  const float* p = all.data();
  auto take = [&p](int64_t n) {
    const float* r = p;
    p += n;
    return r;
  };
  const float* emb = take(V * D);
  const float* rms_att = take(L * D);
  const float* wq = take(L * D * D);
  const float* wk = take(L * kvd * D);
  const float* wv = take(L * kvd * D);
  const float* wo = take(L * D * D);
  const float* rms_ffn = take(L * D);
  const float* w1 = take(L * H * D);
  const float* w2 = take(L * D * H);
  const float* w3 = take(L * H * D);
  const float* rms_final = take(D);
  take(static_cast<int64_t>(seq_len) * hs);  // legacy RoPE tables
  const float* wcls = tied ? nullptr : take(V * D);

  ModelConfig c = ModelConfig::Llama(dim, hidden, layers, heads, kv_heads,
                                     vocab, seq_len, 10000.0);
  c.tie_word_embeddings = tied;
  c.bos_token_id = std::min(1, vocab - 1);
  c.eos_token_id = std::min(2, vocab - 1);
  absl::Status s = c.Validate();
  if (!s.ok()) return bad(s.ToString());

  auto tok = ReadFile(tokenizer_path);
  if (!tok.ok()) return tok.status();
  if (tok->size() < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_path, ": too short for a llama2.c tokenizer"));
  }

  s = MakeDir(out_dir);
  if (!s.ok()) return s;
  const std::string config_json = c.ToJson();
  s = WriteFile(out_dir + "/config.json", config_json.data(),
                config_json.size());
  if (!s.ok()) return s;
  s = WriteFile(out_dir + "/tokenizer.bin", tok->data(), tok->size());
  if (!s.ok()) return s;

  SafetensorsStreamWriter w;
  w.SetMetadata("format", "pt");
  w.SetMetadata("source", "llama2.c");
  w.Declare("model.embed_tokens.weight", dtype, {V, D});
  w.Declare("model.norm.weight", dtype, {D});
  if (!tied) w.Declare("lm_head.weight", dtype, {V, D});
  for (int l = 0; l < layers; ++l) {
    const std::string pre = absl::StrCat("model.layers.", l, ".");
    w.Declare(pre + "input_layernorm.weight", dtype, {D});
    w.Declare(pre + "post_attention_layernorm.weight", dtype, {D});
    w.Declare(pre + "self_attn.q_proj.weight", dtype, {D, D});
    w.Declare(pre + "self_attn.k_proj.weight", dtype, {kvd, D});
    w.Declare(pre + "self_attn.v_proj.weight", dtype, {kvd, D});
    w.Declare(pre + "self_attn.o_proj.weight", dtype, {D, D});
    w.Declare(pre + "mlp.gate_proj.weight", dtype, {H, D});
    w.Declare(pre + "mlp.down_proj.weight", dtype, {D, H});
    w.Declare(pre + "mlp.up_proj.weight", dtype, {H, D});
  }
  const std::string st_path = out_dir + "/model.safetensors";
  s = w.Open(st_path);
  if (s.ok()) s = w.WriteF32("model.embed_tokens.weight", emb);
  if (s.ok()) s = w.WriteF32("model.norm.weight", rms_final);
  if (s.ok() && !tied) s = w.WriteF32("lm_head.weight", wcls);
  for (int l = 0; l < layers && s.ok(); ++l) {
    const std::string pre = absl::StrCat("model.layers.", l, ".");
    const std::vector<float> q = PermuteRope(wq + l * D * D, heads, hs, D);
    const std::vector<float> k = PermuteRope(wk + l * kvd * D, kv_heads, hs, D);
    if (s.ok()) s = w.WriteF32(pre + "input_layernorm.weight", rms_att + l * D);
    if (s.ok()) {
      s = w.WriteF32(pre + "post_attention_layernorm.weight", rms_ffn + l * D);
    }
    if (s.ok()) s = w.WriteF32(pre + "self_attn.q_proj.weight", q.data());
    if (s.ok()) s = w.WriteF32(pre + "self_attn.k_proj.weight", k.data());
    if (s.ok()) {
      s = w.WriteF32(pre + "self_attn.v_proj.weight", wv + l * kvd * D);
    }
    if (s.ok()) s = w.WriteF32(pre + "self_attn.o_proj.weight", wo + l * D * D);
    if (s.ok()) s = w.WriteF32(pre + "mlp.gate_proj.weight", w1 + l * H * D);
    if (s.ok()) s = w.WriteF32(pre + "mlp.down_proj.weight", w2 + l * D * H);
    if (s.ok()) s = w.WriteF32(pre + "mlp.up_proj.weight", w3 + l * H * D);
  }
  if (s.ok()) s = w.Finish();
  return s;
}

absl::Status WriteSyntheticModel(const ModelConfig& config,
                                 const std::string& out_dir, DType dtype,
                                 uint64_t seed) {
  absl::Status s = config.Validate();
  if (!s.ok()) return s;
  s = MakeDir(out_dir);
  if (!s.ok()) return s;
  const std::string config_json = config.ToJson();
  s = WriteFile(out_dir + "/config.json", config_json.data(),
                config_json.size());
  if (!s.ok()) return s;
  const std::vector<uint8_t> tok = ByteTokenizer(config.vocab_size);
  s = WriteFile(out_dir + "/tokenizer.bin", tok.data(), tok.size());
  if (!s.ok()) return s;

  struct Spec {
    std::string name;
    std::vector<int64_t> shape;
    bool norm;
  };
  const int64_t h = config.hidden_size, inter = config.intermediate_size;
  std::vector<Spec> specs;
  specs.push_back({"model.embed_tokens.weight", {config.vocab_size, h}, false});
  for (int l = 0; l < config.num_layers; ++l) {
    const std::string pre = absl::StrCat("model.layers.", l, ".");
    const int64_t dqk = config.qk_head_dim[l], dvo = config.vo_head_dim[l];
    const int64_t dp = config.qk_proj_dim(l);  // q/k heads as projected
    specs.push_back({pre + "input_layernorm.weight", {h}, true});
    specs.push_back(
        {pre + "self_attn.q_proj.weight", {config.num_heads * dp, h}, false});
    specs.push_back({pre + "self_attn.k_proj.weight",
                     {config.num_kv_heads * dp, h},
                     false});
    if (config.qk_latent_maps()) {
      specs.push_back({pre + "self_attn.q_latent.weight",
                       {config.num_heads * dqk, dp},
                       false});
      specs.push_back({pre + "self_attn.k_latent.weight",
                       {config.num_kv_heads * dqk, dp},
                       false});
    }
    specs.push_back({pre + "self_attn.v_proj.weight",
                     {config.num_kv_heads * dvo, h},
                     false});
    specs.push_back(
        {pre + "self_attn.o_proj.weight", {h, config.num_heads * dvo}, false});
    specs.push_back({pre + "post_attention_layernorm.weight", {h}, true});
    specs.push_back({pre + "mlp.gate_proj.weight", {inter, h}, false});
    specs.push_back({pre + "mlp.up_proj.weight", {inter, h}, false});
    specs.push_back({pre + "mlp.down_proj.weight", {h, inter}, false});
    if (config.qk_norm) {
      specs.push_back({pre + "self_attn.q_norm.weight", {dp}, true});
      specs.push_back({pre + "self_attn.k_norm.weight", {dp}, true});
    }
    if (config.qkv_bias) {
      // Biases are random like the matrices (norm = false).
      specs.push_back(
          {pre + "self_attn.q_proj.bias", {config.num_heads * dp}, false});
      specs.push_back(
          {pre + "self_attn.k_proj.bias", {config.num_kv_heads * dp}, false});
      specs.push_back(
          {pre + "self_attn.v_proj.bias", {config.num_kv_heads * dvo}, false});
    }
    if (config.post_norms) {
      specs.push_back({pre + "post_self_attn_layernorm.weight", {h}, true});
      specs.push_back({pre + "post_feedforward_layernorm.weight", {h}, true});
    }
  }
  specs.push_back({"model.norm.weight", {h}, true});
  if (!config.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", {config.vocab_size, h}, false});
  }

  SafetensorsStreamWriter w;
  w.SetMetadata("format", "pt");
  w.SetMetadata("source", "synthetic");
  w.SetMetadata("seed", absl::StrCat(seed));
  for (const Spec& sp : specs) w.Declare(sp.name, dtype, sp.shape);
  s = w.Open(out_dir + "/model.safetensors");
  if (!s.ok()) return s;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> buf;
  for (const Spec& sp : specs) {
    int64_t n = 1;
    for (int64_t d : sp.shape) n *= d;
    buf.resize(static_cast<size_t>(n));
    if (sp.norm) {
      std::fill(buf.begin(), buf.end(), 1.0f);
    } else {
      for (float& x : buf) x = normal(rng);
    }
    s = w.WriteF32(sp.name, buf.data());
    if (!s.ok()) return s;
  }
  return w.Finish();
}

}  // namespace latentkv::model
