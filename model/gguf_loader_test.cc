#include "model/gguf_loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "model/convert.h"
#include "model/gguf/ggml_quants.h"
#include "model/gguf/gguf_writer.h"
#include "model/shard.h"
#include "model/weights.h"

namespace latentkv::model {
namespace {

const std::string kShared = LATENTKV_SHARED_DIR;

std::string TempDir() {
  std::string dir = "/tmp/latentkv-gguf-XXXXXX";
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

// stories260K converted by the llama2.c path (already tested against the
// published continuation) and loaded as f32: the reference.
const ModelWeights& Reference() {
  static const ModelWeights* w = [] {
    const std::string dir = TempDir() + "/m";
    const std::string m = kShared + "/models/stories260K";
    EXPECT_TRUE(
        ConvertLlama2c(m + "/stories260K.bin", m + "/tok512.bin", dir).ok());
    auto loaded = LoadModel(dir);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *w;
}

// llama.cpp's converter order for Q/K rows (the inverse of what the loader
// undoes), written independently of the loader: GGUF row (h*hd + 2i + half)
// = HF row (h*hd + half*hd/2 + i).
std::vector<float> PermuteForGguf(const float* hf, int64_t heads, int64_t hd,
                                  int64_t cols) {
  std::vector<float> out(static_cast<size_t>(heads * hd * cols));
  for (int64_t r = 0; r < heads * hd; ++r) {
    const int64_t h = r / hd, j = r % hd;
    const int64_t half = j % 2, i = j / 2;
    const int64_t hf_row = h * hd + half * (hd / 2) + i;
    std::memcpy(&out[r * cols], hf + hf_row * cols, cols * sizeof(float));
  }
  return out;
}

// Encodes the reference model as a llama.cpp GGUF; matrices whose width is a
// multiple of 32 in `quant` (f32 = none), the rest f32.
std::string WriteGguf(const ModelWeights& w, DType quant,
                      const std::string& path) {
  const ModelConfig& c = w.config;
  GgufWriter g;
  g.SetString("general.architecture", "llama");
  g.SetUint32("llama.block_count", c.num_layers);
  g.SetUint32("llama.context_length", c.max_position_embeddings);
  g.SetUint32("llama.embedding_length", c.hidden_size);
  g.SetUint32("llama.feed_forward_length", c.intermediate_size);
  g.SetUint32("llama.attention.head_count", c.num_heads);
  g.SetUint32("llama.attention.head_count_kv", c.num_kv_heads);
  g.SetFloat32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  g.SetFloat32("llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  g.SetUint32("llama.rope.dimension_count", c.hidden_size / c.num_heads);
  g.SetUint32("llama.vocab_size", c.vocab_size);
  g.SetUint32("tokenizer.ggml.bos_token_id", c.bos_token_id);
  g.SetUint32("tokenizer.ggml.eos_token_id", c.eos_token_id);
  auto add = [&](const std::string& name, const float* data, int64_t rows,
                 int64_t cols) {
    const bool q =
        quant != DType::kF32 && rows > 0 && cols % DTypeBlockElems(quant) == 0;
    const DType d = q ? quant : DType::kF32;
    const int64_t n = std::max<int64_t>(rows, 1) * cols;
    std::vector<uint8_t> bytes(DTypeRowBytes(d, n));
    ConvertFromF32(data, n, d, bytes.data());
    const GgmlType t = d == DType::kQ8_0   ? GgmlType::kQ8_0
                       : d == DType::kQ4_0 ? GgmlType::kQ4_0
                       : d == DType::kQ4_1 ? GgmlType::kQ4_1
                       : d == DType::kF16  ? GgmlType::kF16
                       : d == DType::kBF16 ? GgmlType::kBF16
                                           : GgmlType::kF32;
    const std::vector<int64_t> dims = rows == 0
                                          ? std::vector<int64_t>{cols}
                                          : std::vector<int64_t>{cols, rows};
    EXPECT_TRUE(g.AddTensor(name, dims, t, bytes.data(), bytes.size()).ok());
  };
  const int64_t h = c.hidden_size, hd = h / c.num_heads;
  add("token_embd.weight", w.embed_tokens.f32(), c.vocab_size, h);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", lw.attn_norm.f32(), 0, h);
    const auto q = PermuteForGguf(lw.q_proj.f32(), c.num_heads, hd, h);
    const auto k = PermuteForGguf(lw.k_proj.f32(), c.num_kv_heads, hd, h);
    add(p + "attn_q.weight", q.data(), c.num_heads * hd, h);
    add(p + "attn_k.weight", k.data(), c.num_kv_heads * hd, h);
    add(p + "attn_v.weight", lw.v_proj.f32(), c.num_kv_heads * hd, h);
    add(p + "attn_output.weight", lw.o_proj.f32(), h, c.num_heads * hd);
    add(p + "ffn_norm.weight", lw.ffn_norm.f32(), 0, h);
    add(p + "ffn_gate.weight", lw.gate_proj.f32(), c.intermediate_size, h);
    add(p + "ffn_up.weight", lw.up_proj.f32(), c.intermediate_size, h);
    add(p + "ffn_down.weight", lw.down_proj.f32(), h, c.intermediate_size);
  }
  add("output_norm.weight", w.final_norm.f32(), 0, h);
  EXPECT_TRUE(g.Write(path).ok());
  return path;
}

// `t` as f32 values.
std::vector<float> Values(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ConvertToF32(t.data, t.dtype, t.numel(), out.data());
  return out;
}

std::vector<float> RoundTrip(const Tensor& t, DType d) {
  const int64_t n = t.numel();
  std::vector<uint8_t> q(DTypeRowBytes(d, n));
  ConvertFromF32(t.f32(), n, d, q.data());
  std::vector<float> out(n);
  ConvertToF32(q.data(), d, n, out.data());
  return out;
}

TEST(GgufLoaderTest, F32GgufEqualsTheSafetensorsModelExactly) {
  const ModelWeights& ref = Reference();
  const std::string path = WriteGguf(ref, DType::kF32, TempDir() + "/m.gguf");
  auto w = LoadModel(path);
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = (*w)->config;
  EXPECT_EQ(c.num_layers, ref.config.num_layers);
  EXPECT_EQ(c.num_kv_heads, ref.config.num_kv_heads);
  EXPECT_EQ(c.vocab_size, ref.config.vocab_size);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.qk_head_dim, ref.config.qk_head_dim);
  EXPECT_DOUBLE_EQ(c.rope_theta, ref.config.rope_theta);
  EXPECT_EQ(Values((*w)->embed_tokens), Values(ref.embed_tokens));
  EXPECT_EQ((*w)->lm_head.data, (*w)->embed_tokens.data);  // tied: a view
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& a = (*w)->layers[l];
    const LayerWeights& b = ref.layers[l];
    EXPECT_EQ(Values(a.q_proj), Values(b.q_proj)) << l;
    EXPECT_EQ(Values(a.k_proj), Values(b.k_proj)) << l;
    EXPECT_EQ(Values(a.v_proj), Values(b.v_proj)) << l;
    EXPECT_EQ(Values(a.o_proj), Values(b.o_proj)) << l;
    EXPECT_EQ(Values(a.down_proj), Values(b.down_proj)) << l;
    EXPECT_EQ(Values(a.attn_norm), Values(b.attn_norm)) << l;
    EXPECT_EQ(a.rope_inv_freq, b.rope_inv_freq) << l;
  }
  // A directory holding only the .gguf names it too.
  auto by_dir = LoadModel(std::filesystem::path(path).parent_path());
  ASSERT_TRUE(by_dir.ok()) << by_dir.status();
  EXPECT_EQ((*by_dir)->config.hidden_size, ref.config.hidden_size);
}

// Quantized rows stay quantized and are un-permuted on their bytes: each
// loaded matrix equals quantize(reference) row for row.
TEST(GgufLoaderTest, QuantizedTensorsStayQuantizedAndUnpermuted) {
  const ModelWeights& ref = Reference();
  for (DType d : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    SCOPED_TRACE(std::string(DTypeName(d)));
    const std::string path = WriteGguf(ref, d, TempDir() + "/m.gguf");
    auto w = LoadModel(path);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int l = 0; l < ref.config.num_layers; ++l) {
      const LayerWeights& a = (*w)->layers[l];
      const LayerWeights& b = ref.layers[l];
      EXPECT_EQ(a.q_proj.dtype, d);
      EXPECT_EQ(a.k_proj.dtype, d);
      EXPECT_EQ(Values(a.q_proj), RoundTrip(b.q_proj, d)) << l;
      EXPECT_EQ(Values(a.k_proj), RoundTrip(b.k_proj, d)) << l;
      EXPECT_EQ(Values(a.gate_proj), RoundTrip(b.gate_proj, d)) << l;
      // 172 columns: not whole blocks, stored f32 (mixed types as in real
      // files).
      EXPECT_EQ(a.down_proj.dtype, DType::kF32);
      EXPECT_EQ(Values(a.down_proj), Values(b.down_proj)) << l;
    }
    // Dequantized at load on request.
    LoadOptions f32;
    f32.matrix_dtype = DType::kF32;
    auto wf = LoadModel(path, f32);
    ASSERT_TRUE(wf.ok()) << wf.status();
    EXPECT_EQ(wf->get()->layers[0].q_proj.dtype, DType::kF32);
    EXPECT_EQ(Values(wf->get()->layers[0].q_proj),
              RoundTrip(ref.layers[0].q_proj, d));
  }
}

// f16 and bf16 tensors: bf16 stays bf16, f16 becomes f32 (no fast f16
// kernels), both with exactly the stored values.
TEST(GgufLoaderTest, HalfPrecisionTensors) {
  const ModelWeights& ref = Reference();
  for (DType d : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(d)));
    const std::string path = WriteGguf(ref, d, TempDir() + "/m.gguf");
    auto w = LoadModel(path);
    ASSERT_TRUE(w.ok()) << w.status();
    const LayerWeights& a = (*w)->layers[1];
    const LayerWeights& b = ref.layers[1];
    EXPECT_EQ(a.q_proj.dtype, d == DType::kF16 ? DType::kF32 : DType::kBF16);
    EXPECT_EQ(Values(a.q_proj), RoundTrip(b.q_proj, d));
    EXPECT_EQ(Values(a.down_proj), RoundTrip(b.down_proj, d));
    EXPECT_EQ(Values((*w)->embed_tokens), RoundTrip(ref.embed_tokens, d));
    EXPECT_EQ(a.attn_norm.dtype, DType::kF32);
  }
}

