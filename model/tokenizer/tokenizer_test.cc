#include "model/tokenizer/tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer/sentencepiece_backend.h"
#include "model/tokenizer/tokenizer_test_sp_util.h"

namespace latentkv::model {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kTok512Path[] =
    LATENTKV_SHARED_DIR "/models/stories260K/tok512.bin";
constexpr char kTextPath[] =
    LATENTKV_SHARED_DIR "/text/tinystories_train_excerpt.txt";
constexpr char kUnusualText[] =
    "h\xC3\xA9llo w\xC3\xB6rld \xE6\x97\xA5\xE6\x9C\xAC "
    "\xF0\x9F\x99\x82";  // "héllo wörld 日本 🙂"
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, std::string_view data) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::vector<std::string> ReadLines(size_t max_lines) {
  std::ifstream file(kTextPath);
  std::vector<std::string> lines;
  std::string line;
  while (lines.size() < max_lines && std::getline(file, line)) {
    lines.push_back(line);
  }
  return lines;
}

// A fresh directory under the gtest temp dir.
std::string MakeTempDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("latentkv_tokenizer_test_", getpid(), "_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Independent UTF-8 validation (RFC 3629): decodes code points and checks
// ranges, over-long forms and surrogates.
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      n = 1;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      n = 2;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      n = 3;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated
    for (int k = 1; k <= n; ++k) {
      const uint8_t c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// ---------------------------------------------------------------------------
// An independent transcription of llama2.c run.c `encode`: sorted vocabulary
// with binary search and the O(n^2) merge loop. The oracle for the fast BPE.
class NaiveRunCEncoder {
 public:
  explicit NaiveRunCEncoder(const std::string& path) {
    const std::string data = ReadFile(path);
    size_t off = 0;
    int32_t max_len = 0;
    std::memcpy(&max_len, data.data(), 4);
    off += 4;
    while (off < data.size()) {
      float score;
      int32_t len;
      std::memcpy(&score, data.data() + off, 4);
      std::memcpy(&len, data.data() + off + 4, 4);
      off += 8;
      vocab_.emplace_back(data.substr(off, len));
      scores_.push_back(score);
      off += len;
    }
    for (size_t i = 0; i < vocab_.size(); ++i) {
      sorted_.emplace_back(vocab_[i], static_cast<int>(i));
    }
    std::sort(sorted_.begin(), sorted_.end());
  }

  int StrLookup(const std::string& s) const {
    auto it =
        std::lower_bound(sorted_.begin(), sorted_.end(), std::make_pair(s, -1));
    return it != sorted_.end() && it->first == s ? it->second : -1;
  }

  std::vector<int32_t> Encode(const std::string& text, bool bos) const {
    std::vector<int32_t> tokens;
    if (bos) tokens.push_back(1);
    if (!text.empty()) tokens.push_back(StrLookup(" "));
    std::string buf;
    const char* c = text.c_str();
    for (; *c != '\0'; ++c) {
      if ((*c & 0xC0) != 0x80) buf.clear();
      buf.push_back(*c);
      if ((*(c + 1) & 0xC0) == 0x80 && buf.size() < 4) continue;
      const int id = StrLookup(buf);
      if (id != -1) {
        tokens.push_back(id);
      } else {
        for (char b : buf) tokens.push_back(static_cast<unsigned char>(b) + 3);
      }
      buf.clear();
    }
    while (true) {
      float best_score = -1e10f;
      int best_id = -1;
      int best_idx = -1;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        const int id = StrLookup(vocab_[tokens[i]] + vocab_[tokens[i + 1]]);
        if (id != -1 && scores_[id] > best_score) {
          best_score = scores_[id];
          best_id = id;
          best_idx = static_cast<int>(i);
        }
      }
      if (best_idx == -1) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + best_idx + 1);
    }
    return tokens;
  }

 private:
  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::vector<std::pair<std::string, int>> sorted_;
};

