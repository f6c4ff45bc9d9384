#include "model/tokenizer/sentencepiece_test_util.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "model/gguf/gguf_file.h"
#include "model/gguf/gguf_writer.h"
#include "model/tokenizer/sentencepiece_backend.h"

namespace latentkv::model::test_util {
namespace {

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutTag(int field, int wire_type, std::string* out) {
  PutVarint(static_cast<uint64_t>(field) << 3 | wire_type, out);
}

// int32 fields are varints of their int64 value (10 bytes when negative).
void PutInt(int field, int64_t v, std::string* out) {
  PutTag(field, 0, out);
  PutVarint(static_cast<uint64_t>(v), out);
}

void PutBytes(int field, std::string_view bytes, std::string* out) {
  PutTag(field, 2, out);
  PutVarint(bytes.size(), out);
  out->append(bytes);
}

void PutFloat(int field, float v, std::string* out) {
  PutTag(field, 5, out);
  char b[4];
  std::memcpy(b, &v, 4);
  out->append(b, 4);
}

}  // namespace

std::string SerializeModelProto(const SpProto& proto) {
  std::string out;
  for (size_t i = 0; i < proto.pieces.size(); ++i) {
    std::string piece;
    PutBytes(1, proto.pieces[i], &piece);
    PutFloat(2, proto.scores[i], &piece);
    PutInt(3, proto.types[i], &piece);
    PutBytes(1, piece, &out);
  }
  std::string trainer;
  PutInt(3, proto.model_type, &trainer);
  PutInt(4, static_cast<int64_t>(proto.pieces.size()), &trainer);
  PutInt(35, proto.byte_fallback, &trainer);
  PutInt(40, proto.unk_id, &trainer);
  PutInt(41, proto.bos_id, &trainer);
  PutInt(42, proto.eos_id, &trainer);
  PutInt(43, -1, &trainer);  // pad_id
  PutBytes(2, trainer, &out);
  std::string normalizer;
  PutBytes(1, "identity", &normalizer);
  PutInt(3, proto.add_dummy_prefix, &normalizer);
  PutInt(4, proto.remove_extra_whitespaces, &normalizer);
  PutInt(5, proto.escape_whitespaces, &normalizer);
  PutBytes(3, normalizer, &out);
  return out;
}

absl::StatusOr<SpProto> SpProtoFromGguf(const GgufFile& gguf) {
  SpProto proto;
  auto tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  auto scores = gguf.GetFloatArray("tokenizer.ggml.scores");
  if (!scores.ok()) return scores.status();
  auto types = gguf.GetIntArray("tokenizer.ggml.token_type");
  if (!types.ok()) return types.status();
  const size_t n = tokens->size();
  if (scores->size() != n || types->size() != n) {
    return absl::InvalidArgumentError("array lengths differ");
  }
  proto.pieces = *std::move(tokens);
  for (size_t i = 0; i < n; ++i) {
    proto.scores.push_back(static_cast<float>((*scores)[i]));
    int type = static_cast<int>((*types)[i]);
    if (type == 0) type = kSpNormal;
    if (type == kSpByte) proto.byte_fallback = true;
    if (type == kSpUserDefined) {
      proto.pieces[i] = absl::StrReplaceAll(proto.pieces[i], {{" ", "\u2581"}});
    }
    proto.types.push_back(type);
  }
  proto.unk_id = -1;
  if (gguf.Has("tokenizer.ggml.unknown_token_id")) {
    proto.unk_id = static_cast<int>(
        gguf.GetInt("tokenizer.ggml.unknown_token_id").value_or(-1));
  }
  for (size_t i = 0; i < n && proto.unk_id < 0; ++i) {
    if (proto.types[i] == kSpUnknown) proto.unk_id = static_cast<int>(i);
  }
  if (proto.unk_id < 0) return absl::InvalidArgumentError("no unknown token");
  proto.types[proto.unk_id] = kSpUnknown;
  proto.add_dummy_prefix =
      gguf.GetBool("tokenizer.ggml.add_space_prefix").value_or(true);
  proto.bos_id =
      static_cast<int>(gguf.GetInt("tokenizer.ggml.bos_token_id").value_or(1));
  proto.eos_id =
      static_cast<int>(gguf.GetInt("tokenizer.ggml.eos_token_id").value_or(2));
  return proto;
}

absl::StatusOr<std::unique_ptr<ReferenceEncoder>> ReferenceEncoder::Create(
    const SpProto& proto, const std::string& dir, bool split_specials) {
  const std::string path = dir + "/reference.model";
  {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    const std::string bytes = SerializeModelProto(proto);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file) return absl::InternalError("cannot write " + path);
  }
  std::unique_ptr<ReferenceEncoder> r(new ReferenceEncoder());
  std::string error;
  r->sp_ = internal::SentencePieceBackend::Load(path, &error);
  if (r->sp_ == nullptr) {
    return absl::InvalidArgumentError("libsentencepiece: " + error);
  }
  r->specials_.resize(256);
  for (size_t i = 0; i < proto.pieces.size(); ++i) {
    const std::string& p = proto.pieces[i];
    if (p.empty() || !split_specials) continue;
    if (proto.types[i] == kSpControl || proto.types[i] == kSpUnknown) {
      r->specials_[static_cast<uint8_t>(p[0])].emplace_back(
          p, static_cast<int>(i));
    }
  }
  return r;
}

