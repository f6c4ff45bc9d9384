// The engine under a structured-output constraint (llguidance over the real
// stories260K vocabulary), against the float64 reference forward: each
// greedy token must be the most likely token among those the grammar
// allows, where "allowed" is computed here from the tokens' bytes, not by
// llguidance. Also: a constraint ends the sequence where its grammar is
// complete, EOS is allowed only where the grammar may end, and a transferred
// first token the grammar refuses fails the request.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/engine/engine_core.h"
#include "worker/engine/reference_forward_for_tests.h"
#include "worker/engine/stories260k_for_tests.h"
#include "worker/grammar/llguidance_compiler.h"

namespace latentkv::worker {
namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261,
                                      378};  // "Once upon a time"

struct Setup {
  std::unique_ptr<model::Tokenizer> tok;
  std::unique_ptr<LlguidanceCompiler> compiler;
};

const Setup* Get() {
  static Setup* s = [] {
    auto lib = LlguidanceLibrary::LoadDefault();
    if (!lib.ok()) {
      EXPECT_EQ(LATENTKV_LLGUIDANCE_FETCHED, 0) << lib.status();
      return static_cast<Setup*>(nullptr);
    }
    auto* s = new Setup;
    auto t = model::LoadLlama2cTokenizer(
        std::string(LATENTKV_SHARED_DIR) + "/models/stories260K/tok512.bin",
        512);
    EXPECT_TRUE(t.ok()) << t.status();
    s->tok = std::move(*t);
    const model::ModelConfig& c = Stories260k()->config;
    auto comp = LlguidanceCompiler::Create(*lib, *s->tok, c.vocab_size,
                                           {c.eos_token_id});
    EXPECT_TRUE(comp.ok()) << comp.status();
    s->compiler = std::move(*comp);
    return s;
  }();
  return s;
}

#define SKIP_WITHOUT_LLGUIDANCE() \
  if (Get() == nullptr) GTEST_SKIP() << "llguidance not fetched"

struct Seen {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  absl::Status status;
};

using MaskMode = EngineOptions::MaskMode;

Seen Generate(ConstraintSpec spec, int max_new, bool ignore_eos = false,
              int32_t import_first = -1, MaskMode mode = MaskMode::kAuto,
              float temperature = 0.0f, uint64_t seed = 0) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.prefix_caching = false;
  o.structured_output_masks = mode;
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(core.ok()) << core.status();
  GenerationRequest r;
  r.id = "c";
  r.prompt = kPrompt;
  r.max_new_tokens = max_new;
  r.ignore_eos = ignore_eos;
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  auto c = Get()->compiler->Compile(spec);
  EXPECT_TRUE(c.ok()) << c.status();
  r.constraint = std::move(*c);
  if (import_first >= 0) {
    // As a decode worker gets it: the prompt's KV and the first token.
    GenerationRequest p;
    p.id = "p";
    p.prompt = kPrompt;
    p.max_new_tokens = 1;
    p.export_kv = true;
    std::shared_ptr<const KvSnapshot> kv;
    auto ps = (*core)->Prepare(std::move(p));
    bool done = false;
    (*core)->Admit(std::move(*ps), [&](const GenerationEvent& ev) {
      if (ev.finish != FinishReason::kNone) {
        kv = ev.kv;
        done = true;
      }
    });
    while (!done) (*core)->Step();
    r.import_kv = kv;
    r.import_first_token = import_first;
  }
  Seen seen;
  auto seq = (*core)->Prepare(std::move(r));
  EXPECT_TRUE(seq.ok()) << seq.status();
  bool done = false;
  (*core)->Admit(std::move(*seq), [&](const GenerationEvent& ev) {
    if (ev.token >= 0) seen.tokens.push_back(ev.token);
    if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
      seen.finish = ev.finish;
      seen.status = ev.status;
      done = true;
    }
  });
  while (!done) (*core)->Step();
  return seen;
}

std::string Bytes(int32_t t) { return Get()->tok->TokenBytes(0, t); }

bool AllDigits(const std::string& b) {
  return !b.empty() && b.find_first_not_of("0123456789") == std::string::npos;
}

class ConstrainedEngineModeTest : public testing::TestWithParam<MaskMode> {};