// Tensor-parallel shards of quantized matrices: column slices are whole
// blocks (values equal the full matrix's columns), others are refused.
TEST(GgufLoaderTest, ShardsQuantizedMatricesInWholeBlocks) {
  const ModelWeights& ref = Reference();
  auto w = LoadModel(WriteGguf(ref, DType::kQ8_0, TempDir() + "/m.gguf"));
  ASSERT_TRUE(w.ok()) << w.status();
  std::shared_ptr<const ModelWeights> full(std::move(*w));
  ASSERT_EQ(full->layers[0].o_proj.dtype, DType::kQ8_0);
  // TP 2: o_proj [64, 64] -> [64, 32] per rank, one q8_0 block per row.
  auto shard = ShardForTensorParallel(full, 1, 2);
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::vector<float> all = Values(full->layers[0].o_proj);
  const std::vector<float> mine = Values((*shard)->layers[0].o_proj);
  ASSERT_EQ(mine.size(), all.size() / 2);
  for (int r = 0; r < 64; ++r) {
    for (int c = 0; c < 32; ++c) {
      ASSERT_EQ(mine[r * 32 + c], all[r * 64 + 32 + c]) << r << "," << c;
    }
  }
  EXPECT_EQ(Values((*shard)->layers[0].q_proj).size(), 32u * 64u);
  // TP 4: 16-column slices would split q8_0 blocks.
  auto bad = ShardForTensorParallel(full, 0, 4);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("o_proj"), std::string::npos)
      << bad.status();
}

