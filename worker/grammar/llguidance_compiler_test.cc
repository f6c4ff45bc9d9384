// LlguidanceCompiler against the real llguidance library and real
// vocabularies (SmolLM2's byte-level BPE, stories260K's llama2.c), checked
// against expectations computed here from the tokens' bytes: a regex's
// first mask token by token, and JSON that nlohmann parses and that has the
// schema's shape after random walks through the allowed tokens.
#include "worker/grammar/llguidance_compiler.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "coordinator/http/tool_call_parser.h"
#include "coordinator/http/tool_calls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace latentkv::worker {
namespace {

constexpr char kSmolGguf[] = LATENTKV_SHARED_DIR
    "/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

std::shared_ptr<const LlguidanceLibrary> Library() {
  static auto lib = LlguidanceLibrary::LoadDefault();
  if (!lib.ok()) {
    // A build that fetched it must load it; one that could not (offline)
    // skips, and says so.
    EXPECT_EQ(LATENTKV_LLGUIDANCE_FETCHED, 0) << lib.status();
    return nullptr;
  }
  return *lib;
}

struct Vocab {
  std::unique_ptr<model::Tokenizer> tok;
  std::unique_ptr<LlguidanceCompiler> compiler;
  std::vector<std::string> bytes;  // per token, after an ordinary token
};

const Vocab& Smol() {
  static Vocab v = [] {
    Vocab v;
    auto t = model::LoadTokenizer(kSmolGguf, 0);
    EXPECT_TRUE(t.ok()) << t.status();
    v.tok = std::move(*t);
    auto c = LlguidanceCompiler::Create(Library(), *v.tok, v.tok->vocab_size(),
                                        {v.tok->eos_id()});
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) v.compiler = std::move(*c);
    for (int32_t i = 0; i < v.tok->vocab_size(); ++i) {
      v.bytes.push_back(v.tok->TokenBytes(0, i));
    }
    return v;
  }();
  return v;
}

#define SKIP_WITHOUT_LLGUIDANCE() \
  if (Library() == nullptr) GTEST_SKIP() << "llguidance not fetched"

bool Allowed(const std::vector<uint32_t>& m, int32_t t) {
  return (m[t / 32] >> (t % 32) & 1u) != 0;
}

std::vector<uint32_t> Mask(TokenConstraint& c) {
  std::vector<uint32_t> m(c.mask_words());
  EXPECT_TRUE(c.FillMask(absl::MakeSpan(m)).ok());
  return m;
}

TEST(LlguidanceLibraryTest, LoadsThePinnedVersion) {
  SKIP_WITHOUT_LLGUIDANCE();
  EXPECT_THAT(Library()->version(), testing::HasSubstr("llguidance@1.8.0"));
  EXPECT_EQ(LlguidanceLibrary::Load("/nonexistent").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LlguidanceCompilerTest, RegexMaskIsExactlyTheDigitTokens) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  auto c = v.compiler->Compile({ConstraintKind::kRegex, "[0-9]+"});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_GE((*c)->mask_words() * 32, v.tok->vocab_size());
  std::vector<uint32_t> m = Mask(**c);
  int allowed = 0;
  int32_t two_digits = -1;
  for (int32_t t = 0; t < v.tok->vocab_size(); ++t) {
    const std::string& b = v.bytes[t];
    const bool digits =
        !b.empty() && b.find_first_not_of("0123456789") == std::string::npos;
    EXPECT_EQ(Allowed(m, t), digits) << "token " << t << " '" << b << "'";
    allowed += Allowed(m, t);
    if (digits && b.size() == 1 && two_digits < 0) two_digits = t;
  }
  EXPECT_GT(allowed, 0);
  EXPECT_FALSE(Allowed(m, v.tok->eos_id()));  // at least one digit first
  ASSERT_GE(two_digits, 0);
  ASSERT_TRUE((*c)->Accept(two_digits).ok());
  EXPECT_FALSE((*c)->Done());  // more digits may follow
  m = Mask(**c);
  EXPECT_TRUE(Allowed(m, v.tok->eos_id()));  // or the end
  EXPECT_TRUE(Allowed(m, two_digits));
  // A token the grammar does not allow is refused.
  int32_t letter = -1;
  for (int32_t t = 0; t < v.tok->vocab_size() && letter < 0; ++t) {
    if (v.bytes[t] == "a") letter = t;
  }
  ASSERT_GE(letter, 0);
  EXPECT_EQ((*c)->Accept(letter).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LlguidanceCompilerTest, FixedStringIsDoneAtItsEnd) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  auto c = v.compiler->Compile({ConstraintKind::kRegex, "yes|no"});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<int32_t> ids = v.tok->Encode("yes", false);
  for (int32_t t : ids) ASSERT_TRUE((*c)->Accept(t).ok());
  EXPECT_TRUE((*c)->Done());
}