std::unique_ptr<Tokenizer> LoadTok512() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadLlama2cTokenizer(kTok512Path, 512);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// Pushes tokens one at a time; every emitted piece must be valid UTF-8.
// Returns the concatenation (flushed).
std::string StreamDecode(const Tokenizer& tok,
                         const std::vector<int32_t>& tokens) {
  StreamingDetokenizer detok(tok, tok.bos_id());
  std::string text;
  size_t start = !tokens.empty() && tokens[0] == tok.bos_id() ? 1 : 0;
  for (size_t i = start; i < tokens.size(); ++i) {
    const std::string piece = detok.Push(tokens[i]);
    EXPECT_TRUE(IsValidUtf8(piece)) << "token #" << i << " emitted a partial "
                                    << "or invalid UTF-8 piece";
    text += piece;
  }
  const std::string tail = detok.Flush();
  EXPECT_TRUE(IsValidUtf8(tail));
  return text + tail;
}

// ---------------------------------------------------------------------------
// llama2.c tokenizer

TEST(Llama2cTokenizerTest, LoadsTok512) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->TokenBytes(0, 1), "");
  EXPECT_EQ(tok->TokenBytes(0, 2), "");
  EXPECT_EQ(tok->TokenBytes(0, 3 + 'A'), "A");
  EXPECT_EQ(tok->TokenBytes(0, 3 + 0xE6), "\xE6");
  EXPECT_EQ(tok->TokenBytes(0, 512), "");
  EXPECT_EQ(tok->TokenBytes(0, -1), "");
}

TEST(Llama2cTokenizerTest, OnceUponATime) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  const std::string text = "Once upon a time";
  const std::vector<int32_t> ids = tok->Encode(text, /*add_bos=*/true);
  std::printf("\"%s\" with BOS -> [%s]\n", text.c_str(),
              absl::StrJoin(ids, ", ").c_str());
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  NaiveRunCEncoder naive(kTok512Path);
  EXPECT_THAT(ids, ElementsAreArray(naive.Encode(text, true)));
  EXPECT_EQ(tok->Decode(ids), text);
  // Without BOS, Decode still starts as after BOS.
  const std::vector<int32_t> no_bos = tok->Encode(text, /*add_bos=*/false);
  EXPECT_THAT(no_bos, ElementsAreArray(ids.begin() + 1, ids.end()));
  EXPECT_EQ(tok->Decode(no_bos), text);
  // The first piece carries the dummy-prefix space, dropped after BOS only.
  EXPECT_EQ(tok->TokenBytes(1, ids[1])[0], 'O');
  EXPECT_EQ(tok->TokenBytes(ids[1], ids[1])[0], ' ');
}

TEST(Llama2cTokenizerTest, EmptyText) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("", true), ElementsAreArray({1}));
  EXPECT_TRUE(tok->Encode("", false).empty());
  EXPECT_EQ(tok->Decode({}), "");
  EXPECT_EQ(tok->Decode({1}), "");
  EXPECT_EQ(tok->Decode({1, 2}), "");
}

TEST(Llama2cTokenizerTest, RoundTripsFirst200Lines) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> lines = ReadLines(200);
  ASSERT_EQ(lines.size(), 200u);
  for (const std::string& line : lines) {
    const std::vector<int32_t> ids = tok->Encode(line, true);
    EXPECT_EQ(tok->Decode(ids), line);
    EXPECT_EQ(StreamDecode(*tok, ids), line);
  }
}

TEST(Llama2cTokenizerTest, ByteFallbackRoundTrips) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode(kUnusualText, true);
  EXPECT_TRUE(std::any_of(ids.begin(), ids.end(),
                          [](int32_t id) { return id >= 3 && id <= 258; }));
  // 🙂 = F0 9F 99 82 is not in a 512-token vocabulary: four byte tokens.
  const std::vector<int32_t> smile = {3 + 0xF0, 3 + 0x9F, 3 + 0x99, 3 + 0x82};
  EXPECT_TRUE(std::search(ids.begin(), ids.end(), smile.begin(), smile.end()) !=
              ids.end());
  EXPECT_EQ(tok->Decode(ids), kUnusualText);
  EXPECT_EQ(StreamDecode(*tok, ids), kUnusualText);
  // Newlines and tabs fall back to bytes too.
  const std::string multi = "line one\n\tline two\r\n";
  EXPECT_EQ(tok->Decode(tok->Encode(multi, true)), multi);
}

