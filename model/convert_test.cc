// Conversion tests. The central one checks that converting the real
// stories260K llama2.c checkpoint preserves the model's function: an
// independent float64 forward of the original .bin (llama2.c's interleaved
// RoPE) and a float64 forward of the converted directory (loaded through
// LoadModel, HF rotate-half RoPE) give the same logits.
#include "model/convert.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace latentkv::model {
namespace {

using ::testing::HasSubstr;

const std::string kCheckpoint =
    std::string(LATENTKV_SHARED_DIR) + "/models/stories260K/stories260K.bin";
const std::string kTokenizer =
    std::string(LATENTKV_SHARED_DIR) + "/models/stories260K/tok512.bin";

// Any ids < 512; starts with BOS.
const std::vector<int> kTokens = {1,   403, 407, 261, 378, 500, 266, 289,
                                  33,  444, 270, 5,   300, 511, 2,   97,
                                  260, 410, 359, 403, 271, 13};

std::string NewDir(const std::string& name) {
  const std::string dir = testing::TempDir() + "/convert_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

using Vec = std::vector<double>;

// y = W x with W row-major [rows, cols] in f32, accumulated in double.
Vec MatVec(const float* w, int64_t rows, int64_t cols, const Vec& x) {
  Vec y(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0.0;
    const float* row = w + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      acc += static_cast<double>(row[c]) * x[c];
    y[r] = acc;
  }
  return y;
}

Vec RmsNorm(const Vec& x, const float* w, double eps) {
  double ss = 0.0;
  for (double v : x) ss += v * v;
  const double scale = 1.0 / std::sqrt(ss / x.size() + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = w[i] * (x[i] * scale);
  return y;
}

double Silu(double x) { return x / (1.0 + std::exp(-x)); }

// Causal attention for one query head against cached keys/values.
Vec Attend(const Vec& q, const std::vector<Vec>& keys,
           const std::vector<Vec>& values, int kv_head, int dqk, int dvo) {
  std::vector<double> scores(keys.size());
  double mx = -INFINITY;
  for (size_t t = 0; t < keys.size(); ++t) {
    double s = 0.0;
    for (int i = 0; i < dqk; ++i) s += q[i] * keys[t][kv_head * dqk + i];
    scores[t] = s / std::sqrt(static_cast<double>(dqk));
    mx = std::max(mx, scores[t]);
  }
  double z = 0.0;
  for (double& s : scores) z += (s = std::exp(s - mx));
  Vec out(dvo, 0.0);
  for (size_t t = 0; t < keys.size(); ++t) {
    for (int i = 0; i < dvo; ++i) {
      out[i] += scores[t] / z * values[t][kv_head * dvo + i];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Reference 1: the llama2.c checkpoint, read directly, run as llama2.c runs it
// (interleaved RoPE pairs (2i, 2i+1)), in double. RoPE frequencies are
// rounded to f32 as llama2.c holds them (the converted model's tables are f32
// too), so both sides rotate by exactly the same angles.
std::vector<Vec> Llama2cForward(const std::string& path,
                                const std::vector<int>& tokens) {
  const std::string raw = ReadAll(path);
  int32_t hdr[7];
  std::memcpy(hdr, raw.data(), 28);
  const int D = hdr[0], H = hdr[1], L = hdr[2], NH = hdr[3], NKV = hdr[4];
  const int V = std::abs(hdr[5]);
  const int seq = hdr[6];
  const int hs = D / NH, kvd = NKV * hs;
  std::vector<float> f((raw.size() - 28) / 4);
  std::memcpy(f.data(), raw.data() + 28, f.size() * 4);
  const float* p = f.data();
  auto take = [&p](int64_t n) {
    const float* r = p;
    p += n;
    return r;
  };
  const float* emb = take(int64_t{V} * D);
  const float* rms_att = take(int64_t{L} * D);
  const float* wq = take(int64_t{L} * D * D);
  const float* wk = take(int64_t{L} * kvd * D);
  const float* wv = take(int64_t{L} * kvd * D);
  const float* wo = take(int64_t{L} * D * D);
  const float* rms_ffn = take(int64_t{L} * D);
  const float* w1 = take(int64_t{L} * H * D);
  const float* w2 = take(int64_t{L} * D * H);
  const float* w3 = take(int64_t{L} * H * D);
  const float* rms_final = take(D);
  take(int64_t{seq} * hs);
  const float* wcls = hdr[5] > 0 ? emb : take(int64_t{V} * D);

  std::vector<std::vector<Vec>> kcache(L), vcache(L);
  std::vector<Vec> logits;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    Vec x(emb + int64_t{tokens[pos]} * D, emb + int64_t{tokens[pos] + 1} * D);
    for (int l = 0; l < L; ++l) {
      Vec xb = RmsNorm(x, rms_att + l * D, 1e-5);
      Vec q = MatVec(wq + int64_t{l} * D * D, D, D, xb);
      Vec k = MatVec(wk + int64_t{l} * kvd * D, kvd, D, xb);
      Vec v = MatVec(wv + int64_t{l} * kvd * D, kvd, D, xb);
      for (int i = 0; i < D; i += 2) {
        const int head_dim = i % hs;
        const double freq = static_cast<float>(
            std::pow(10000.0, -static_cast<double>(head_dim) / hs));
        const double a = static_cast<double>(pos) * freq;
        const double c = std::cos(a), s = std::sin(a);
        for (Vec* vec : {&q, &k}) {
          if (vec == &k && i >= kvd) continue;
          const double v0 = (*vec)[i], v1 = (*vec)[i + 1];
          (*vec)[i] = v0 * c - v1 * s;
          (*vec)[i + 1] = v0 * s + v1 * c;
        }
      }
      kcache[l].push_back(k);
      vcache[l].push_back(v);
      Vec att(D);
      for (int h = 0; h < NH; ++h) {
        Vec qh(q.begin() + h * hs, q.begin() + (h + 1) * hs);
        Vec o = Attend(qh, kcache[l], vcache[l], h / (NH / NKV), hs, hs);
        std::copy(o.begin(), o.end(), att.begin() + h * hs);
      }
      Vec out = MatVec(wo + int64_t{l} * D * D, D, D, att);
      for (int i = 0; i < D; ++i) x[i] += out[i];
      xb = RmsNorm(x, rms_ffn + l * D, 1e-5);
      Vec h1 = MatVec(w1 + int64_t{l} * H * D, H, D, xb);
      Vec h3 = MatVec(w3 + int64_t{l} * H * D, H, D, xb);
      for (int i = 0; i < H; ++i) h1[i] = Silu(h1[i]) * h3[i];
      Vec down = MatVec(w2 + int64_t{l} * D * H, D, H, h1);
      for (int i = 0; i < D; ++i) x[i] += down[i];
    }
    x = RmsNorm(x, rms_final, 1e-5);
    logits.push_back(MatVec(wcls, V, D, x));
  }
  return logits;
}

// ---------------------------------------------------------------------------
// Reference 2: a model directory through LoadModel (f32 matrices), HF layout:
// rotate-half RoPE with the loaded tables, per-layer head dims, GQA.
std::vector<Vec> HfForward(const ModelWeights& w,
                           const std::vector<int>& tokens) {
  const ModelConfig& c = w.config;
  const int D = c.hidden_size, H = c.intermediate_size;
  std::vector<std::vector<Vec>> kcache(c.num_layers), vcache(c.num_layers);
  std::vector<Vec> logits;
  const int group = c.num_heads / c.num_kv_heads;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    const float* e = w.embed_tokens.f32() + int64_t{tokens[pos]} * D;
    Vec x(e, e + D);
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerWeights& lw = w.layers[l];
      const int dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
      Vec xb = RmsNorm(x, lw.attn_norm.f32(), c.rms_norm_eps);
      Vec q = MatVec(lw.q_proj.f32(), c.num_heads * dqk, D, xb);
      Vec k = MatVec(lw.k_proj.f32(), c.num_kv_heads * dqk, D, xb);
      Vec v = MatVec(lw.v_proj.f32(), c.num_kv_heads * dvo, D, xb);
      auto rope = [&](Vec& t, int heads) {
        for (int h = 0; h < heads; ++h) {
          for (int i = 0; i < dqk / 2; ++i) {
            const double a =
                static_cast<double>(pos) * double{lw.rope_inv_freq[i]};
            const double cs = std::cos(a), sn = std::sin(a);
            double& x0 = t[h * dqk + i];
            double& x1 = t[h * dqk + i + dqk / 2];
            const double v0 = x0, v1 = x1;
            x0 = v0 * cs - v1 * sn;
            x1 = v1 * cs + v0 * sn;
          }
        }
      };
      rope(q, c.num_heads);
      rope(k, c.num_kv_heads);
      kcache[l].push_back(k);
      vcache[l].push_back(v);
      Vec att(static_cast<size_t>(c.num_heads) * dvo);
      for (int h = 0; h < c.num_heads; ++h) {
        Vec qh(q.begin() + h * dqk, q.begin() + (h + 1) * dqk);
        Vec o = Attend(qh, kcache[l], vcache[l], h / group, dqk, dvo);
        std::copy(o.begin(), o.end(), att.begin() + h * dvo);
      }
      Vec out = MatVec(lw.o_proj.f32(), D, c.num_heads * dvo, att);
      for (int i = 0; i < D; ++i) x[i] += out[i];
      xb = RmsNorm(x, lw.ffn_norm.f32(), c.rms_norm_eps);
      Vec g = MatVec(lw.gate_proj.f32(), H, D, xb);
      Vec u = MatVec(lw.up_proj.f32(), H, D, xb);
      for (int i = 0; i < H; ++i) g[i] = Silu(g[i]) * u[i];
      Vec down = MatVec(lw.down_proj.f32(), D, H, g);
      for (int i = 0; i < D; ++i) x[i] += down[i];
    }
    x = RmsNorm(x, w.final_norm.f32(), c.rms_norm_eps);
    logits.push_back(MatVec(w.lm_head.f32(), c.vocab_size, D, x));
  }
  return logits;
}

double MaxAbs(const Vec& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

TEST(ConvertLlama2cTest, WritesConfigTokenizerAndTensors) {
  const std::string dir = NewDir("files");
  absl::Status s = ConvertLlama2c(kCheckpoint, kTokenizer, dir);
  ASSERT_TRUE(s.ok()) << s;
  auto c = ModelConfig::FromDir(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 5);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->qk_head_dim, std::vector<int>(5, 8));
  EXPECT_EQ(c->vo_head_dim, std::vector<int>(5, 8));
  EXPECT_EQ(c->rope_scheme, RopeScheme::kStandard);
  EXPECT_EQ(ReadAll(dir + "/tokenizer.bin"), ReadAll(kTokenizer));
  auto f = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 2u + 5u * 9u);  // tied: no lm_head
  EXPECT_EQ((*f)->Find("lm_head.weight"), nullptr);
  // wq row permutation: new row (h*hs + half*hs/2 + i) = old (h*hs + 2i +
  // half).
  const std::string raw = ReadAll(kCheckpoint);
  const int64_t wq_off = 28 + 4 * (512 * 64 + 5 * 64);
  const TensorEntry* q = (*f)->Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  for (int h = 0; h < 8; ++h) {
    for (int half = 0; half < 2; ++half) {
      for (int i = 0; i < 4; ++i) {
        const int nr = h * 8 + half * 4 + i, orow = h * 8 + 2 * i + half;
        EXPECT_EQ(std::memcmp(q->data + nr * 64 * 4,
                              raw.data() + wq_off + orow * 64 * 4, 64 * 4),
                  0);
      }
    }
  }
}

TEST(ConvertLlama2cTest, PreservesLogitsExactlyInF32) {
  const std::string dir = NewDir("f32");
  ASSERT_TRUE(ConvertLlama2c(kCheckpoint, kTokenizer, dir, DType::kF32).ok());
  auto w = LoadModel(dir, {.matrix_dtype = DType::kF32});
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<Vec> ref = Llama2cForward(kCheckpoint, kTokens);
  const std::vector<Vec> got = HfForward(**w, kTokens);
  ASSERT_EQ(ref.size(), kTokens.size());
  ASSERT_EQ(got.size(), kTokens.size());
  double worst = 0.0;
  for (size_t t = 0; t < ref.size(); ++t) {
    ASSERT_EQ(ref[t].size(), 512u);
    const double scale = MaxAbs(ref[t]);
    ASSERT_GT(scale, 1.0);  // a real, non-degenerate distribution
    for (size_t i = 0; i < ref[t].size(); ++i) {
      const double rel = std::abs(ref[t][i] - got[t][i]) / scale;
      worst = std::max(worst, rel);
      ASSERT_LE(rel, 1e-9) << "position " << t << " token " << i << ": "
                           << ref[t][i] << " vs " << got[t][i];
    }
  }
  std::ostringstream os;
  os << worst;
  RecordProperty("worst_relative_difference", os.str());
}

TEST(ConvertLlama2cTest, Bf16LogitsAreClose) {
  const std::string dir = NewDir("bf16");
  ASSERT_TRUE(ConvertLlama2c(kCheckpoint, kTokenizer, dir, DType::kBF16).ok());
  auto f = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Find("model.embed_tokens.weight")->dtype, DType::kBF16);
  auto w = LoadModel(dir, {.matrix_dtype = DType::kF32});
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<Vec> ref = Llama2cForward(kCheckpoint, kTokens);
  const std::vector<Vec> got = HfForward(**w, kTokens);
  int same_argmax = 0;
  for (size_t t = 0; t < ref.size(); ++t) {
    const double scale = MaxAbs(ref[t]);
    double worst = 0.0;
    for (size_t i = 0; i < ref[t].size(); ++i) {
      worst = std::max(worst, std::abs(ref[t][i] - got[t][i]));
    }
    EXPECT_LE(worst / scale, 0.05) << "position " << t;
    const auto a = std::max_element(ref[t].begin(), ref[t].end());
    const auto b = std::max_element(got[t].begin(), got[t].end());
    same_argmax += (a - ref[t].begin()) == (b - got[t].begin());
  }
  EXPECT_GE(same_argmax, static_cast<int>(ref.size()) - 2);
}

TEST(ConvertLlama2cTest, RejectsBadCheckpoints) {
  const std::string dir = NewDir("bad");
  const std::string raw = ReadAll(kCheckpoint);
  const std::string truncated = dir + "/truncated.bin";
  WriteAll(truncated, raw.substr(0, raw.size() - 4));
  absl::Status s = ConvertLlama2c(truncated, kTokenizer, dir + "/out1");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("truncated"));

