// Byte-level BPE tokenizer tests. The expectations are independent of our
// code: token ids come from tools/tokenizer_reference.py (pure Python with
// the real regex patterns and the classic GPT-2 merge loop) over the real
// SmolLM2 vocabulary, or from properties (round trips, known special ids).
#include "model/tokenizer/bpe_tokenizer.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf_file.h"
#include "model/tokenizer/bpe_pretokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace latentkv::model {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using Json = nlohmann::json;

const std::string kSmolGguf = std::string(LATENTKV_SHARED_DIR) +
                              "/models/smollm2-135m-instruct/"
                              "SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kStories =
    std::string(LATENTKV_SHARED_DIR) + "/text/tinystories_train_excerpt.txt";
const std::string kReference =
    std::string(LATENTKV_SOURCE_DIR) + "/tools/tokenizer_reference.py";
constexpr char kChatMl[] =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n";

std::string TempDir() {
  std::string dir =
      (std::filesystem::temp_directory_path() / "bpe_tokenizer_test_XXXXXX")
          .string();
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

const BpeVocab& SmolVocab() {
  static const BpeVocab* vocab = [] {
    auto gguf = GgufFile::Open(kSmolGguf);
    EXPECT_TRUE(gguf.ok()) << gguf.status();
    auto v = ReadGgufBpeVocab(**gguf);
    EXPECT_TRUE(v.ok()) << v.status();
    return new BpeVocab(*std::move(v));
  }();
  return *vocab;
}

std::unique_ptr<Tokenizer> SmolWith(const std::string& pre,
                                    bool ignore_merges = false) {
  BpeVocab v = SmolVocab();
  v.pre = pre;
  v.ignore_merges = ignore_merges;
  auto t = MakeBpeTokenizer(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

// Hand-written hard cases (characters of Unicode <= 14, where our tables
// and the reference's regex module agree).
std::vector<std::string> AdversarialTexts() {
  return {
      "Hello, WORLD! It'S John's book; they'RE here, we'VE, I'M, you'LL, "
      "he'D. don't 's ' '' ''s 'S'T'RE'Ve'lL",
      "it'\u017f fine, IT'\u017f",  // U+017F folds to 's' under (?i)
      "1234567 + 89 = 1234656; 3.14159, 1,000,000 and \u00bd \u00b2 "
      "\u0663\u0664\u0665 \u096a\u0968 \u3007 \u216b x1y22z333",
      " 1 22 333 4444 55555\t666666",
      "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac, "
      "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 "
      "\u0442\u0435\u043a\u0441\u0442"
      ", \u05e2\u05d1\u05e8\u05d9\u05ea, \u0627\u0644\u0639\u0631\u0628\u064a"
      "\u0629, \u4e2d\u6587\u5b57\u7b26, \u65e5\u672c\u8a9e\u306e\u30c6\u30ad"
      "\u30b9\u30c8, \ud55c\uad6d\uc5b4, \u0939\u093f\u0928\u094d\u0926\u0940,"
      " \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u7b2c1\u7ae0",
      "\U0001F600\U0001F44D\U0001F3FD\U0001F468\u200d\U0001F469\u200d"
      "\U0001F467 ok \U0001F389\U0001F389  \U0001F600",
      "line1\r\nline2\r\n\r\n  indented\n\n\n",
      "\ttab\t\tdouble tab \t mixed\t",
      "   leading spaces",
      "trailing spaces   ",
      "many      spaces between   \n   words",
      " ",
      "\n",
      "  \n  \n",
      "\r",
      "\r\r\n",
      " \r\n x",
      "!!!??? ... --- ((( ))) {}[]<>@#$%^&*_+=~`|\\/ (hello) ((hello",
      "a<|im_start|>b<|im_end|><|endoftext|>c <|im_start|> <|im_start|system"
      " <|im_end|>\n<|im_start|><|im_start|>",
      "\u00a0nbsp\u2003em space\u3000ideographic\u2028line\u0085nel "
      "\u00a0\u00a0x",
      "e\u0301 cafe\u0301 n\u0303 \u0915\u094d\u0937",
      "x\u000by\u000cz \u001cfs\u001f",
      "\u200bzero width\u200b \u200b",
      "abc123def 12abc ab12 '12 ?1 !a .A",
      "\x01\x02\x7f control",
      "Once upon a time, there was a little girl named Lily.",
      "\u00c0\u00e9\u00ee\u00f5\u00fc \u00df \u0130stanbul \u01c5 \u1e9e",
      "<|im_start|>user\nHi<|im_end|>\n",
  };
}

std::vector<std::string> CorpusLines(size_t max_lines) {
  std::ifstream in(kStories);
  EXPECT_TRUE(in.good()) << kStories;
  std::vector<std::string> lines;
  std::string line;
  while (lines.size() < max_lines && std::getline(in, line)) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

struct ReferenceOutput {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
};

// Runs tools/tokenizer_reference.py; result[p][i] is texts[i] under pres[p].
// Fails (never skips) when python3 or its `regex` module is missing.
std::vector<std::vector<ReferenceOutput>> RunReference(
    const std::vector<std::string>& pres, const std::vector<std::string>& texts,
    bool ignore_merges) {
  const std::string dir = TempDir();
  const std::string in_path = dir + "/in.jsonl";
  const std::string out_path = dir + "/out.jsonl";
  {
    std::ofstream in(in_path, std::ios::binary);
    for (const std::string& t : texts) in << Json(t).dump() << "\n";
  }
  std::string pre_list;
  for (const std::string& p : pres) {
    pre_list += (pre_list.empty() ? "" : ",") + p;
  }
  const std::string cmd = "python3 '" + kReference + "' --gguf '" + kSmolGguf +
                          "' --pre " + pre_list + " --input '" + in_path +
                          "' --output '" + out_path + "'" +
                          (ignore_merges ? " --ignore-merges" : "") + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string log;
  char buf[4096];
  while (pipe != nullptr && fgets(buf, sizeof(buf), pipe) != nullptr) {
    log += buf;
  }
  const int status = pipe == nullptr ? -1 : pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "reference failed (python3 with the regex module is required): " << cmd
      << "\n"
      << log;
  std::vector<std::vector<ReferenceOutput>> result(pres.size());
  std::ifstream out(out_path, std::ios::binary);
  std::string line;
  size_t n = 0;
  while (std::getline(out, line)) {
    const Json j = Json::parse(line);
    const size_t p = n / texts.size();
    EXPECT_LT(p, pres.size());
    if (p >= pres.size()) break;
    EXPECT_EQ(j["pre"].get<std::string>(), pres[p]);
    ReferenceOutput r;
    r.ids = j["ids"].get<std::vector<int32_t>>();
    r.pieces = j["pieces"].get<std::vector<std::string>>();
    result[p].push_back(std::move(r));
    ++n;
  }
  EXPECT_EQ(n, pres.size() * texts.size());
  std::filesystem::remove_all(dir);
  return result;
}

std::vector<std::string> Pieces(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::string_view> views;
  PreTokenize(kind, text, &views);
  return std::vector<std::string>(views.begin(), views.end());
}

void ExpectMatchesReference(const std::vector<std::string>& pres,
                            const std::vector<std::string>& texts,
                            bool ignore_merges) {
  const auto ref = RunReference(pres, texts, ignore_merges);
  ASSERT_EQ(ref.size(), pres.size());
  for (size_t p = 0; p < pres.size(); ++p) {
    ASSERT_EQ(ref[p].size(), texts.size()) << pres[p];
    const auto tokenizer = SmolWith(pres[p], ignore_merges);
    const PreTokenizerKind kind = *PreTokenizerFromName(pres[p]);
    int mismatches = 0;
    for (size_t i = 0; i < texts.size() && mismatches < 5; ++i) {
      const std::vector<int32_t> ids = tokenizer->Encode(texts[i], false);
      const std::vector<std::string> pieces = Pieces(kind, texts[i]);
      if (ids != ref[p][i].ids || pieces != ref[p][i].pieces) ++mismatches;
      EXPECT_EQ(pieces, ref[p][i].pieces)
          << pres[p] << " pieces of " << Json(texts[i]).dump();
      EXPECT_EQ(ids, ref[p][i].ids)
          << pres[p] << " ids of " << Json(texts[i]).dump();
    }
  }
}

TEST(BpeTokenizerTest, MatchesPythonReferenceOnCorpusAndAdversarialText) {
  std::vector<std::string> texts = CorpusLines(400);
  ASSERT_GE(texts.size(), 100u);
  for (std::string& t : AdversarialTexts()) texts.push_back(std::move(t));
  ExpectMatchesReference({"gpt2", "smollm", "llama3", "qwen2"}, texts,
                         /*ignore_merges=*/false);
}

TEST(BpeTokenizerTest, IgnoreMergesMatchesPythonReference) {
  std::vector<std::string> texts = CorpusLines(50);
  for (std::string& t : AdversarialTexts()) texts.push_back(std::move(t));
  ExpectMatchesReference({"llama3"}, texts, /*ignore_merges=*/true);
}

TEST(BpeTokenizerTest, ChatMlPromptFromGguf) {
  auto gguf = GgufFile::Open(kSmolGguf);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto tokenizer = LoadGgufTokenizer(**gguf);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& t = **tokenizer;
  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_FALSE(t.add_bos());
  const std::vector<int32_t> ids = t.Encode(kChatMl, t.add_bos());
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_THAT(ids, Contains(2));
  const auto ref = RunReference({"smollm"}, {kChatMl}, false);
  ASSERT_EQ(ref.size(), 1u);
  ASSERT_EQ(ref[0].size(), 1u);
  EXPECT_EQ(ids, ref[0][0].ids);
  // Control tokens decode to nothing (skip_special_tokens).
  EXPECT_EQ(t.Decode(ids), "user\nWhat is the capital of France?\nassistant\n");
}

TEST(BpeTokenizerTest, SpecialTokensAreCutOutBeforePreTokenizing) {
  const auto t = SmolWith("smollm");
  const std::vector<int32_t> ids =
      t->Encode("<|im_start|>user\nHi<|im_end|>\n", false);
  const std::vector<int32_t> inner = t->Encode("user\nHi", false);
  std::vector<int32_t> expected = {1};
  expected.insert(expected.end(), inner.begin(), inner.end());
  expected.push_back(2);
  const std::vector<int32_t> newline = t->Encode("\n", false);
  expected.insert(expected.end(), newline.begin(), newline.end());
  EXPECT_EQ(ids, expected);
  // A partial special token is ordinary text.
  EXPECT_THAT(t->Encode("<|im_start|", false), ::testing::Not(Contains(1)));
  EXPECT_EQ(t->TokenBytes(-1, 1), "");
  EXPECT_EQ(t->TokenBytes(1, 2), "");
  EXPECT_EQ(t->TokenBytes(-1, 0), "");
  EXPECT_EQ(t->TokenBytes(-1, -5), "");
  EXPECT_EQ(t->TokenBytes(-1, 49152), "");
  EXPECT_EQ(t->Encode("x", true),
            (std::vector<int32_t>{1, t->Encode("x", false)[0]}));
}

TEST(BpeTokenizerTest, UserDefinedTokensKeepTheirText) {
  // A tiny vocab: bytes, one merge, a control and a user-defined token;
  // "<ud>" is longer than "<u" so wins (longest match first).
  BpeVocab v;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(BpeByteToUnicode(b));
  v.tokens.push_back("ab");
  v.tokens.push_back("<ctl>");
  v.tokens.push_back("<u");
  v.tokens.push_back("<ud>");
  v.token_types.assign(256 + 1, kBpeTokenNormal);
  v.token_types.push_back(kBpeTokenControl);
  v.token_types.push_back(kBpeTokenUserDefined);
  v.token_types.push_back(kBpeTokenUserDefined);
  v.merges = {"a b"};
  v.pre = "gpt2";
  auto t = MakeBpeTokenizer(v);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Encode("ab<ud><ctl><u", false),
              ElementsAre(256, 259, 257, 258));
  EXPECT_EQ((*t)->TokenBytes(-1, 259), "<ud>");
  EXPECT_EQ((*t)->TokenBytes(-1, 257), "");
  EXPECT_EQ((*t)->TokenBytes(-1, ' '), " ");  // 'Ġ' -> ' '
  EXPECT_EQ((*t)->Decode({256, 259, 257}), "ab<ud>");
  EXPECT_FALSE((*t)->add_bos());
}

// Random valid UTF-8 over all planes, weighted towards ASCII and spaces,
// without the bytes in `missing` (bytes the vocab has no token for).
std::string RandomText(std::mt19937& rng, const std::string& missing) {
  std::uniform_int_distribution<int> len(0, 40), kind(0, 9);
  std::uniform_int_distribution<uint32_t> ascii(0x01, 0x7F), bmp(0x80, 0xFFFF),
      astral(0x10000, 0x10FFFF);
  std::string s;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) {
    std::string c;
    uint32_t cp;
    const int k = kind(rng);
    if (k < 5) {
      cp = ascii(rng);
    } else if (k < 6) {
      cp = ' ';
    } else if (k < 9) {
      do cp = bmp(rng);
      while (cp >= 0xD800 && cp <= 0xDFFF);
    } else {
      cp = astral(rng);
    }
    if (cp < 0x80) {
      c += static_cast<char>(cp);
    } else if (cp < 0x800) {
      c += static_cast<char>(0xC0 | (cp >> 6));
      c += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      c += static_cast<char>(0xE0 | (cp >> 12));
      c += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      c += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      c += static_cast<char>(0xF0 | (cp >> 18));
      c += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      c += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      c += static_cast<char>(0x80 | (cp & 0x3F));
    }
    if (c.find_first_of(missing) == std::string::npos) s += c;
  }
  return s;
}

TEST(BpeTokenizerTest, DecodeInvertsEncodeOnRandomUtf8) {
  for (const char* pre : {"gpt2", "smollm", "llama3", "qwen2"}) {
    const auto t = SmolWith(pre);
    // SmolLM2 lacks tokens for 21 bytes (e.g. 0x04, 0xF1, 0xFF): those
    // become unk and cannot round-trip.
    std::string missing;
    for (int b = 1; b < 256; ++b) {
      const std::vector<int32_t> ids =
          t->Encode(std::string(1, static_cast<char>(b)), false);
      if (ids.size() != 1 || t->TokenBytes(-1, ids[0]).size() != 1) {
        missing += static_cast<char>(b);
      }
    }
    EXPECT_EQ(missing.size(), 21u);
    std::mt19937 rng(1234);
    for (int i = 0; i < 400; ++i) {
      const std::string text = RandomText(rng, missing);
      const std::vector<int32_t> ids = t->Encode(text, false);
      ASSERT_EQ(t->Decode(ids), text) << pre << " " << Json(text).dump();
      // Pre-tokens are non-empty and concatenate to the text.
      std::string joined;
      for (const std::string& p : Pieces(*PreTokenizerFromName(pre), text)) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, text);
    }
  }
}

TEST(BpeTokenizerTest, InvalidUtf8StillEncodesEveryByte) {
  // A vocab with a token for every byte.
  BpeVocab v;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(BpeByteToUnicode(b));
  v.pre = "smollm";
  auto t = MakeBpeTokenizer(v);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string bad = "a\xff\xfe b\xc3 \xe2\x82 \xed\xa0\x80z\x04 1";
  std::string bytes;
  for (int32_t id : (*t)->Encode(bad, false)) bytes += (*t)->TokenBytes(-1, id);
  EXPECT_EQ(bytes, bad);
  // SmolLM2 has no token for 0xFF or 0x04: they become unk (id 0).
  EXPECT_THAT(SmolWith("smollm")->Encode("\xff\x04", false), ElementsAre(0, 0));
}

TEST(BpeTokenizerTest, EncodeIsThreadSafe) {
  const auto t = SmolWith("smollm");
  const std::vector<std::string> lines = CorpusLines(100);
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& l : lines) expected.push_back(t->Encode(l, false));
  std::vector<std::thread> threads;
  std::vector<int> errors(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = 0; i < lines.size(); ++i) {
        if (t->Encode(lines[(i + k * 7) % lines.size()], false) !=
            expected[(i + k * 7) % lines.size()]) {
          ++errors[k];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(errors, ElementsAre(0, 0, 0, 0));
}

TEST(BpeTokenizerTest, HfTokenizerJsonRoundTrip) {
  std::vector<std::string> texts = CorpusLines(200);
  for (std::string& t : AdversarialTexts()) texts.push_back(std::move(t));
  for (const char* pre : {"smollm", "gpt2", "llama3", "qwen2"}) {
    BpeVocab v = SmolVocab();
    v.pre = pre;
    v.add_bos = std::string(pre) == "llama3";
    v.ignore_merges = std::string(pre) == "llama3";
    const std::string dir = TempDir();
    ASSERT_TRUE(WriteHfTokenizerJson(v, dir, "{{ messages }}").ok());
    auto loaded = ReadHfTokenizerJson(dir + "/tokenizer.json");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->tokens, v.tokens);
    EXPECT_EQ(loaded->merges, v.merges);
    EXPECT_EQ(*PreTokenizerFromName(loaded->pre), *PreTokenizerFromName(pre));
    EXPECT_EQ(loaded->bos_id, v.bos_id);
    EXPECT_EQ(loaded->eos_id, v.eos_id);
    EXPECT_EQ(loaded->unk_id, v.unk_id);
    EXPECT_EQ(loaded->add_bos, v.add_bos);
    EXPECT_EQ(loaded->ignore_merges, v.ignore_merges);
    auto a = MakeBpeTokenizer(v);
    ASSERT_TRUE(a.ok());
    // Through LoadTokenizer(dir): tokenizer.json is found and preferred.
    auto b = LoadTokenizer(dir, 0);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->add_bos(), v.add_bos);
    for (const std::string& text : texts) {
      ASSERT_EQ((*a)->Encode(text, true), (*b)->Encode(text, true))
          << pre << " " << Json(text).dump();
    }
    std::ifstream config(dir + "/tokenizer_config.json");
    const Json c = Json::parse(config);
    EXPECT_EQ(c["chat_template"], "{{ messages }}");
    EXPECT_EQ(c["bos_token"], "<|im_start|>");
    std::filesystem::remove_all(dir);
  }
}