// Draws tokens uniformly among the allowed ones (EOS as soon as allowed
// when `prefer_end`), returning the bytes generated.
std::string RandomWalk(const Vocab& v, TokenConstraint& c, uint64_t seed,
                       int max_steps) {
  std::mt19937_64 rng(seed);
  std::string out;
  for (int step = 0; step < max_steps && !c.Done(); ++step) {
    std::vector<uint32_t> m = Mask(c);
    if (Allowed(m, v.tok->eos_id()) && step > 8) break;
    std::vector<int32_t> ok;
    for (int32_t t = 0; t < v.tok->vocab_size(); ++t) {
      if (Allowed(m, t) && t != v.tok->eos_id()) ok.push_back(t);
    }
    if (ok.empty()) break;
    // Short tokens make short values: prefer them half the time.
    int32_t t = ok[rng() % ok.size()];
    if (rng() % 2 == 0) {
      for (int32_t u : ok) {
        if (v.bytes[u].size() < v.bytes[t].size()) t = u;
      }
    }
    EXPECT_TRUE(c.Accept(t).ok());
    out += v.bytes[t];
  }
  return out;
}

TEST(LlguidanceCompilerTest, JsonSchemaWalksGiveConformingJson) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  const std::string schema = R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "maxLength": 12},
      "age": {"type": "integer", "minimum": 0, "maximum": 150},
      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": false})";
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    auto c = v.compiler->Compile({ConstraintKind::kJsonSchema, schema});
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string text = RandomWalk(v, **c, seed, 400);
    ASSERT_TRUE((*c)->Done() || Allowed(Mask(**c), v.tok->eos_id())) << text;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << text;
    ASSERT_TRUE(j.is_object()) << text;
    EXPECT_EQ(j.size(), 3u) << text;
    ASSERT_TRUE(j["name"].is_string()) << text;
    // maxLength counts code points, not bytes.
    const std::string name = j["name"].get<std::string>();
    EXPECT_LE(std::count_if(name.begin(), name.end(),
                            [](char ch) { return (ch & 0xC0) != 0x80; }),
              12)
        << text;
    // Whitespace runs are bounded (the default json_whitespace).
    // One line break and 12 blanks at most.
    EXPECT_THAT(text, testing::Not(testing::ContainsRegex("[ \t]{13}")));
    EXPECT_THAT(text, testing::Not(testing::ContainsRegex("\n[ \t]*\n")));
    ASSERT_TRUE(j["age"].is_number_integer()) << text;
    EXPECT_GE(j["age"].get<int64_t>(), 0);
    EXPECT_LE(j["age"].get<int64_t>(), 150);
    ASSERT_TRUE(j["tags"].is_array()) << text;
    EXPECT_LE(j["tags"].size(), 3u);
    for (const auto& t : j["tags"]) {
      EXPECT_TRUE(t == "a" || t == "b") << text;
    }
  }
}