// A one-layer Llama GGUF of width h (256: k-quant super-blocks) whose
// matrices are seeded random blocks of ggml type `type` (f16 scales kept
// finite and small), norms f32 ones. Returns each matrix's stored bytes by
// name.
std::map<std::string, std::vector<uint8_t>> WriteQuantGguf(
    uint32_t type, const std::string& path, int64_t h = 256) {
  const auto layout = GgmlQuantLayoutOf(type);
  EXPECT_TRUE(layout.has_value());
  const int64_t ffn = 2 * h, vocab = 256, heads = 2, kv = 1;
  GgufWriter g;
  g.SetString("general.architecture", "llama");
  g.SetUint32("llama.block_count", 1);
  g.SetUint32("llama.context_length", 64);
  g.SetUint32("llama.embedding_length", h);
  g.SetUint32("llama.feed_forward_length", ffn);
  g.SetUint32("llama.attention.head_count", heads);
  g.SetUint32("llama.attention.head_count_kv", kv);
  g.SetFloat32("llama.rope.freq_base", 10000.0f);
  g.SetFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  g.SetUint32("llama.rope.dimension_count", h / heads);
  g.SetUint32("llama.vocab_size", vocab);
  g.SetUint32("tokenizer.ggml.bos_token_id", 1);
  g.SetUint32("tokenizer.ggml.eos_token_id", 2);
  std::map<std::string, std::vector<uint8_t>> stored;
  std::mt19937 rng(type);
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const int64_t blocks = rows * cols / layout->block_elems;
    std::vector<uint8_t> bytes(blocks * layout->block_bytes);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    // Every 2-byte field that may be an f16 scale: exponent bits cleared
    // above 0x3 (|x| < 2^-12 * 16): finite. The layouts put them at the
    // block's start or end; clearing both ends covers each.
    for (int64_t i = 0; i < blocks; ++i) {
      uint8_t* blk = bytes.data() + i * layout->block_bytes;
      for (uint8_t* p : {blk + 1, blk + 3, blk + layout->block_bytes - 1,
                         blk + layout->block_bytes - 3}) {
        *p &= 0x8F;
      }
    }
    EXPECT_TRUE(g.AddTensor(name, {cols, rows}, static_cast<GgmlType>(type),
                            bytes.data(), bytes.size())
                    .ok());
    stored[name] = bytes;
  };
  const std::vector<float> ones(h, 1.0f);
  auto norm = [&](const std::string& name) {
    EXPECT_TRUE(g.AddTensor(name, {h}, GgmlType::kF32, ones.data(),
                            ones.size() * sizeof(float))
                    .ok());
  };
  matrix("token_embd.weight", vocab, h);
  norm("blk.0.attn_norm.weight");
  matrix("blk.0.attn_q.weight", h, h);
  matrix("blk.0.attn_k.weight", kv * h / heads, h);
  matrix("blk.0.attn_v.weight", kv * h / heads, h);
  matrix("blk.0.attn_output.weight", h, h);
  norm("blk.0.ffn_norm.weight");
  matrix("blk.0.ffn_gate.weight", ffn, h);
  matrix("blk.0.ffn_up.weight", ffn, h);
  matrix("blk.0.ffn_down.weight", h, ffn);
  norm("output_norm.weight");
  EXPECT_TRUE(g.Write(path).ok());
  return stored;
}