TEST(Llama2cTokenizerTest, MatchesNaiveRunCEncodeOnAllLines) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  NaiveRunCEncoder naive(kTok512Path);
  const std::vector<std::string> lines = ReadLines(1 << 20);
  ASSERT_GT(lines.size(), 2000u);
  size_t mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool bos = i % 2 == 0;
    const std::vector<int32_t> fast = tok->Encode(lines[i], bos);
    const std::vector<int32_t> slow = naive.Encode(lines[i], bos);
    if (fast != slow) {
      ++mismatches;
      ADD_FAILURE() << "line " << i << " encodes differently: " << lines[i];
    }
    if (mismatches > 5) break;
  }
  // Odd inputs: invalid UTF-8, long runs of continuation bytes, stray bytes,
  // several lines with newlines, repeated characters (many equal scores).
  const std::vector<std::string> odd = {
      "\x80\x80\x80\x80\x80\x80 abc",
      "\xE6\x97",
      "a\xF0\x9F\x99\x82\x82\x82\x82\x82 b",
      "\xFF\xFE plain",
      std::string(300, 'a'),
      std::string(301, ' '),
      "aaaa bbbb aaaa bbbb  the the the",
      lines[0] + "\n" + lines[1] + "\n\n" + lines[2],
      kUnusualText,
  };
  for (const std::string& text : odd) {
    EXPECT_EQ(tok->Encode(text, true), naive.Encode(text, true)) << text;
    EXPECT_EQ(tok->Encode(text, false), naive.Encode(text, false)) << text;
  }
}

TEST(Llama2cTokenizerTest, EncodeSpeed) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  const std::string text = ReadFile(kTextPath);
  ASSERT_GT(text.size(), 100000u);
  // The whole file as one prompt.
  auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok->Encode(text, true);
  const double whole_ms = std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now() - start)
                              .count();
  EXPECT_EQ(tok->Decode(ids), text);
  // A prefix of about 4000 tokens.
  size_t prefix_bytes = text.size() * 4000 / ids.size();
  const std::string prefix = text.substr(0, prefix_bytes);
  start = std::chrono::steady_clock::now();
  const std::vector<int32_t> prefix_ids = tok->Encode(prefix, true);
  const double prefix_ms = std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - start)
                               .count();
  std::printf(
      "encode: whole file %zu bytes -> %zu tokens in %.2f ms (%.1f MB/s); "
      "%zu tokens in %.2f ms\n",
      text.size(), ids.size(), whole_ms, text.size() / whole_ms / 1e3,
      prefix_ids.size(), prefix_ms);
  // Generous bound (shared CI machines); typical is well under 20 ms.
  EXPECT_LT(prefix_ms, 100.0);
}