  const std::string oversized = dir + "/oversized.bin";
  WriteAll(oversized, raw + std::string(4, '\0'));
  s = ConvertLlama2c(oversized, kTokenizer, dir + "/out2");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("trailing data"));

  // A negative vocab (untied classifier) without the classifier data.
  std::string untied = raw;
  const int32_t neg = -512;
  std::memcpy(untied.data() + 20, &neg, 4);
  WriteAll(dir + "/untied.bin", untied);
  s = ConvertLlama2c(dir + "/untied.bin", kTokenizer, dir + "/out3");
  EXPECT_THAT(s.message(), HasSubstr("truncated"));

  std::string bad_heads = raw;
  const int32_t three = 3;
  std::memcpy(bad_heads.data() + 16, &three, 4);  // n_kv_heads = 3
  WriteAll(dir + "/heads.bin", bad_heads);
  s = ConvertLlama2c(dir + "/heads.bin", kTokenizer, dir + "/out4");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("n_kv_heads"));

  WriteAll(dir + "/short.bin", raw.substr(0, 10));
  EXPECT_EQ(
      ConvertLlama2c(dir + "/short.bin", kTokenizer, dir + "/out5").code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ConvertLlama2c(dir + "/missing.bin", kTokenizer, dir + "/out6").code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(ConvertLlama2c(kCheckpoint, dir + "/missing_tok.bin", dir + "/out7")
                .code(),
            absl::StatusCode::kNotFound);
}