std::vector<float> Dequantized(uint32_t type, const std::vector<uint8_t>& b,
                               int64_t n) {
  std::vector<float> out(n);
  DequantizeGgml(type, b.data(), n, out.data());
  return out;
}

// Q5_0/Q5_1 and k-quant tensors load as stored (views of the file's
// blocks, which decode to the values ggml_quants_test checks against
// gguf-py), Q/K rows unpermuted like any GGUF's; --weights-dtype requantizes
// them.
TEST(GgufLoaderTest, KQuantTensorsLoadAsStored) {
  for (GgmlQuant q :
       {GgmlQuant::kQ5_0, GgmlQuant::kQ5_1, GgmlQuant::kQ2_K, GgmlQuant::kQ3_K,
        GgmlQuant::kQ4_K, GgmlQuant::kQ5_K, GgmlQuant::kQ6_K}) {
    const uint32_t type = static_cast<uint32_t>(q);
    SCOPED_TRACE(GgmlTypeName(type));
    const std::string path = TempDir() + "/k.gguf";
    const auto stored = WriteQuantGguf(type, path);
    auto w = LoadModel(path);
    ASSERT_TRUE(w.ok()) << w.status();
    const LayerWeights& l = (*w)->layers[0];
    const DType dtype = GgmlQuantLayoutOf(type)->dtype;
    EXPECT_EQ(l.gate_proj.dtype, dtype);
    EXPECT_EQ((*w)->embed_tokens.dtype, dtype);
    EXPECT_EQ(l.q_proj.dtype, dtype);
    EXPECT_EQ(l.attn_norm.dtype, DType::kF32);
    const std::vector<uint8_t>& gate = stored.at("blk.0.ffn_gate.weight");
    EXPECT_EQ(std::memcmp(l.gate_proj.data, gate.data(), gate.size()), 0);
    EXPECT_EQ(Values(l.gate_proj),
              Dequantized(type, stored.at("blk.0.ffn_gate.weight"), 512 * 256));
    EXPECT_EQ(Values((*w)->embed_tokens),
              Dequantized(type, stored.at("token_embd.weight"), 256 * 256));
    // GGUF row h*hd + 2i + half is HF row h*hd + half*hd/2 + i (hd 128).
    const std::vector<float> gq =
        Dequantized(type, stored.at("blk.0.attn_q.weight"), 256 * 256);
    std::vector<float> want(gq.size());
    for (int64_t r = 0; r < 256; ++r) {
      const int64_t hh = r / 128, j = r % 128;
      const int64_t hf = hh * 128 + (j % 2) * 64 + j / 2;
      std::memcpy(&want[hf * 256], &gq[r * 256], 256 * sizeof(float));
    }
    EXPECT_EQ(Values(l.q_proj), want);
    LoadOptions q8;
    q8.matrix_dtype = DType::kQ8_0;
    auto w8 = LoadModel(path, q8);
    ASSERT_TRUE(w8.ok()) << w8.status();
    EXPECT_EQ(w8->get()->layers[0].up_proj.dtype, DType::kQ8_0);
  }
}