TEST(Llama2cTokenizerTest, EncodeIsThreadSafe) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> lines = ReadLines(400);
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& line : lines) {
    expected.push_back(tok->Encode(line, true));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (size_t i = 0; i < lines.size(); ++i) {
        if (tok->Encode(lines[i], true) != expected[i]) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// ---------------------------------------------------------------------------
// Corrupt files

// Serializes a llama2.c tokenizer file.
std::string MakeTokenizerFile(int32_t max_len,
                              const std::vector<std::string>& pieces) {
  std::string out(reinterpret_cast<const char*>(&max_len), 4);
  for (const std::string& piece : pieces) {
    const float score = 0;
    const int32_t len = static_cast<int32_t>(piece.size());
    out.append(reinterpret_cast<const char*>(&score), 4);
    out.append(reinterpret_cast<const char*>(&len), 4);
    out += piece;
  }
  return out;
}

std::vector<std::string> MinimalPieces() {
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    pieces.push_back(buf);
  }
  pieces.push_back(" ");
  pieces.push_back("a");
  pieces.push_back(" a");
  return pieces;
}

TEST(Llama2cTokenizerTest, RejectsCorruptFiles) {
  const std::string dir = MakeTempDir("corrupt");
  const std::string original = ReadFile(kTok512Path);
  ASSERT_EQ(original.size(), 6227u);
  auto load = [&](std::string_view data, int32_t vocab_size) {
    const std::string path = dir + "/tokenizer.bin";
    WriteFile(path, data);
    return LoadLlama2cTokenizer(path, vocab_size).status();
  };

  // Truncated anywhere.
  for (size_t size : {size_t{0}, size_t{3}, size_t{100}, original.size() - 1}) {
    absl::Status status = load(original.substr(0, size), 512);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_THAT(status.message(), HasSubstr("truncated")) << status;
  }
  // vocab_size mismatch, either way.
  absl::Status status = load(original, 500);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("vocab_size mismatch")) << status;
  status = load(original, 513);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("truncated")) << status;
  EXPECT_EQ(load(original, -1).code(), absl::StatusCode::kInvalidArgument);
  // vocab_size 0 reads the whole file.
  EXPECT_TRUE(load(original, 0).ok());

  // A hand-made valid file, then broken ones.
  const std::vector<std::string> pieces = MinimalPieces();
  std::string good = MakeTokenizerFile(6, pieces);
  ASSERT_TRUE(load(good, static_cast<int32_t>(pieces.size())).ok());
  {
    // Negative length of the last token.
    std::string bad = good;
    const int32_t neg = -5;
    std::memcpy(bad.data() + bad.size() - 2 - 4, &neg, 4);
    status = load(bad, static_cast<int32_t>(pieces.size()));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("negative length")) << status;
  }
  {
    // A piece longer than max_token_length.
    std::vector<std::string> long_pieces = pieces;
    long_pieces.push_back("abcdefgh");
    status = load(MakeTokenizerFile(6, long_pieces),
                  static_cast<int32_t>(long_pieces.size()));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("max_token_length")) << status;
  }
  {
    // A huge length (would read past the end).
    std::string bad = good;
    const int32_t huge = 1 << 30;
    std::memcpy(bad.data() + bad.size() - 2 - 4, &huge, 4);
    status = load(bad, static_cast<int32_t>(pieces.size()));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  }
  {
    // Non-positive max_token_length.
    std::string bad = MakeTokenizerFile(0, pieces);
    EXPECT_EQ(load(bad, static_cast<int32_t>(pieces.size())).code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    // Byte-fallback tokens missing.
    std::vector<std::string> no_bytes = {"<unk>", "<s>", "</s>", " ", "a"};
    EXPECT_EQ(load(MakeTokenizerFile(6, no_bytes), 5).code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(LoadLlama2cTokenizer(dir + "/missing.bin", 512).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(Llama2cTokenizerTest, HandMadeVocabularyMerges) {
  const std::string dir = MakeTempDir("handmade");
  const std::vector<std::string> pieces = MinimalPieces();
  WriteFile(dir + "/tokenizer.bin", MakeTokenizerFile(6, pieces));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir, 0);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const int32_t space = 259, a = 260, space_a = 261;
  EXPECT_THAT((*tok)->Encode("a", true), ElementsAreArray({1, space_a}));
  EXPECT_THAT((*tok)->Encode("aa", false), ElementsAreArray({space_a, a}));
  EXPECT_THAT((*tok)->Encode("b", false),
              ElementsAreArray({space, 3 + int{'b'}}));
  EXPECT_EQ((*tok)->Decode((*tok)->Encode(" a a", true)), " a a");
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------
// LoadTokenizer

TEST(LoadTokenizerTest, PicksTokenizerBinOrReportsNotFound) {
  const std::string dir = MakeTempDir("load");
  absl::StatusOr<std::unique_ptr<Tokenizer>> missing = LoadTokenizer(dir, 512);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("tokenizer.model"));
  std::filesystem::copy_file(kTok512Path, dir + "/tokenizer.bin");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(dir, 512);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 512);
  EXPECT_EQ(LoadTokenizer(dir, 511).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A broken tokenizer.model takes precedence and is reported.
  WriteFile(dir + "/tokenizer.model", "not a model");
  EXPECT_FALSE(LoadTokenizer(dir, 512).ok());
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------
// Streaming detokenization

TEST(StreamingDetokenizerTest, HoldsIncompleteCharacters) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  StreamingDetokenizer detok(*tok, tok->bos_id());
  // 日 = E6 97 A5, 🙂 = F0 9F 99 82.
  EXPECT_EQ(detok.Push(3 + 0xE6), "");
  EXPECT_EQ(detok.Push(3 + 0x97), "");
  EXPECT_EQ(detok.Push(3 + 0xA5), "\xE6\x97\xA5");
  EXPECT_EQ(detok.Push(3 + 0xF0), "");
  EXPECT_EQ(detok.Push(3 + 0x9F), "");
  EXPECT_EQ(detok.Push(3 + 0x99), "");
  EXPECT_EQ(detok.Push(3 + 0x82), "\xF0\x9F\x99\x82");
  EXPECT_EQ(detok.Push(3 + 'x'), "x");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(StreamingDetokenizerTest, PiecesAreAlwaysValidUtf8) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->Encode(kUnusualText, true);
  EXPECT_EQ(StreamDecode(*tok, ids), tok->Decode(ids));
  // The mojibake in the excerpt (e.g. "â€œ") is valid UTF-8 of odd
  // characters; lines as a whole stream back identically.
  const std::vector<std::string> lines = ReadLines(2000);
  for (size_t i = 0; i < lines.size(); i += 7) {
    const std::vector<int32_t> line_ids = tok->Encode(lines[i], true);
    EXPECT_EQ(StreamDecode(*tok, line_ids), tok->Decode(line_ids));
  }
}

TEST(StreamingDetokenizerTest, InvalidBytesBecomeReplacementCharacter) {
  std::unique_ptr<Tokenizer> tok = LoadTok512();
  ASSERT_NE(tok, nullptr);
  auto decode_bytes = [&](std::string_view bytes) {
    std::vector<int32_t> ids;
    for (char c : bytes) ids.push_back(3 + static_cast<uint8_t>(c));
    return StreamDecode(*tok, ids);
  };
  const std::string r(kReplacement);
  EXPECT_EQ(decode_bytes("\xFF"), r);
  EXPECT_EQ(decode_bytes("a\x80z"), "a" + r + "z");
  EXPECT_EQ(decode_bytes("\xE6\x41"), r + "A");        // bad continuation
  EXPECT_EQ(decode_bytes("\xC0\x80"), r + r);          // over-long
  EXPECT_EQ(decode_bytes("\xE0\x80\x80"), r + r + r);  // over-long
  EXPECT_EQ(decode_bytes("\xED\xA0\x80"), r + r + r);  // surrogate
  EXPECT_EQ(decode_bytes("\xF4\x90\x80\x80"), r + r + r + r);  // > U+10FFFF
  EXPECT_EQ(decode_bytes("\xF0\x9F\x99"), r);  // incomplete at the end
  EXPECT_EQ(decode_bytes("\xF0\x9F\x99x"), r + "x");
  EXPECT_EQ(decode_bytes("\xE6\x97\xE6\x97\xA5"), r + "\xE6\x97\xA5");

  // Invalid lead bytes are replaced at once, not held.
  StreamingDetokenizer detok(*tok, tok->bos_id());
  EXPECT_EQ(detok.Push(3 + 0xFF), r);
  EXPECT_EQ(detok.Push(3 + 0xE6), "");
  EXPECT_EQ(detok.Flush(), r);
  EXPECT_EQ(detok.Flush(), "");
  EXPECT_EQ(tok->Decode({1, 3 + 0xE6}), r);
}

// ---------------------------------------------------------------------------
// SentencePiece

class SentencePieceTokenizerTest : public ::testing::Test {
 protected:
  // Three models, each in its own directory: BPE, UNIGRAM, and BPE without
  // the dummy prefix or whitespace clean-up. Identity normalisation: our
  // reader does not implement NFKC (see sentencepiece_model.h).
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("sentencepiece"));
    const std::vector<std::pair<std::string, std::string>> models = {
        {"bpe", "--model_type=bpe"},
        {"unigram", "--model_type=unigram"},
        {"bpe_raw",
         "--model_type=bpe --add_dummy_prefix=false "
         "--remove_extra_whitespaces=false"}};
    for (const auto& [name, flags] : models) {
      const std::string sub = *dir_ + "/" + name;
      std::filesystem::create_directories(sub);
      const std::string error = test_util::TrainSentencePiece(absl::StrCat(
          "--input=", kTextPath, " --model_prefix=", sub, "/sp ", flags,
          " --vocab_size=400 --byte_fallback=true "
          "--normalization_rule_name=identity "
          "--bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 "
          "--input_sentence_size=2000 --minloglevel=2"));
      ASSERT_EQ(error, "") << name;
      std::filesystem::rename(sub + "/sp.model", sub + "/tokenizer.model");
      subdirs_.push_back(sub);
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  static std::string* dir_;
  static std::vector<std::string> subdirs_;
};

std::string* SentencePieceTokenizerTest::dir_ = nullptr;
std::vector<std::string> SentencePieceTokenizerTest::subdirs_;

TEST_F(SentencePieceTokenizerTest, LoadsTrainedModel) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadTokenizer(subdirs_[0], 0);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 400);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  const std::vector<int32_t> ids = (*tok)->Encode("Once upon a time", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ((*tok)->Decode(ids), "Once upon a time");
  EXPECT_EQ((*tok)->TokenBytes(0, 1), "");
  EXPECT_EQ((*tok)->TokenBytes(0, 2), "");
}

TEST_F(SentencePieceTokenizerTest, EncodesAndDecodesExactlyLikeSentencePiece) {
  const std::vector<std::string> lines = ReadLines(100000);
  for (const std::string& sub : subdirs_) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(sub, 0);
    ASSERT_TRUE(tok.ok()) << tok.status();
    std::string error;
    std::unique_ptr<internal::SentencePieceBackend> reference =
        internal::SentencePieceBackend::Load(sub + "/tokenizer.model", &error);
    ASSERT_NE(reference, nullptr) << error;
    int mismatched = 0;
    for (const std::string& line : lines) {
      const std::vector<int32_t> ids = (*tok)->Encode(line, true);
      std::vector<int> ref_ids;
      ASSERT_TRUE(reference->Encode(line, &ref_ids, &error)) << error;
      if (std::vector<int32_t>(ids.begin() + 1, ids.end()) !=
          std::vector<int32_t>(ref_ids.begin(), ref_ids.end())) {
        if (++mismatched <= 3)
          ADD_FAILURE() << sub << ": ids differ on: " << line;
        continue;
      }
      const std::string decoded = (*tok)->Decode(ids);
      EXPECT_EQ(decoded, reference->DecodeIds(ref_ids)) << sub << ": " << line;
      EXPECT_EQ(StreamDecode(**tok, ids), decoded);
    }
    EXPECT_EQ(mismatched, 0) << sub << " of " << lines.size() << " lines";
  }
}

TEST_F(SentencePieceTokenizerTest, ByteFallbackAndStreaming) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadTokenizer(subdirs_[0], 0);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int32_t> ids = (*tok)->Encode(kUnusualText, false);
  EXPECT_EQ((*tok)->Decode(ids), kUnusualText);
  EXPECT_EQ(StreamDecode(**tok, ids), kUnusualText);
  // Streaming from "no previous token" (-1) also drops the dummy prefix.
  StreamingDetokenizer detok(**tok, -1);
  std::string text;
  for (int32_t id : ids) text += detok.Push(id);
  text += detok.Flush();
  EXPECT_EQ(text, kUnusualText);
}