TEST(ConvertLlama2cTest, UntiedClassifier) {
  // The real checkpoint with its embedding appended as an explicit classifier
  // and a negative vocab_size: converts to an untied model with equal logits.
  const std::string dir = NewDir("untied_ok");
  std::string raw = ReadAll(kCheckpoint);
  const int32_t neg = -512;
  std::memcpy(raw.data() + 20, &neg, 4);
  raw += raw.substr(28, 512 * 64 * 4);
  WriteAll(dir + "/untied.bin", raw);
  ASSERT_TRUE(
      ConvertLlama2c(dir + "/untied.bin", kTokenizer, dir + "/out").ok());
  auto w = LoadModel(dir + "/out");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE((*w)->config.tie_word_embeddings);
  EXPECT_NE((*w)->lm_head.data, (*w)->embed_tokens.data);
  const std::vector<int> toks(kTokens.begin(), kTokens.begin() + 5);
  const std::vector<Vec> ref = Llama2cForward(dir + "/untied.bin", toks);
  const std::vector<Vec> got = HfForward(**w, toks);
  for (size_t t = 0; t < ref.size(); ++t) {
    for (size_t i = 0; i < ref[t].size(); ++i) {
      ASSERT_NEAR(ref[t][i], got[t][i], 1e-9 * MaxAbs(ref[t]));
    }
  }
}