// k-quant rows must be whole 256-element super-blocks: a width of 128 (the
// tensor itself whole blocks) is refused, naming the tensor.
TEST(GgufLoaderTest, KQuantRowsMustBeWholeSuperBlocks) {
  const std::string path = TempDir() + "/narrow.gguf";
  WriteQuantGguf(static_cast<uint32_t>(GgmlQuant::kQ4_K), path, 128);
  auto w = LoadModel(path);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find(
                "token_embd.weight: rows of 128 are not whole q4_K blocks of "
                "256"),
            std::string::npos)
      << w.status();
}

TEST(GgufLoaderTest, ErrorsNameWhatIsWrong) {
  const ModelWeights& ref = Reference();
  const std::string dir = TempDir();
  {
    GgufWriter g;
    g.SetString("general.architecture", "phi3");
    ASSERT_TRUE(g.Write(dir + "/a.gguf").ok());
    auto w = LoadModel(dir + "/a.gguf");
    EXPECT_EQ(w.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(w.status().message().find("phi3"), std::string::npos);
  }
  {
    GgufWriter g;
    g.SetString("general.architecture", "llama");
    g.SetUint32("llama.block_count", 5);
    ASSERT_TRUE(g.Write(dir + "/b.gguf").ok());
    auto w = LoadModel(dir + "/b.gguf");
    EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound) << w.status();
    EXPECT_NE(w.status().message().find("embedding_length"), std::string::npos);
  }
  // Two .gguf files in one directory: ambiguous, named.
  auto two = FindGgufFile(dir);
  EXPECT_EQ(two.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(two.status().message().find("several"), std::string::npos);

  // A tensor with the wrong dims is named.
  const std::string good = WriteGguf(ref, DType::kF32, TempDir() + "/m.gguf");
  auto f = GgufFile::Open(good);
  ASSERT_TRUE(f.ok());
  GgufWriter g;
  for (const std::string& key : (*f)->keys()) {
    if (key == "llama.feed_forward_length") {
      g.SetUint32(key, ref.config.intermediate_size + 1);
    } else if ((*f)->GetInt(key).ok()) {
      g.SetUint32(key, static_cast<uint32_t>(*(*f)->GetInt(key)));
    } else if ((*f)->GetFloat(key).ok()) {
      g.SetFloat32(key, static_cast<float>(*(*f)->GetFloat(key)));
    } else {
      g.SetString(key, *(*f)->GetString(key));
    }
  }
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    ASSERT_TRUE(g.AddTensor(t.name, t.dims, static_cast<GgmlType>(t.type),
                            t.data, t.nbytes)
                    .ok());
  }
  const std::string bad = TempDir() + "/bad.gguf";
  ASSERT_TRUE(g.Write(bad).ok());
  auto w = LoadModel(bad);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("blk.0.ffn_gate.weight"),
            std::string::npos)
      << w.status();
}