TEST(SentencePieceLoadTest, MissingOrBrokenModel) {
  EXPECT_FALSE(LoadSentencePieceTokenizer("/nonexistent/tokenizer.model").ok());
  const std::string dir = MakeTempDir("broken_sp");
  WriteFile(dir + "/tokenizer.model", "garbage");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      LoadSentencePieceTokenizer(dir + "/tokenizer.model");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  // A byte piece that is not "<0xHH>" is refused (it threw std::stoi's
  // invalid_argument; found by tests/fuzz/fuzz_sentencepiece). ModelProto:
  // pieces {piece "<0xZZ>", type BYTE}, {piece "a"}; trainer_spec
  // {model_type BPE, unk_id 1, bos_id 1, eos_id 1}.
  const std::string model = std::string("\x0a\x0a\x0a\x06<0xZZ>\x18\x06", 12) +
                            std::string(
                                "\x0a\x03\x0a\x01"
                                "a",
                                5) +
                            std::string(
                                "\x12\x0b\x18\x02\xc0\x02\x01"
                                "\xc8\x02\x01\xd0\x02\x01",
                                13);
  WriteFile(dir + "/tokenizer.model", model);
  tok = LoadSentencePieceTokenizer(dir + "/tokenizer.model");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tok.status().message().find("byte piece"), std::string::npos)
      << tok.status();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace latentkv::model
