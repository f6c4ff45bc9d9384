#include "tests/fuzz/seedgen_model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/convert.h"
#include "model/gguf/gguf_file.h"
#include "model/gguf/gguf_writer.h"
#include "model/tokenizer/bpe_tokenizer.h"

namespace latentkv::fuzz {
namespace {

namespace fs = std::filesystem;
namespace lm = latentkv::model;

// Tokens kept of SmolLM2's 49,152 (its specials, the 256 byte characters
// and the first merges' results).
constexpr int kTokens = 512;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

// The first kTokens tokens and the merges among them.
lm::BpeVocab Shrink(lm::BpeVocab v) {
  v.tokens.resize(std::min<size_t>(v.tokens.size(), kTokens));
  if (!v.token_types.empty()) v.token_types.resize(v.tokens.size());
  const std::set<std::string> kept(v.tokens.begin(), v.tokens.end());
  std::vector<std::string> merges;
  for (const std::string& m : v.merges) {
    const size_t sp = m.find(' ');
    if (sp == std::string::npos) continue;
    const std::string a = m.substr(0, sp), b = m.substr(sp + 1);
    if (kept.count(a) && kept.count(b) && kept.count(a + b)) {
      merges.push_back(m);
    }
  }
  v.merges = std::move(merges);
  return v;
}

// SmolLM2's GGUF at toy size: every metadata key (arrays cut to kTokens),
// the shapes scaled down (hidden 64, 4 heads over 2 KV heads, FFN 128, one
// layer) and block 0's tensors holding the first bytes of the real ones.
absl::Status TinyGguf(const lm::GgufFile& real, const fs::path& out,
                      std::string* chat_template) {
  const std::map<std::string, uint32_t> sizes = {
      {"llama.block_count", 1},          {"llama.context_length", 256},
      {"llama.embedding_length", 64},    {"llama.feed_forward_length", 128},
      {"llama.attention.head_count", 4}, {"llama.attention.head_count_kv", 2},
      {"llama.vocab_size", kTokens},     {"llama.rope.dimension_count", 16}};
  const std::map<int64_t, int64_t> dims = {
      {576, 64}, {1536, 128}, {192, 32}, {49152, kTokens}};
  lm::GgufWriter w;
  for (const std::string& key : real.keys()) {
    if (auto it = sizes.find(key); it != sizes.end()) {
      w.SetUint32(key, it->second);
    } else if (auto s = real.GetString(key); s.ok()) {
      w.SetString(key, *s);
      if (key == "tokenizer.chat_template") *chat_template = *s;
    } else if (auto b = real.GetBool(key); b.ok()) {
      w.SetBool(key, *b);
    } else if (auto i = real.GetInt(key); i.ok()) {
      w.SetUint32(key, static_cast<uint32_t>(*i));
    } else if (auto f = real.GetFloat(key); f.ok()) {
      w.SetFloat32(key, static_cast<float>(*f));
    } else if (auto sa = real.GetStringArray(key); sa.ok()) {
      if (key == "tokenizer.ggml.merges") continue;  // below
      sa->resize(std::min<size_t>(sa->size(), kTokens));
      w.SetStringArray(key, *sa);
    } else if (auto ia = real.GetIntArray(key); ia.ok()) {
      std::vector<int32_t> v(ia->begin(), ia->end());
      v.resize(std::min<size_t>(v.size(), kTokens));
      w.SetInt32Array(key, v);
    }
  }
  auto vocab = lm::ReadGgufBpeVocab(real);
  if (!vocab.ok()) return vocab.status();
  w.SetStringArray("tokenizer.ggml.merges", Shrink(*vocab).merges);
  for (const lm::GgufTensorInfo& t : real.tensors()) {
    if (t.name.find("blk.") == 0 && t.name.find("blk.0.") != 0) continue;
    std::vector<int64_t> d;
    int64_t n = 1;
    for (int64_t x : t.dims) {
      d.push_back(dims.count(x) ? dims.at(x) : x);
      n *= d.back();
    }
    auto bytes = lm::GgufFile::TypeBytes(t.type, n);
    if (!bytes.ok()) return bytes.status();
    absl::Status s = w.AddTensor(t.name, d, static_cast<lm::GgmlType>(t.type),
                                 t.data, *bytes);
    if (!s.ok()) return s;
  }
  return w.Write(out.string());
}

// A llama2.c checkpoint of dim 8, FFN 16, 1 layer, 2 heads over 1 KV head,
// vocab 4 (untied classifier), seq_len 4; its floats are the real
// checkpoint's first ones.
std::string TinyCheckpoint(const std::string& real) {
  const int32_t header[7] = {8, 16, 1, 2, 1, -4, 4};
  const int64_t floats =
      4 * 8 + 8 + 64 + 2 * 4 * 8 + 64 + 8 + 3 * 16 * 8 + 8 + 4 * 4 + 4 * 8;
  std::string out(reinterpret_cast<const char*>(header), sizeof(header));
  out += real.substr(28, floats * 4);
  return out;
}

}  // namespace

absl::Status WriteModelSeeds(const fs::path& dir, const fs::path& shared) {
  const fs::path gguf_path =
      shared / "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
  const fs::path s260k = shared / "models/stories260K";
  const fs::path tmp = dir / "tmp";
  fs::create_directories(tmp);
  if (fs::exists(gguf_path)) {
    auto real = lm::GgufFile::Open(gguf_path.string());
    if (!real.ok()) return real.status();
    std::string chat_template;
    const fs::path tiny = dir / "fuzz_gguf/smollm2_tiny.gguf";
    fs::create_directories(tiny.parent_path());
    absl::Status s = TinyGguf(**real, tiny, &chat_template);
    if (!s.ok()) return s;
    auto vocab = lm::ReadGgufBpeVocab(**real);
    if (!vocab.ok()) return vocab.status();
    s = lm::WriteHfTokenizerJson(Shrink(*vocab), tmp.string(), chat_template);
    if (!s.ok()) return s;
    WriteAll(dir / "fuzz_tokenizer_json/smollm2_512.json",
             ReadAll(tmp / "tokenizer.json"));
    WriteAll(dir / "fuzz_chat_template/smollm2_jinja", '\0' + chat_template);
    WriteAll(dir / "fuzz_chat_template/smollm2_tokenizer_config",
             '\1' + ReadAll(tmp / "tokenizer_config.json"));
  }
  if (fs::exists(s260k / "stories260K.bin")) {
    const std::string real = ReadAll(s260k / "stories260K.bin");
    WriteAll(dir / "fuzz_llama2c_checkpoint/tiny.bin", TinyCheckpoint(real));
    const fs::path model = tmp / "s260k";
    absl::Status s =
        lm::ConvertLlama2c((s260k / "stories260K.bin").string(),
                           (s260k / "tok512.bin").string(), model.string());
    if (!s.ok()) return s;
    WriteAll(dir / "fuzz_config_json/stories260K.json",
             ReadAll(model / "config.json"));
    WriteAll(dir / "fuzz_safetensors/stories260K.safetensors",
             ReadAll(model / "model.safetensors"));
    // The tiny checkpoint converted too, in bf16: a small whole model.
    WriteAll(tmp / "tiny.bin", TinyCheckpoint(real));
    const fs::path tiny = tmp / "tiny";
    s = lm::ConvertLlama2c((tmp / "tiny.bin").string(),
                           (s260k / "tok512.bin").string(), tiny.string(),
                           DType::kBF16);
    if (!s.ok()) return s;
    WriteAll(dir / "fuzz_safetensors/tiny_bf16.safetensors",
             ReadAll(tiny / "model.safetensors"));
    WriteAll(dir / "fuzz_config_json/tiny.json", ReadAll(tiny / "config.json"));
  }
  fs::remove_all(tmp);
  return absl::OkStatus();
}

}  // namespace latentkv::fuzz