// Writes `tokenizer_json` into a fresh directory; returns its path.
std::string WriteJson(const Json& tokenizer_json) {
  const std::string dir = TempDir();
  std::ofstream(dir + "/tokenizer.json") << tokenizer_json.dump();
  return dir + "/tokenizer.json";
}

Json TinyHfJson() {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[BpeByteToUnicode(b)] = b;
  vocab["ab"] = 256;
  vocab["<s>"] = 257;
  return Json{
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", Json::array({Json::array({"a", "b"})})}}},
      {"added_tokens",
       Json::array({{{"id", 257}, {"content", "<s>"}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}}}},
                                {{"Sequence", {{"id", "A"}}}}})}}}};
}

TEST(BpeTokenizerTest, HfJsonPairMergesAndTemplateBos) {
  const std::string path = WriteJson(TinyHfJson());
  auto t = LoadHfTokenizerJson(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_id(), 257);
  EXPECT_EQ((*t)->eos_id(), -1);
  EXPECT_TRUE((*t)->add_bos());
  EXPECT_THAT((*t)->Encode("ab<s>a", true), ElementsAre(257, 256, 257, 'a'));
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST(BpeTokenizerTest, MalformedInputsAreInvalidArgument) {
  auto expect_invalid = [](absl::Status s, const std::string& what) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument)
        << what << ": " << s;
  };
  BpeVocab base;
  for (int b = 0; b < 256; ++b) base.tokens.push_back(BpeByteToUnicode(b));
  base.tokens.push_back("ab");
  base.merges = {"a b"};
  base.pre = "gpt2";
  ASSERT_TRUE(MakeBpeTokenizer(base).ok());
  for (const char* merge : {"ab", "a  b", " a", "a b c", "a x", "b a"}) {
    BpeVocab v = base;
    v.merges = {merge};
    expect_invalid(MakeBpeTokenizer(v).status(), merge);
  }
  {
    BpeVocab v = base;
    v.pre = "klingon";
    expect_invalid(MakeBpeTokenizer(v).status(), "pre");
    v.pre = "";
    expect_invalid(MakeBpeTokenizer(v).status(), "empty pre");
  }
  {
    BpeVocab v = base;
    v.tokens.push_back("ab");
    expect_invalid(MakeBpeTokenizer(v).status(), "duplicate");
  }
  for (int32_t id : {-2, 257, 1000}) {
    BpeVocab v = base;
    v.eos_id = id;
    expect_invalid(MakeBpeTokenizer(v).status(), "eos");
    v.eos_id = -1;
    v.bos_id = id;
    expect_invalid(MakeBpeTokenizer(v).status(), "bos");
  }
  {
    BpeVocab v = base;
    v.token_types = {1, 1};
    expect_invalid(MakeBpeTokenizer(v).status(), "types");
  }
  // tokenizer.json.
  const std::string dir = TempDir();
  std::ofstream(dir + "/tokenizer.json") << "{\"model\": {";
  expect_invalid(LoadHfTokenizerJson(dir + "/tokenizer.json").status(),
                 "truncated json");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(LoadHfTokenizerJson("/nonexistent/tokenizer.json").status().code(),
            absl::StatusCode::kNotFound);
  auto invalid_json = [&](Json j, const std::string& what) {
    const std::string path = WriteJson(j);
    absl::Status s = LoadHfTokenizerJson(path).status();
    expect_invalid(s, what);
    std::filesystem::remove_all(std::filesystem::path(path).parent_path());
    return std::string(s.message());
  };
  {
    Json j = TinyHfJson();
    j["pre_tokenizer"] = {{"type", "Whitespace"}};
    EXPECT_THAT(invalid_json(j, "pre"), ::testing::HasSubstr("Whitespace"));
  }
  {
    Json j = TinyHfJson();
    j["pre_tokenizer"]["add_prefix_space"] = true;
    invalid_json(j, "prefix space");
  }
  {
    Json j = TinyHfJson();
    j["model"]["type"] = "WordPiece";
    invalid_json(j, "model type");
  }
  {
    Json j = TinyHfJson();
    j["model"]["merges"] = Json::array({"a"});
    invalid_json(j, "merge");
  }
  {
    Json j = TinyHfJson();
    j["model"]["vocab"].erase("ab");
    j["model"]["vocab"]["zz"] = 300;
    invalid_json(j, "gap");
  }
  // An id far beyond the entries is refused before anything is sized by it
  // (fuzz_tokenizer_json: 2^31 - 2 asked for 17 GB), in vocab and in
  // added_tokens.
  for (const char* where : {"vocab", "added_tokens"}) {
    Json j = TinyHfJson();
    if (std::string(where) == "vocab") {
      j["model"]["vocab"]["zz"] = 2147483646;
    } else {
      j["added_tokens"][0]["id"] = 2147483646;
    }
    EXPECT_THAT(invalid_json(j, where), ::testing::HasSubstr("out of range"));
  }
  {
    Json j = TinyHfJson();
    j["normalizer"] = {{"type", "NFC"}};
    EXPECT_THAT(invalid_json(j, "normalizer"), ::testing::HasSubstr("NFC"));
  }
}

TEST(BpeTokenizerTest, LoadTokenizerFindsGgufFilesAndDirectories) {
  auto from_file = LoadTokenizer(kSmolGguf, 0);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  const std::string dir = TempDir();
  std::filesystem::create_symlink(kSmolGguf, dir + "/model.gguf");
  auto from_dir = LoadTokenizer(dir, 0);
  ASSERT_TRUE(from_dir.ok()) << from_dir.status();
  EXPECT_EQ((*from_dir)->Encode(kChatMl, false),
            (*from_file)->Encode(kChatMl, false));
  std::filesystem::create_symlink(kSmolGguf, dir + "/other.gguf");
  EXPECT_EQ(LoadTokenizer(dir, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
  const std::string empty = TempDir();
  EXPECT_EQ(LoadTokenizer(empty, 0).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(empty);
}

}  // namespace
}  // namespace latentkv::model