TEST_P(ConstrainedEngineModeTest, GreedyIsTheBestAllowedTokenOfTheReference) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Seen seen = Generate({ConstraintKind::kRegex, "[0-9]{1,6}"}, 6, false,
                             -1, GetParam());
  ASSERT_TRUE(seen.status.ok()) << seen.status;
  ASSERT_FALSE(seen.tokens.empty());
  const model::ModelConfig& c = Stories260k()->config;
  std::vector<int32_t> seq = kPrompt;
  std::string text;
  for (size_t i = 0; i < seen.tokens.size(); ++i) {
    const std::vector<double> logits = ReferenceLogits(*Stories260k(), seq);
    const double* row = logits.data() + (seq.size() - 1) * c.vocab_size;
    // Allowed, computed here: digit-only tokens keeping the total <= 6
    // digits, and EOS once there is at least one.
    int32_t best = -1;
    for (int32_t t = 0; t < c.vocab_size; ++t) {
      const std::string b = Bytes(t);
      const bool ok = (AllDigits(b) && text.size() + b.size() <= 6) ||
                      (t == c.eos_token_id && !text.empty());
      if (ok && (best < 0 || row[t] > row[best])) best = t;
    }
    ASSERT_GE(best, 0);
    EXPECT_EQ(seen.tokens[i], best) << "token " << i;
    text += Bytes(seen.tokens[i]);
    seq.push_back(seen.tokens[i]);
  }
  EXPECT_TRUE(AllDigits(text)) << text;
  EXPECT_LE(text.size(), 6u);
  // Six digits complete the grammar; fewer end at a sampled EOS.
  EXPECT_EQ(seen.finish, FinishReason::kStop);
}

// Sampling under a constraint draws from the model's distribution
// restricted to the allowed tokens and renormalised: 1,500 first tokens
// (different seeds) under "exactly one digit" against the float64
// reference's softmax over the one-digit tokens.
TEST_P(ConstrainedEngineModeTest, SamplesTheMaskedDistribution) {
  SKIP_WITHOUT_LLGUIDANCE();
  const model::ModelConfig& c = Stories260k()->config;
  EngineOptions o;
  o.kv.page_size = 4;
  o.prefix_caching = false;
  o.structured_output_masks = GetParam();
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(core.ok()) << core.status();
  constexpr int kDraws = 1500;
  std::vector<int> count(c.vocab_size, 0);
  int done = 0;
  for (int i = 0; i < kDraws; ++i) {
    GenerationRequest r;
    r.id = "s" + std::to_string(i);
    r.prompt = kPrompt;
    r.max_new_tokens = 1;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = 1000 + i;
    auto k = Get()->compiler->Compile({ConstraintKind::kRegex, "[0-9]"});
    ASSERT_TRUE(k.ok());
    r.constraint = std::move(*k);
    auto seq = (*core)->Prepare(std::move(r));
    ASSERT_TRUE(seq.ok());
    (*core)->Admit(std::move(*seq), [&](const GenerationEvent& ev) {
      EXPECT_TRUE(ev.status.ok()) << ev.status;
      if (ev.token >= 0) ++count[ev.token];
      if (ev.finish != FinishReason::kNone || !ev.status.ok()) ++done;
    });
    // In waves the scheduler's queue holds.
    if (i % 100 == 99) {
      while (done <= i) (*core)->Step();
    }
  }
  while (done < kDraws) (*core)->Step();
  const std::vector<double> logits = ReferenceLogits(*Stories260k(), kPrompt);
  const double* row = logits.data() + (kPrompt.size() - 1) * c.vocab_size;
  double z = 0;
  for (int32_t t = 0; t < c.vocab_size; ++t) {
    if (Bytes(t).size() == 1 && AllDigits(Bytes(t))) z += std::exp(row[t]);
  }
  int total = 0;
  for (int32_t t = 0; t < c.vocab_size; ++t) {
    const bool allowed = Bytes(t).size() == 1 && AllDigits(Bytes(t));
    if (!allowed) {
      EXPECT_EQ(count[t], 0) << "token " << t;
      continue;
    }
    const double p = std::exp(row[t]) / z;
    const double seen = static_cast<double>(count[t]) / kDraws;
    // 5 standard errors.
    EXPECT_NEAR(seen, p, 5 * std::sqrt(p * (1 - p) / kDraws) + 1e-3)
        << "token " << t << " '" << Bytes(t) << "'";
    total += count[t];
  }
  EXPECT_EQ(total, kDraws);
}