TEST(LlguidanceCompilerTest, SchemaOwnWhitespaceSettingIsKept) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  auto c = v.compiler->Compile(
      {ConstraintKind::kJsonSchema,
       R"({"x-guidance": {"whitespace_flexible": false}, "type": "object",
           "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
           "required": ["a"], "additionalProperties": false})"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string text = RandomWalk(v, **c, 3, 200);
  // Compact: no whitespace anywhere (no strings in this schema).
  EXPECT_THAT(
      text, testing::MatchesRegex("\\{\"a\":\\[(-?[0-9]+(,-?[0-9]+)*)?\\]\\}?"))
      << text;
}

TEST(LlguidanceCompilerTest, JsonObjectIsAnObject) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  auto c = v.compiler->Compile({ConstraintKind::kJsonObject, ""});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<uint32_t> m = Mask(**c);
  for (int32_t t = 0; t < v.tok->vocab_size(); ++t) {
    if (!Allowed(m, t)) continue;
    // The first token opens the object (whitespace may come first).
    const std::string& b = v.bytes[t];
    const size_t i = b.find_first_not_of(" \t\n\r");
    EXPECT_TRUE(i == std::string::npos || b[i] == '{') << "'" << b << "'";
  }
}

TEST(LlguidanceCompilerTest, LarkGrammar) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  auto c = v.compiler->Compile({ConstraintKind::kLark,
                                "start: \"(\" NUM (\"+\" NUM)* \")\"\n"
                                "NUM: /[0-9]{1,3}/\n"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string text = RandomWalk(v, **c, 7, 100);
  EXPECT_THAT(text, testing::MatchesRegex("\\([0-9]{1,3}(\\+[0-9]{1,3})*\\)?"))
      << text;
}

// The engine's lazy mode keeps a sampled token when Allows says so, and
// masks only otherwise: Allows must agree with the mask on every token,
// along a walk, for every kind of spec.
TEST(LlguidanceCompilerTest, AllowsAgreesWithTheMask) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  for (const ConstraintSpec& spec : std::vector<ConstraintSpec>{
           {ConstraintKind::kRegex, "[0-9]{1,3}(\\.[0-9]+)?"},
           {ConstraintKind::kJsonObject, ""},
           {ConstraintKind::kLark,
            "start: ~\"(\" expr \")\"\nexpr: /[0-9]+/\n"},
           {ConstraintKind::kJsonSchema,
            R"({"type":"object","properties":{"a":{"type":"string"}}})"},
       }) {
    auto c = v.compiler->Compile(spec);
    ASSERT_TRUE(c.ok()) << c.status();
    for (int step = 0; step < 6 && !(*c)->Done(); ++step) {
      std::vector<uint32_t> m = Mask(**c);
      int disagree = 0, first = -1;
      for (int32_t t = 0; t < v.tok->vocab_size(); ++t) {
        const bool in = Allowed(m, t);
        if (in && first < 0 && t != v.tok->eos_id()) first = t;
        if (in != (*c)->Allows(t) && ++disagree <= 3) {
          ADD_FAILURE() << spec.text << " step " << step << " token " << t
                        << " '" << v.bytes[t] << "' mask " << in;
        }
      }
      if (first < 0) break;
      ASSERT_TRUE((*c)->Accept(first).ok()) << spec.text;
    }
  }
}

