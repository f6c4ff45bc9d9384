// A GGUF SentencePiece vocabulary written as a model directory
// (WriteSentencePieceTokenizerDir: tokenizer.model + tokenizer_config.json,
// what `convert --from gguf` writes for Gemma) and read back through
// LoadTokenizer(dir): the same ids as the GGUF tokenizer on every text, and
// the written tokenizer.model is, to the real libsentencepiece, the same
// model as the one the test utilities write independently (ids equal on
// every text, piece by piece the same vocabulary). Also the
// tokenizer_config.json options of LoadSentencePieceTokenizer.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf/gguf_file.h"
#include "model/tokenizer/gguf_sentencepiece.h"
#include "model/tokenizer/sentencepiece_backend.h"
#include "model/tokenizer/sentencepiece_test_util.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace latentkv::model {
namespace {

using test_util::MakeVocab;
using test_util::ReferenceEncoder;
using test_util::Vocab;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("latentkv_sp_dir_test_", getpid(), "_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::vector<std::string> Texts() {
  std::vector<std::string> fragments = {" ",
                                        "  ",
                                        "\n",
                                        "\n\n",
                                        "\t",
                                        "<div>",
                                        "</div>",
                                        "ll",
                                        "\xE2\x96\x81",
                                        "\xC3\xA9",
                                        "\xFF",
                                        "\xF0\x9F\x99\x82",
                                        "<start_of_turn>",
                                        "<end_of_turn>",
                                        "<unk>",
                                        "<s>",
                                        "7",
                                        "x"};
  for (const std::string& w : test_util::Words()) fragments.push_back(w);
  std::vector<std::string> texts = test_util::TrickyTexts();
  for (std::string& t : test_util::RandomTexts(fragments, 1500, 23)) {
    texts.push_back(std::move(t));
  }
  for (std::string& t : test_util::StoryLines(200)) texts.push_back(t);
  return texts;
}

class SentencePieceDirTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = TempDir(GetParam() ? "gemma" : "llama");
    vocab_ = MakeVocab(GetParam());
    gguf_path_ = dir_ + "/vocab.gguf";
    ASSERT_TRUE(test_util::WriteGguf(vocab_, gguf_path_).ok());
    out_ = dir_ + "/converted";
    std::filesystem::create_directories(out_);
    auto gguf = GgufFile::Open(gguf_path_);
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto vocab = ReadGgufSentencePieceVocab(**gguf);
    ASSERT_TRUE(vocab.ok()) << vocab.status();
    ASSERT_TRUE(
        WriteSentencePieceTokenizerDir(*vocab, out_, "{{ messages }}").ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_, gguf_path_, out_;
  Vocab vocab_;
};

TEST_P(SentencePieceDirTest, DirectoryTokenizerEqualsTheGgufOne) {
  auto from_gguf = LoadTokenizer(gguf_path_, 0);
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.status();
  auto from_dir = LoadTokenizer(out_, 0);
  ASSERT_TRUE(from_dir.ok()) << from_dir.status();
  const Tokenizer& g = **from_gguf;
  const Tokenizer& d = **from_dir;
  EXPECT_EQ(d.vocab_size(), g.vocab_size());
  EXPECT_EQ(d.bos_id(), g.bos_id());
  EXPECT_EQ(d.eos_id(), g.eos_id());
  EXPECT_EQ(d.add_bos(), g.add_bos());
  int mismatches = 0;
  const std::vector<std::string> texts = Texts();
  for (const std::string& text : texts) {
    const std::vector<int32_t> want = g.Encode(text, /*add_bos=*/true);
    const std::vector<int32_t> got = d.Encode(text, /*add_bos=*/true);
    if (got != want && ++mismatches <= 5) {
      ADD_FAILURE() << "ids differ on \"" << text << "\"\n  dir: ["
                    << absl::StrJoin(got, ", ") << "]\n gguf: ["
                    << absl::StrJoin(want, ", ") << "]";
    }
    if (got == want) EXPECT_EQ(d.Decode(got), g.Decode(want)) << text;
  }
  EXPECT_EQ(mismatches, 0) << "of " << texts.size() << " texts";
  for (int32_t id = 0; id < g.vocab_size(); ++id) {
    ASSERT_EQ(d.TokenBytes(-1, id), g.TokenBytes(-1, id)) << id;
  }
  // Control tokens in the text are their ids (the chat template relies on
  // it), as in the GGUF.
  const std::vector<int32_t> chat = d.Encode("<start_of_turn>user", false);
  ASSERT_FALSE(chat.empty());
  EXPECT_EQ(chat.front(), vocab_.Id("<start_of_turn>"));

  const nlohmann::json cfg =
      nlohmann::json::parse(ReadFile(out_ + "/tokenizer_config.json"));
  EXPECT_EQ(cfg["chat_template"], "{{ messages }}");
  EXPECT_EQ(cfg["split_special_tokens"], false);
  EXPECT_EQ(cfg["add_bos_token"], true);
  EXPECT_EQ(cfg["bos_token"], GetParam() ? "<bos>" : "<s>");
  EXPECT_EQ(cfg["eos_token"], GetParam() ? "<eos>" : "</s>");
}

// libsentencepiece reads the written tokenizer.model as the model the test
// utilities serialize on their own from the GGUF (SpProtoFromGguf).
TEST_P(SentencePieceDirTest, LibSentencePieceReadsTheSameModel) {
  std::string error;
  auto written =
      internal::SentencePieceBackend::Load(out_ + "/tokenizer.model", &error);
  ASSERT_NE(written, nullptr) << error;
  auto gguf = GgufFile::Open(gguf_path_);
  ASSERT_TRUE(gguf.ok());
  auto proto = test_util::SpProtoFromGguf(**gguf);
  ASSERT_TRUE(proto.ok()) << proto.status();
  auto ref = ReferenceEncoder::Create(*proto, dir_, /*split_specials=*/false);
  ASSERT_TRUE(ref.ok()) << ref.status();

  ASSERT_EQ(written->piece_size(), static_cast<int>(vocab_.tokens.size()));
  for (int id = 0; id < written->piece_size(); ++id) {
    ASSERT_EQ(written->IdToPiece(id), proto->pieces[id]) << id;
    ASSERT_EQ(written->IsControl(id), proto->types[id] == test_util::kSpControl)
        << id;
    ASSERT_EQ(written->IsUnknown(id), proto->types[id] == test_util::kSpUnknown)
        << id;
    ASSERT_EQ(written->IsByte(id), proto->types[id] == test_util::kSpByte)
        << id;
  }
  const int bos = vocab_.Id(GetParam() ? "<bos>" : "<s>");
  const int eos = vocab_.Id(GetParam() ? "<eos>" : "</s>");
  EXPECT_EQ(written->bos_id(), bos);
  EXPECT_EQ(written->eos_id(), eos);
  int mismatches = 0;
  for (const std::string& text : Texts()) {
    std::vector<int> got;
    if (!written->Encode(text, &got, &error)) {
      ADD_FAILURE() << error;
      continue;
    }
    int specials = 0;
    const std::vector<int32_t> want = (*ref)->Encode(text, &specials);
    if (std::vector<int32_t>(got.begin(), got.end()) != want &&
        ++mismatches <= 5) {
      ADD_FAILURE() << "libsentencepiece ids differ on \"" << text << "\"";
    }
  }
  EXPECT_EQ(mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, SentencePieceDirTest,
                         ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "gemma" : "llama";
                         });

// tokenizer_config.json beside a tokenizer.model: HF's options, checked.
TEST(SentencePieceDirConfigTest, OptionsComeFromTokenizerConfig) {
  const std::string dir = TempDir("config");
  const Vocab v = MakeVocab(true);
  ASSERT_TRUE(test_util::WriteGguf(v, dir + "/v.gguf").ok());
  auto gguf = GgufFile::Open(dir + "/v.gguf");
  ASSERT_TRUE(gguf.ok());
  auto vocab = ReadGgufSentencePieceVocab(**gguf);
  ASSERT_TRUE(vocab.ok());
  const std::string out = dir + "/m";
  std::filesystem::create_directories(out);
  ASSERT_TRUE(WriteSentencePieceTokenizerDir(*vocab, out, "").ok());
  const int start = v.Id("<start_of_turn>");
  auto load = [&]() { return LoadTokenizer(out, 0); };

  // Written: specials split, BOS added, no template key.
  const nlohmann::json cfg =
      nlohmann::json::parse(ReadFile(out + "/tokenizer_config.json"));
  EXPECT_FALSE(cfg.contains("chat_template"));
  // No tokenizer_config.json: libsentencepiece's behaviour, the control
  // token is plain text.
  std::filesystem::remove(out + "/tokenizer_config.json");
  auto plain = load();
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE((*plain)->add_bos());
  EXPECT_NE((*plain)->Encode("<start_of_turn>", false),
            std::vector<int32_t>{start});
  // HF's keys.
  WriteFile(out + "/tokenizer_config.json",
            R"({"add_bos_token": false, "split_special_tokens": false})");
  auto hf = load();
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_FALSE((*hf)->add_bos());
  EXPECT_THAT((*hf)->Encode("<start_of_turn>", false), ElementsAre(start));
  WriteFile(out + "/tokenizer_config.json",
            R"({"split_special_tokens": true})");
  auto split = load();
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_TRUE((*split)->add_bos());
  EXPECT_NE((*split)->Encode("<start_of_turn>", false),
            std::vector<int32_t>{start});
  // Bad files are refused by name.
  for (const char* bad : {R"({"add_bos_token": "yes"})", "[1, 2]", "{oops"}) {
    WriteFile(out + "/tokenizer_config.json", bad);
    auto r = load();
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("tokenizer_config.json"));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace latentkv::model