std::vector<int32_t> ReferenceEncoder::Encode(std::string_view text,
                                              int* specials) const {
  std::vector<int32_t> out;
  *specials = 0;
  auto encode = [&](std::string_view stretch) {
    if (stretch.empty()) return;
    std::vector<int> ids;
    std::string error;
    if (!sp_->Encode(stretch, &ids, &error)) {
      ids.assign(1, -1000);  // makes the comparison fail visibly
    }
    out.insert(out.end(), ids.begin(), ids.end());
  };
  size_t start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best_len = 0;
    int best_id = -1;
    for (const auto& [piece, id] : specials_[static_cast<uint8_t>(text[pos])]) {
      if (piece.size() > best_len && text.substr(pos, piece.size()) == piece) {
        best_len = piece.size();
        best_id = id;
      }
    }
    if (best_len == 0) {
      ++pos;
      continue;
    }
    encode(text.substr(start, pos - start));
    out.push_back(best_id);
    ++*specials;
    pos += best_len;
    start = pos;
  }
  encode(text.substr(start));
  return out;
}

std::string ReferenceEncoder::DecodeIds(const std::vector<int32_t>& ids) const {
  return sp_->DecodeIds(std::vector<int>(ids.begin(), ids.end()));
}

std::vector<std::string> TrickyTexts() {
  return {
      "",
      " ",
      "  ",
      "   ",
      "Hello world",
      "Once upon a time, there was a little girl named Lily.",
      " leading space",
      "  two leading spaces",
      "trailing space ",
      "trailing spaces   ",
      "multiple    spaces   inside  words",
      "a  b",
      "line one\nline two",
      "para one\n\npara two\n\n\nthree",
      std::string(40, '\n'),
      "\n",
      "\n\n",
      " \n \n  \n",
      "tab\there\t\tand\t\t\tthree",
      "digits 0123456789 and 3.14159 and 1,000,000",
      "caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87"
      "\xE7\xAB\xA0",  // 日本語の文章
      "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",
      "emoji \xF0\x9F\x99\x82\xF0\x9F\x9A\x80 and \xF0\x9F\x91\x8D\xF0\x9F\x8F"
      "\xBD",
      "<div class=\"x\"><p>Hi</p></div>",
      "</div></div>\n<div>",
      "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
      "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>",
      "text with <unk> and <s> and </s> and <pad> inside",
      "half tags <start_of_tur and end_of_turn>",
      "\xE2\x96\x81literal\xE2\x96\x81lower\xE2\x96\x81"
      "blocks",
      "replacement \xEF\xBF\xBD char",
      "invalid \xFF byte",
      "truncated \xE6\x97",
      "overlong \xC0\x80 and surrogate \xED\xA0\x80 end",
      "mixed \t \n  \t\t\n\n x",
      "UPPER lower MiXeD",
      "punctuation!?.,;:'\"()[]{}-_=+*/\\|@#$%^&~`",
  };
}

std::vector<std::string> RandomTexts(const std::vector<std::string>& fragments,
                                     int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, fragments.size() - 1);
  std::uniform_int_distribution<int> len(0, 24);
  std::vector<std::string> texts;
  for (int i = 0; i < count; ++i) {
    std::string t;
    for (int k = len(rng); k > 0; --k) t += fragments[pick(rng)];
    texts.push_back(std::move(t));
  }
  return texts;
}

int Vocab::Id(const std::string& token) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == token) return static_cast<int>(i);
  }
  return -1;
}