// The coordinator's tool-call grammars (tool_choice "required" and named,
// coordinator/http/tool_calls.h) compile here, and every walk through them
// is calls that the coordinator's parser reads back: known names,
// arguments that follow the tool's schema, nothing else.
TEST(LlguidanceCompilerTest, ToolCallGrammarsGiveOnlyValidCalls) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  namespace http = coordinator::http;
  const auto body = nlohmann::ordered_json::parse(R"({"tools": [
      {"type": "function", "function": {"name": "get_weather", "parameters":
        {"type": "object", "properties": {"city": {"type": "string",
         "maxLength": 6}, "unit": {"enum": ["C", "F"]}},
         "required": ["city", "unit"], "additionalProperties": false}}},
      {"type": "function", "function": {"name": "now", "parameters":
        {"type": "object", "properties": {}, "additionalProperties": false}}}
    ]})");
  for (const auto format :
       {http::ToolCallFormat::kHermes, http::ToolCallFormat::kLlama3Json}) {
    for (const bool named : {false, true}) {
      http::ToolRequest r;
      ASSERT_FALSE(http::ParseTools(body, &r).has_value());
      r.choice = named ? http::ToolChoice::kNamed : http::ToolChoice::kRequired;
      r.named = "get_weather";
      const std::string grammar = http::ToolCallGrammar(r, format);
      for (uint64_t seed = 1; seed <= 4; ++seed) {
        auto c = v.compiler->Compile({ConstraintKind::kLark, grammar});
        ASSERT_TRUE(c.ok()) << c.status() << "\n" << grammar;
        const std::string text = RandomWalk(v, **c, seed, 300);
        ASSERT_TRUE((*c)->Done() || Allowed(Mask(**c), v.tok->eos_id()))
            << text;
        const http::ToolOutput out = http::ParseToolOutput(format, text);
        EXPECT_EQ(out.content, "") << text;
        ASSERT_GE(out.tool_calls.size(), 1u) << text;
        if (named) EXPECT_EQ(out.tool_calls.size(), 1u) << text;
        for (const auto& call : out.tool_calls) {
          const std::string name = call["function"]["name"];
          const auto args = nlohmann::json::parse(
              call["function"]["arguments"].get<std::string>(), nullptr, false);
          ASSERT_TRUE(args.is_object()) << text;
          if (name == "now") {
            EXPECT_FALSE(named) << text;
            EXPECT_TRUE(args.empty()) << text;
            continue;
          }
          ASSERT_EQ(name, "get_weather") << text;
          ASSERT_TRUE(args["city"].is_string()) << text;
          EXPECT_TRUE(args["unit"] == "C" || args["unit"] == "F") << text;
          EXPECT_EQ(args.size(), 2u) << text;
        }
      }
    }
  }
}

TEST(LlguidanceCompilerTest, BadSpecsAreInvalidArgument) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  for (const ConstraintSpec& s : std::vector<ConstraintSpec>{
           {ConstraintKind::kRegex, "[0-9"},
           {ConstraintKind::kJsonSchema, "{\"type\": \"objec"},
           {ConstraintKind::kJsonSchema, "{\"type\": 7}"},
           {ConstraintKind::kLark, "start: undefined_rule\n"},
           {ConstraintKind::kRegex, std::string("a\0b", 3)},
           {ConstraintKind::kRegex, std::string(300 << 10, 'a')},
       }) {
    auto c = v.compiler->Compile(s);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument)
        << s.text.substr(0, 40);
    EXPECT_THAT(c.status().message(), testing::HasSubstr("structured output"));
  }
}

TEST(LlguidanceCompilerTest, ModelVocabularyBeyondTheTokenizers) {
  SKIP_WITHOUT_LLGUIDANCE();
  const Vocab& v = Smol();
  // Padding rows past the tokenizer are never allowed.
  auto c = LlguidanceCompiler::Create(
      Library(), *v.tok, v.tok->vocab_size() + 64, {v.tok->eos_id()});
  ASSERT_TRUE(c.ok()) << c.status();
  auto k = (*c)->Compile({ConstraintKind::kRegex, "[a-z ]*"});
  ASSERT_TRUE(k.ok());
  std::vector<uint32_t> m = Mask(**k);
  for (int32_t t = v.tok->vocab_size(); t < v.tok->vocab_size() + 64; ++t) {
    EXPECT_FALSE(Allowed(m, t)) << t;
  }
  EXPECT_EQ(
      LlguidanceCompiler::Create(Library(), *v.tok, v.tok->vocab_size(), {})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::worker
