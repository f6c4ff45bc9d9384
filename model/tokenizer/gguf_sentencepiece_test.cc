// SentencePiece vocabularies in GGUF (tokenizer.ggml.model "llama") on small
// synthetic files written with GgufWriter: ids and decoding compared with
// the real libsentencepiece over the model the vocabulary stands for
// (sentencepiece_test_util.h), the ids the design promises, and hostile
// files. The real Gemma 3 vocabulary: gguf_sentencepiece_gemma_test.cc.
#include "model/tokenizer/gguf_sentencepiece.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf_file.h"
#include "model/gguf/gguf_writer.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/sentencepiece_test_util.h"
#include "model/tokenizer/tokenizer.h"

namespace latentkv::model {
namespace {

using test_util::MakeVocab;
using test_util::ReferenceEncoder;
using test_util::Vocab;
using test_util::Words;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string TempDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("latentkv_gguf_sp_test_", getpid(), "_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

absl::Status LoadStatus(const std::string& path) {
  auto gguf = GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  return LoadGgufTokenizer(**gguf).status();
}

// Decodes token by token through a StreamingDetokenizer started at BOS.
std::string StreamDecode(const Tokenizer& tok,
                         const std::vector<int32_t>& ids) {
  StreamingDetokenizer detok(tok, tok.bos_id());
  std::string text;
  for (int32_t id : ids) text += detok.Push(id);
  return text + detok.Flush();
}

class GgufSentencePieceTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = TempDir(GetParam() ? "gemma" : "llama");
    vocab_ = MakeVocab(GetParam());
    path_ = dir_ + "/vocab.gguf";
    ASSERT_TRUE(test_util::WriteGguf(vocab_, path_).ok());
    auto tok = LoadTokenizer(path_, 0);  // the serving path
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_, path_;
  Vocab vocab_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(GgufSentencePieceTest, EncodesAndDecodesLikeLibSentencePiece) {
  auto gguf = GgufFile::Open(path_);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto proto = test_util::SpProtoFromGguf(**gguf);
  ASSERT_TRUE(proto.ok()) << proto.status();
  auto ref = ReferenceEncoder::Create(*proto, dir_);
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<std::string> fragments = {" ",
                                        "  ",
                                        "   ",
                                        "\n",
                                        "\n\n",
                                        "\t",
                                        "<div>",
                                        "</div",
                                        "</div>",
                                        "<p>",
                                        "!",
                                        ",",
                                        "ll",
                                        "wor",
                                        "\xE2\x96\x81",
                                        "\xC3\xA9",
                                        "\xE6\x97\xA5\xE6\x9C\xAC",
                                        "\xF0\x9F\x99\x82",
                                        "\xFF",
                                        "<start_of_turn>",
                                        "<unk>",
                                        "<s>",
                                        "<end_of_turn>",
                                        "7",
                                        "x"};
  for (const std::string& w : Words()) fragments.push_back(w);
  std::vector<std::string> texts = test_util::TrickyTexts();
  for (std::string& t : test_util::RandomTexts(fragments, 3000, 11)) {
    texts.push_back(std::move(t));
  }
  for (std::string& t : test_util::StoryLines(300)) texts.push_back(t);
  int mismatches = 0, decoded = 0, with_specials = 0;
  for (const std::string& text : texts) {
    int specials = 0;
    const std::vector<int32_t> want = (*ref)->Encode(text, &specials);
    const std::vector<int32_t> got = tok_->Encode(text, /*add_bos=*/false);
    if (got != want) {
      if (++mismatches <= 5) {
        ADD_FAILURE() << "ids differ on \"" << text << "\"\n ours: ["
                      << absl::StrJoin(got, ", ") << "]\n  ref: ["
                      << absl::StrJoin(want, ", ") << "]";
      }
      continue;
    }
    const std::string ours = tok_->Decode(got);
    EXPECT_EQ(StreamDecode(*tok_, got), ours) << text;
    if (specials > 0) {
      ++with_specials;
      continue;  // DecodeIds skips control ids the same way; not compared
    }
    EXPECT_EQ(ours, (*ref)->DecodeIds(want)) << text;
    ++decoded;
  }
  EXPECT_EQ(mismatches, 0) << "of " << texts.size() << " texts";
  std::printf(
      "%zu texts: ids equal; %d decoded as DecodeIds, %d with "
      "control tokens cut out\n",
      texts.size(), decoded, with_specials);
  // BOS is prepended on request.
  const std::vector<int32_t> with_bos = tok_->Encode("hello", true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], tok_->bos_id());
}

TEST_P(GgufSentencePieceTest, SpecialIdsAndFlags) {
  EXPECT_EQ(tok_->vocab_size(), static_cast<int32_t>(vocab_.tokens.size()));
  EXPECT_TRUE(tok_->add_bos());  // key true (gemma) or absent (llama)
  if (GetParam()) {
    EXPECT_EQ(tok_->bos_id(), 2);
    EXPECT_EQ(tok_->eos_id(), 1);
    // No dummy prefix: "hello" is not "\u2581hello".
    EXPECT_THAT(tok_->Encode("hello", false),
                Not(Contains(vocab_.Id("\xE2\x96\x81hello"))));
  } else {
    EXPECT_EQ(tok_->bos_id(), 1);  // llama.cpp's defaults
    EXPECT_EQ(tok_->eos_id(), 2);
    EXPECT_THAT(tok_->Encode("hello", false),
                ElementsAre(vocab_.Id("\xE2\x96\x81hello")));
  }
  EXPECT_EQ(tok_->Decode(tok_->Encode("hello world", true)), "hello world");
  EXPECT_EQ(tok_->TokenBytes(-1, tok_->bos_id()), "");
  EXPECT_EQ(tok_->TokenBytes(-1, tok_->eos_id()), "");
  EXPECT_EQ(tok_->TokenBytes(-1, vocab_.Id("<0x41>")), "A");
  EXPECT_EQ(tok_->TokenBytes(-1, vocab_.Id("<unk>")), " \xE2\x81\x87 ");
  EXPECT_EQ(tok_->TokenBytes(-1, vocab_.tokens.size()), "");
}

TEST_P(GgufSentencePieceTest, UserDefinedAndControlTokens) {
  const int two_spaces = vocab_.Id("  ");
  const int newlines = vocab_.Id("\n\n");
  // User-defined whitespace tokens match (as "\u2581\u2581" in
  // SentencePiece's normalized text) and never merge with neighbours.
  EXPECT_THAT(tok_->Encode("a  b", false), Contains(two_spaces));
  EXPECT_THAT(tok_->Encode("x\n\ny", false), Contains(newlines));
  if (GetParam()) {
    EXPECT_THAT(tok_->Encode("\n\n", false), ElementsAre(newlines));
    EXPECT_THAT(tok_->Encode("  ", false), ElementsAre(two_spaces));
  }
  EXPECT_THAT(tok_->Encode("</div>", false), Contains(vocab_.Id("</div>")));
  // Control tokens written in the text become their ids.
  const int start = vocab_.Id("<start_of_turn>");
  const std::vector<int32_t> chat =
      tok_->Encode("<start_of_turn>user\nhi<end_of_turn>", false);
  ASSERT_GE(chat.size(), 3u);
  EXPECT_EQ(chat.front(), start);
  EXPECT_EQ(chat.back(), vocab_.Id("<end_of_turn>"));
  EXPECT_EQ(tok_->TokenBytes(-1, start), "");
  // The unused piece "ll" is never emitted: "ball" merges through it and
  // is split back.
  for (const char* text : {"ball", "tall will", "all", "world"}) {
    EXPECT_THAT(tok_->Encode(text, false), Not(Contains(vocab_.Id("ll"))))
        << text;
  }
  // Characters outside the vocabulary fall back to bytes.
  std::vector<int32_t> smile = tok_->Encode("\xF0\x9F\x99\x82", false);
  if (!GetParam()) {  // the dummy prefix first
    ASSERT_FALSE(smile.empty());
    EXPECT_EQ(smile[0], vocab_.Id("\xE2\x96\x81"));
    smile.erase(smile.begin());
  }
  EXPECT_THAT(smile, ElementsAre(vocab_.Id("<0xF0>"), vocab_.Id("<0x9F>"),
                                 vocab_.Id("<0x99>"), vocab_.Id("<0x82>")));
  EXPECT_TRUE(tok_->Encode("", false).empty());
  EXPECT_THAT(tok_->Encode("", true), ElementsAre(tok_->bos_id()));
}

INSTANTIATE_TEST_SUITE_P(Layouts, GgufSentencePieceTest,
                         ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "gemma" : "llama";
                         });

// The same vocabulary as a tokenizer.model file (LoadSentencePieceTokenizer:
// no special-token splitting) under every whitespace option: user-defined
// pieces in the normalizer and the BPE encoder, U+FFFD for invalid UTF-8,
// remove_extra_whitespaces around user-defined pieces.
TEST(SentencePieceModelFileTest, MatchesLibSentencePieceUnderAllOptions) {
  const std::string dir = TempDir("model_file");
  ASSERT_TRUE(test_util::WriteGguf(MakeVocab(true), dir + "/v.gguf").ok());
  auto gguf = GgufFile::Open(dir + "/v.gguf");
  ASSERT_TRUE(gguf.ok());
  auto proto = test_util::SpProtoFromGguf(**gguf);
  ASSERT_TRUE(proto.ok()) << proto.status();
  std::vector<std::string> fragments = {" ",
                                        "  ",
                                        "\n",
                                        "\n\n",
                                        "\t",
                                        "<p>",
                                        "</div>",
                                        "ll",
                                        "\xE2\x96\x81",
                                        "\xE2\x96\x81\xE2\x96\x81",
                                        "\xFF",
                                        "<s>",
                                        "\xC3\xA9",
                                        "x"};
  for (const std::string& w : Words()) fragments.push_back(w);
  std::vector<std::string> texts = test_util::TrickyTexts();
  for (std::string& t : test_util::RandomTexts(fragments, 1500, 3)) {
    texts.push_back(std::move(t));
  }
  for (int flags = 0; flags < 4; ++flags) {
    test_util::SpProto p = *proto;
    p.add_dummy_prefix = (flags & 1) != 0;
    p.remove_extra_whitespaces = (flags & 2) != 0;
    const std::string sub = absl::StrCat(dir, "/", flags);
    std::filesystem::create_directories(sub);
    std::ofstream(sub + "/tokenizer.model", std::ios::binary)
        << test_util::SerializeModelProto(p);
    auto tok = LoadSentencePieceTokenizer(sub + "/tokenizer.model");
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto ref = ReferenceEncoder::Create(p, sub, /*split_specials=*/false);
    ASSERT_TRUE(ref.ok()) << ref.status();
    int mismatches = 0;
    for (const std::string& text : texts) {
      int specials = 0;
      const std::vector<int32_t> want = (*ref)->Encode(text, &specials);
      const std::vector<int32_t> got = (*tok)->Encode(text, false);
      if (got != want && ++mismatches <= 3) {
        ADD_FAILURE() << "flags " << flags << ": ids differ on \"" << text
                      << "\"\n ours: [" << absl::StrJoin(got, ", ")
                      << "]\n  ref: [" << absl::StrJoin(want, ", ") << "]";
      }
      if (got == want) {
        EXPECT_EQ((*tok)->Decode(got), (*ref)->DecodeIds(want))
            << "flags " << flags << ": " << text;
      }
    }
    EXPECT_EQ(mismatches, 0) << "flags " << flags;
  }
  std::filesystem::remove_all(dir);
}

TEST(GgufSentencePieceLoadTest, RejectsHostileVocabularies) {
  const std::string dir = TempDir("hostile");
  const std::string path = dir + "/bad.gguf";
  const Vocab good = MakeVocab(true);
  const size_t n = good.tokens.size();
  ASSERT_TRUE(test_util::WriteGguf(good, path).ok());
  ASSERT_TRUE(LoadStatus(path).ok()) << LoadStatus(path);
  struct Case {
    std::string name;
    std::string key;  // must appear in the message
    std::function<void(Vocab*)> edit;
    std::set<std::string> skip;
    std::function<void(GgufWriter*)> more;
  };
  const std::vector<Case> cases = {
      {"short scores",
       "tokenizer.ggml.scores",
       [](Vocab* v) { v->scores.pop_back(); },
       {},
       nullptr},
      {"long types",
       "tokenizer.ggml.token_type",
       [](Vocab* v) { v->types.push_back(1); },
       {},
       nullptr},
      {"type 9",
       "tokenizer.ggml.token_type",
       [](Vocab* v) { v->types[7] = 9; },
       {},
       nullptr},
      {"type -1",
       "tokenizer.ggml.token_type",
       [](Vocab* v) { v->types[7] = -1; },
       {},
       nullptr},
      {"NaN score",
       "tokenizer.ggml.scores",
       [](Vocab* v) { v->scores[9] = std::numeric_limits<float>::quiet_NaN(); },
       {},
       nullptr},
      {"bad byte token",
       "tokenizer.ggml.tokens",
       [](Vocab* v) { v->tokens[v->Id("<0x41>")] = "<0xZZ>"; },
       {},
       nullptr},
      {"no tokens",
       "tokenizer.ggml.tokens",
       [](Vocab* v) {
         v->tokens.clear();
         v->scores.clear();
         v->types.clear();
       },
       {},
       nullptr},
      {"tokens missing",
       "tokenizer.ggml.tokens",
       nullptr,
       {"tokenizer.ggml.tokens"},
       nullptr},
      {"tokens not strings",
       "tokenizer.ggml.tokens",
       nullptr,
       {"tokenizer.ggml.tokens"},
       [](GgufWriter* w) { w->SetInt32Array("tokenizer.ggml.tokens", {1}); }},
      {"bos out of range",
       "tokenizer.ggml.bos_token_id",
       nullptr,
       {"tokenizer.ggml.bos_token_id"},
       [n](GgufWriter* w) {
         w->SetUint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(n));
       }},
      {"unk negative",
       "tokenizer.ggml.unknown_token_id",
       nullptr,
       {"tokenizer.ggml.unknown_token_id"},
       [](GgufWriter* w) {
         w->SetInt32("tokenizer.ggml.unknown_token_id", -7);
       }},
      {"eos huge",
       "tokenizer.ggml.eos_token_id",
       nullptr,
       {"tokenizer.ggml.eos_token_id"},
       [](GgufWriter* w) {
         w->SetUint32("tokenizer.ggml.eos_token_id", 0xFFFFFFFFu);
       }},
      {"add_space_prefix a string",
       "tokenizer.ggml.add_space_prefix",
       nullptr,
       {"tokenizer.ggml.add_space_prefix"},
       [](GgufWriter* w) {
         w->SetString("tokenizer.ggml.add_space_prefix", "yes");
       }},
  };
  for (const Case& c : cases) {
    Vocab v = good;
    if (c.edit) c.edit(&v);
    ASSERT_TRUE(test_util::WriteGguf(v, path, c.skip, c.more).ok());
    const absl::Status status = LoadStatus(path);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(c.key)) << c.name;
  }
  std::filesystem::remove_all(dir);
}