// Both mask modes give the same tokens for the same seed.
TEST(ConstrainedEngineTest, MaskModesAgreeWhenSampling) {
  SKIP_WITHOUT_LLGUIDANCE();
  for (uint64_t seed : {1, 2, 3}) {
    const ConstraintSpec spec{ConstraintKind::kRegex, "[a-z ]{1,30}\\."};
    const Seen lazy =
        Generate(spec, 40, false, -1, MaskMode::kLazy, 1.0f, seed);
    const Seen prefetch =
        Generate(spec, 40, false, -1, MaskMode::kPrefetch, 1.0f, seed);
    ASSERT_TRUE(lazy.status.ok()) << lazy.status;
    EXPECT_EQ(lazy.tokens, prefetch.tokens) << seed;
    EXPECT_FALSE(lazy.tokens.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ConstrainedEngineModeTest,
                         testing::Values(MaskMode::kLazy, MaskMode::kPrefetch),
                         [](const testing::TestParamInfo<MaskMode>& i) {
                           return i.param == MaskMode::kLazy ? "Lazy"
                                                             : "Prefetch";
                         });

TEST(ConstrainedEngineTest, EndsWhereTheGrammarIsCompleteEvenIgnoringEos) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Seen seen = Generate({ConstraintKind::kRegex, " (Lily|Tom) (ran|sat)"},
                             40, /*ignore_eos=*/true);
  ASSERT_TRUE(seen.status.ok()) << seen.status;
  std::string text;
  for (int32_t t : seen.tokens) text += Bytes(t);
  EXPECT_TRUE(text == " Lily ran" || text == " Lily sat" ||
              text == " Tom ran" || text == " Tom sat")
      << text;
  EXPECT_EQ(seen.finish, FinishReason::kStop);
}

TEST(ConstrainedEngineTest, JsonSchemaGreedy) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Seen seen = Generate(
      {ConstraintKind::kJsonSchema,
       R"({"type":"object","properties":{"name":{"enum":["Lily","Tom"]},)"
       R"("age":{"type":"integer","minimum":1,"maximum":9}},)"
       R"("required":["name","age"],"additionalProperties":false})"},
      400);
  ASSERT_TRUE(seen.status.ok()) << seen.status;
  std::string text;
  for (int32_t t : seen.tokens) text += Bytes(t);
  EXPECT_EQ(seen.finish, FinishReason::kStop) << "[" << text << "]";
  // Property order is the schema's, and it parses to the schema.
  const size_t name = text.find("\"name\"");
  const size_t age = text.find("\"age\"");
  ASSERT_NE(name, std::string::npos) << text;
  ASSERT_NE(age, std::string::npos) << text;
  EXPECT_LT(name, age) << text;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  ASSERT_TRUE(j.is_object()) << text;
  EXPECT_TRUE(j["name"] == "Lily" || j["name"] == "Tom") << text;
  ASSERT_TRUE(j["age"].is_number_integer()) << text;
  EXPECT_GE(j["age"].get<int>(), 1);
  EXPECT_LE(j["age"].get<int>(), 9);
  EXPECT_EQ(j.size(), 2u);
}

TEST(ConstrainedEngineTest, ImportedFirstTokenIsCheckedAndFollowed) {
  SKIP_WITHOUT_LLGUIDANCE();
  // The regex allows "7..." only; a transferred first token "7" continues,
  // one the grammar refuses fails the request.
  int32_t seven = -1, letter = -1;
  for (int32_t t = 0; t < Stories260k()->config.vocab_size; ++t) {
    if (Bytes(t) == "7") seven = t;
    if (Bytes(t) == "a") letter = t;
  }
  ASSERT_GE(seven, 0);
  ASSERT_GE(letter, 0);
  Seen ok = Generate({ConstraintKind::kRegex, "7[0-9]{2}"}, 10, false, seven);
  ASSERT_TRUE(ok.status.ok()) << ok.status;
  std::string text;
  for (int32_t t : ok.tokens) text += Bytes(t);
  EXPECT_EQ(text.size(), 3u) << text;
  EXPECT_EQ(text[0], '7');
  EXPECT_TRUE(AllDigits(text)) << text;
  EXPECT_EQ(ok.finish, FinishReason::kStop);
  Seen bad = Generate({ConstraintKind::kRegex, "7[0-9]{2}"}, 10, false, letter);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kInvalidArgument)
      << bad.status;
}

}  // namespace
}  // namespace latentkv::worker