// Parses a llama2.c tokenizer file into its strings.
std::vector<std::string> ParseTokenizer(const std::string& raw, int vocab) {
  std::vector<std::string> out;
  size_t off = 4;
  for (int i = 0; i < vocab; ++i) {
    if (off + 8 > raw.size()) return {};
    int32_t len;
    std::memcpy(&len, raw.data() + off + 4, 4);
    off += 8;
    if (len < 0 || off + len > raw.size()) return {};
    out.push_back(raw.substr(off, len));
    off += len;
  }
  if (off != raw.size()) return {};
  return out;
}

TEST(WriteSyntheticModelTest, WritesLoadableModelAndTokenizer) {
  const std::string dir = NewDir("synthetic");
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.vocab_size = 300;
  c.max_position_embeddings = 64;
  c.qk_head_dim = {8, 4};
  c.vo_head_dim = {6, 8};
  c.rope_scheme = RopeScheme::kFrequencyAware;
  ASSERT_TRUE(WriteSyntheticModel(c, dir, DType::kBF16, 42).ok());
  auto w = LoadModel(dir, {.matrix_dtype = DType::kBF16});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->config.ToJson(), c.ToJson());
  EXPECT_EQ((*w)->layers[1].q_proj.shape, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ((*w)->layers[1].v_proj.shape, (std::vector<int64_t>{8, 32}));
  EXPECT_EQ((*w)->layers[0].o_proj.shape, (std::vector<int64_t>{32, 24}));
  EXPECT_EQ((*w)->lm_head.shape, (std::vector<int64_t>{300, 32}));
  EXPECT_EQ((*w)->layers[1].rope_inv_freq.size(), 2u);

  const std::string raw = ReadAll(dir + "/tokenizer.bin");
  const std::vector<std::string> toks = ParseTokenizer(raw, 300);
  ASSERT_EQ(toks.size(), 300u);
  EXPECT_EQ(toks[0], "<unk>");
  EXPECT_EQ(toks[1], "\n<s>\n");
  EXPECT_EQ(toks[2], "\n</s>\n");
  EXPECT_EQ(toks[3], "<0x00>");
  EXPECT_EQ(toks[3 + 0x41], "<0x41>");
  EXPECT_EQ(toks[258], "<0xFF>");
  EXPECT_EQ(std::set<std::string>(toks.begin(), toks.end()).size(), 300u);
  int32_t max_len;
  std::memcpy(&max_len, raw.data(), 4);
  size_t longest = 0;
  for (const auto& t : toks) longest = std::max(longest, t.size());
  EXPECT_EQ(static_cast<size_t>(max_len), longest);

  // Deterministic in the seed.
  const std::string dir2 = NewDir("synthetic2");
  ASSERT_TRUE(WriteSyntheticModel(c, dir2, DType::kBF16, 42).ok());
  EXPECT_EQ(ReadAll(dir + "/model.safetensors"),
            ReadAll(dir2 + "/model.safetensors"));
  c.num_kv_heads = 3;
  EXPECT_EQ(WriteSyntheticModel(c, dir2, DType::kBF16, 42).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model