TEST(GgufSentencePieceLoadTest, OddButValidVocabularies) {
  const std::string dir = TempDir("odd");
  const std::string path = dir + "/odd.gguf";
  // Empty tokens of every type, a duplicate, no scores, no types, no keys.
  Vocab v = MakeVocab(true);
  for (int32_t type : {1, 3, 4, 5}) {
    v.tokens.push_back("");
    v.scores.push_back(0);
    v.types.push_back(type);
  }
  v.tokens.push_back("hello");
  v.scores.push_back(100);
  v.types.push_back(1);
  for (const auto& skip : std::vector<std::set<std::string>>{
           {},
           {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"},
           {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.add_space_prefix",
            "tokenizer.ggml.add_bos_token"}}) {
    ASSERT_TRUE(test_util::WriteGguf(v, path, skip).ok());
    auto tok = LoadTokenizer(path, 0);
    ASSERT_TRUE(tok.ok()) << tok.status();
    for (const std::string& text : test_util::TrickyTexts()) {
      const std::vector<int32_t> ids = (*tok)->Encode(text, true);
      for (int32_t id : ids) {
        ASSERT_TRUE(id >= 0 && id < (*tok)->vocab_size()) << text;
      }
      (void)(*tok)->Decode(ids);
    }
  }
  // One token, nothing else: no BOS/EOS (defaults 1, 2 are out of range).
  Vocab one;
  one.tokens = {"a"};
  one.scores = {0};
  one.types = {1};
  one.gemma = false;
  ASSERT_TRUE(test_util::WriteGguf(one, path).ok());
  auto tok = LoadTokenizer(path, 0);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), -1);
  EXPECT_THAT((*tok)->Encode("aba", true), ElementsAre(0, 0));  // b dropped
  std::filesystem::remove_all(dir);
}

TEST(GgufSentencePieceLoadTest, BpeVocabReaderRefusesSentencePiece) {
  const std::string dir = TempDir("bpe");
  ASSERT_TRUE(test_util::WriteGguf(MakeVocab(true), dir + "/v.gguf").ok());
  auto gguf = GgufFile::Open(dir + "/v.gguf");
  ASSERT_TRUE(gguf.ok());
  EXPECT_EQ(ReadGgufBpeVocab(**gguf).status().code(),
            absl::StatusCode::kUnimplemented);
  auto vocab = ReadGgufSentencePieceVocab(**gguf);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->spec.pieces[vocab->spec.unk_id], "<unk>");
  // "  " is stored as "\u2581\u2581" in the SentencePiece model.
  EXPECT_EQ(vocab->spec.pieces[MakeVocab(true).Id("  ")],
            "\xE2\x96\x81\xE2\x96\x81");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace latentkv::model