const std::vector<std::string>& Words() {
  static const auto* words = new std::vector<std::string>{
      "the",   "hello", "world", "once",  "upon",   "time",    "little",
      "girl",  "named", "lily",  "play",  "played", "playing", "with",
      "ball",  "tall",  "small", "will",  "well",   "all",     "word",
      "words", "three", "there", "their", "other",  "12",      "2024"};
  return *words;
}

Vocab MakeVocab(bool gemma) {
  Vocab v;
  v.gemma = gemma;
  std::set<std::string> seen;
  auto add = [&](const std::string& t, float score, int32_t type) {
    if (!seen.insert(t).second) return;
    v.tokens.push_back(t);
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  if (gemma) {
    for (const char* t : {"<pad>", "<eos>", "<bos>", "<unk>"}) add(t, 0, 3);
  } else {
    add("<unk>", 0, 2);
    add("<s>", 0, 3);
    add("</s>", 0, 3);
  }
  for (const char* t : {"<start_of_turn>", "<end_of_turn>", "<unused0>"}) {
    add(t, -1000, 3);
  }
  // User-defined, with spaces written as llama.cpp's converter writes them.
  for (const char* t : {"\n", "\n\n", "\n\n\n", "  ", "   ", "    ", "\t",
                        "\t\t", "</div>", "<div>", "<p>", "</p>"}) {
    add(t, -1000, 4);
  }
  add("ll", -3, 5);  // unused: merged through, then split back
  add("\xE2\x96\x81wor", -4, 5);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    add(buf, 0, 6);
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> score(-40, -1);  // many ties
  add("\xE2\x96\x81", -1, 1);
  for (char c = ' ' + 1; c <= '~'; ++c) add(std::string(1, c), -50, 1);
  for (const char* t : {"\xC3\xA9", "\xE6\x97\xA5", "\xE6\x9C\xAC"}) {
    add(t, -50, 1);
  }
  for (const std::string& w : Words()) {
    for (const std::string& s : {"\xE2\x96\x81" + w, w}) {
      for (size_t b = 0; b < s.size(); ++b) {
        for (size_t e = b + 2; e <= s.size(); ++e) {
          add(s.substr(b, e - b), static_cast<float>(score(rng)), 1);
        }
      }
    }
  }
  return v;
}

absl::Status WriteGguf(const Vocab& v, const std::string& path,
                       const std::set<std::string>& skip,
                       const std::function<void(GgufWriter*)>& more) {
  GgufWriter w;
  auto keep = [&](const char* key) { return skip.count(key) == 0; };
  w.SetString("general.architecture", "llama");
  if (keep("tokenizer.ggml.model")) {
    w.SetString("tokenizer.ggml.model", "llama");
  }
  if (keep("tokenizer.ggml.tokens")) {
    w.SetStringArray("tokenizer.ggml.tokens", v.tokens);
  }
  if (keep("tokenizer.ggml.scores")) {
    w.SetFloat32Array("tokenizer.ggml.scores", v.scores);
  }
  if (keep("tokenizer.ggml.token_type")) {
    w.SetInt32Array("tokenizer.ggml.token_type", v.types);
  }
  if (v.gemma) {
    if (keep("tokenizer.ggml.bos_token_id")) {
      w.SetUint32("tokenizer.ggml.bos_token_id", 2);
    }
    if (keep("tokenizer.ggml.eos_token_id")) {
      w.SetUint32("tokenizer.ggml.eos_token_id", 1);
    }
    if (keep("tokenizer.ggml.unknown_token_id")) {
      w.SetUint32("tokenizer.ggml.unknown_token_id", 3);
    }
    if (keep("tokenizer.ggml.add_space_prefix")) {
      w.SetBool("tokenizer.ggml.add_space_prefix", false);
    }
    if (keep("tokenizer.ggml.add_bos_token")) {
      w.SetBool("tokenizer.ggml.add_bos_token", true);
    }
  }
  if (more) more(&w);
  return w.Write(path);
}

std::vector<std::string> StoryLines(size_t max_lines) {
  std::ifstream file(LATENTKV_SHARED_DIR "/text/tinystories_train_excerpt.txt");
  std::vector<std::string> lines;
  std::string line;
  while (lines.size() < max_lines && std::getline(file, line)) {
    lines.push_back(line);
  }
  return lines;
}

}  // namespace latentkv::model::test_util