// rope.dimension_count below the head dim: partial rotary on rotate-half
// architectures (Qwen's rows are stored as HF has them); refused on Llama,
// whose rows llama.cpp permutes over the whole head for interleaved RoPE.
TEST(GgufLoaderTest, PartialRotaryOnRotateHalfArchitecturesOnly) {
  const std::string dir = TempDir();
  auto config_of = [&](const std::string& arch, uint32_t rot) {
    GgufWriter g;
    const std::string a = arch + ".";
    g.SetString("general.architecture", arch);
    g.SetUint32(a + "block_count", 2);
    g.SetUint32(a + "context_length", 64);
    g.SetUint32(a + "embedding_length", 32);
    g.SetUint32(a + "feed_forward_length", 48);
    g.SetUint32(a + "attention.head_count", 4);
    g.SetUint32(a + "attention.head_count_kv", 2);
    g.SetFloat32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
    g.SetUint32(a + "rope.dimension_count", rot);
    g.SetUint32(a + "vocab_size", 40);
    const std::string path = dir + "/" + arch + std::to_string(rot) + ".gguf";
    EXPECT_TRUE(g.Write(path).ok());
    return LoadModelConfig(path);
  };
  auto qwen = config_of("qwen2", 4);
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->rope_dims, (std::vector<int>{4, 4}));
  auto full = config_of("qwen2", 8);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->rope_dims.empty());
  auto llama = config_of("llama", 4);
  EXPECT_EQ(llama.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(llama.status().message().find("rope.dimension_count 4"),
            std::string::npos)
      << llama.status();
  auto odd = config_of("qwen2", 3);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kUnimplemented);
}

// The shared SmolLM2 GGUF: the config its README states, quantized matrices
// kept as stored.
TEST(GgufLoaderTest, LoadsSmolLm2AsStored) {
  const std::string path = kShared +
                           "/models/smollm2-135m-instruct/"
                           "SmolLM2-135M-Instruct.Q4_1.gguf";
  auto w = LoadModel(path);
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = (*w)->config;
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim(), 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  // <|endoftext|> (id 0, a control token) also ends generation.
  EXPECT_EQ(c.extra_eos_token_ids, (std::vector<int>{0}));
  EXPECT_EQ((*w)->embed_tokens.dtype, DType::kQ8_0);
  EXPECT_EQ((*w)->layers[0].q_proj.dtype, DType::kQ4_1);
  EXPECT_EQ((*w)->layers[29].down_proj.dtype, DType::kQ4_1);
  EXPECT_EQ((*w)->layers[0].attn_norm.dtype, DType::kF32);
}

}  // namespace
}  // namespace latentkv::model
