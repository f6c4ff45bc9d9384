#include "model/gguf/gguf_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "model/gguf/gguf_writer.h"

namespace latentkv::model {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          (name + "_" + std::to_string(::getpid()) + ".gguf"))
      .string();
}

std::string WriteBytes(const std::string& name,
                       const std::vector<uint8_t>& bytes) {
  const std::string path = TempPath(name);
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}

TEST(GgufFileTest, RoundTripsMetadataAndTensors) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetUint32("llama.block_count", 5);
  w.SetInt32("neg", -7);
  w.SetFloat32("llama.rope.freq_base", 100000.0f);
  w.SetBool("tokenizer.ggml.add_bos_token", false);
  w.SetStringArray("tokenizer.ggml.tokens", {"a", "Ġb", ""});
  w.SetInt32Array("tokenizer.ggml.token_type", {1, 3, 6});
  w.SetFloat32Array("scores", {0.5f, -1.0f});
  const std::vector<float> m = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(w.AddTensor("m", {3, 2}, GgmlType::kF32, m.data(), 24).ok());
  std::vector<uint8_t> q(34 * 2, 7);
  ASSERT_TRUE(w.AddTensor("q", {64}, GgmlType::kQ8_0, q.data(), q.size()).ok());
  const std::string path = TempPath("roundtrip");
  ASSERT_TRUE(w.Write(path).ok());

  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*f)->GetInt("llama.block_count"), 5);
  EXPECT_EQ(*(*f)->GetInt("neg"), -7);
  EXPECT_DOUBLE_EQ(*(*f)->GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_DOUBLE_EQ(*(*f)->GetFloat("llama.block_count"), 5.0);
  EXPECT_FALSE(*(*f)->GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(*(*f)->GetStringArray("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"a", "Ġb", ""}));
  EXPECT_EQ(*(*f)->GetIntArray("tokenizer.ggml.token_type"),
            (std::vector<int64_t>{1, 3, 6}));
  EXPECT_EQ(*(*f)->GetFloatArray("scores"), (std::vector<double>{0.5, -1.0}));
  EXPECT_EQ((*f)->keys().size(), 8u);
  EXPECT_EQ((*f)->keys()[0], "general.architecture");

  // Wrong types and missing keys are errors, never a default.
  EXPECT_EQ((*f)->GetInt("general.architecture").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetString("llama.block_count").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetInt("llama.rope.freq_base").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetIntArray("tokenizer.ggml.tokens").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetString("nope").status().code(),
            absl::StatusCode::kNotFound);

  const GgufTensorInfo* t = (*f)->FindTensor("m");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(t->nbytes, 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 32, 0u);
  EXPECT_EQ(std::memcmp(t->data, m.data(), 24), 0);
  const GgufTensorInfo* tq = (*f)->FindTensor("q");
  ASSERT_NE(tq, nullptr);
  EXPECT_EQ(tq->nbytes, 68u);
  EXPECT_EQ(tq->data[67], 7);
  EXPECT_EQ((*f)->FindTensor("absent"), nullptr);
  std::filesystem::remove(path);
}

TEST(GgufFileTest, RejectsCorruptFiles) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  const std::vector<float> m(64, 1.0f);
  ASSERT_TRUE(w.AddTensor("m", {64}, GgmlType::kF32, m.data(), 256).ok());
  const std::vector<uint8_t> good = w.Serialize();

  auto expect_invalid = [](const std::vector<uint8_t>& bytes,
                           const std::string& what) {
    const std::string path = WriteBytes("corrupt", bytes);
    auto f = GgufFile::Open(path);
    std::filesystem::remove(path);
    ASSERT_FALSE(f.ok()) << what;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << what;
  };
  // Truncated anywhere: in the header, in the tensor infos, in the data.
  for (size_t n : {size_t{10}, size_t{30}, size_t{60}, good.size() - 1}) {
    expect_invalid(std::vector<uint8_t>(good.begin(), good.begin() + n),
                   "truncated to " + std::to_string(n));
  }
  std::vector<uint8_t> bad = good;
  bad[0] = 'X';
  expect_invalid(bad, "magic");
  bad = good;
  bad[4] = 9;
  expect_invalid(bad, "version");

  GgufWriter unknown_type;
  unknown_type.SetRaw("k", 99, {0, 0, 0, 0});
  expect_invalid(unknown_type.Serialize(), "metadata type");

  GgufWriter huge_string;
  huge_string.SetRaw("k", static_cast<uint32_t>(GgufType::kString),
                     {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f});
  expect_invalid(huge_string.Serialize(), "string length");

  // Counts the rest of the file cannot hold are refused before anything is
  // reserved for them (a tensor count of 2^32 used to reserve 230 GB; found
  // by tests/fuzz/fuzz_gguf).
  {
    std::vector<uint8_t> raw = good;
    for (int i = 8; i < 16; ++i) raw[i] = 0;
    raw[12] = 1;  // tensor count 2^32
    expect_invalid(raw, "tensor count");
  }
  // Dimensions whose product overflows int64 (four of 2^40): refused as the
  // count grows (it was computed first, signed overflow; found by fuzz_gguf).
  {
    std::vector<uint8_t> raw = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    auto u64 = [&raw](uint64_t v) {
      for (int i = 0; i < 8; ++i) raw.push_back((v >> (8 * i)) & 0xff);
    };
    u64(1);  // tensors
    u64(0);  // metadata
    u64(1);  // name length
    raw.push_back('t');
    raw.insert(raw.end(), {4, 0, 0, 0});  // dimensions
    for (int d = 0; d < 4; ++d) u64(uint64_t{1} << 40);
    raw.insert(raw.end(), {0, 0, 0, 0});  // f32
    u64(0);                               // offset
    expect_invalid(raw, "element count overflow");
  }
  GgufWriter huge_array;
  huge_array.SetRaw("k", static_cast<uint32_t>(GgufType::kArray),
                    {static_cast<uint8_t>(GgufType::kString), 0, 0, 0, 0x10, 0,
                     0, 0, 0, 0, 0, 0});
  expect_invalid(huge_array.Serialize(), "array count");

  GgufWriter dup;
  dup.SetInt32("k", 1);
  dup.SetInt32("k", 2);
  expect_invalid(dup.Serialize(), "duplicate key");

  // A tensor of a type we do not read (q5_k = 13) is refused by name.
  {
    std::vector<uint8_t> raw = good;
    // The tensor info ends with: uint32 type, uint64 offset (0); the data
    // section starts at the next multiple of 32.
    const size_t info_end = good.size() - 256;
    size_t type_at = 0;
    for (size_t i = 0; i + 12 <= info_end; ++i) {
      if (raw[i] == 'm' && raw[i + 1] == 1) type_at = i + 1 + 4 + 8;
    }
    ASSERT_GT(type_at, 0u);
    ASSERT_EQ(raw[type_at], 0);  // f32
    raw[type_at] = 16;           // iq2_xxs: not read
    std::string path = WriteBytes("odd", raw);
    auto f = GgufFile::Open(path);
    std::filesystem::remove(path);
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.status().message().find("ggml_type_16"), std::string::npos)
        << f.status();
    // q5_K is read, but 64 elements are not a whole super-block.
    raw[type_at] = 13;
    path = WriteBytes("odd", raw);
    f = GgufFile::Open(path);
    std::filesystem::remove(path);
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.status().message().find("not whole q5_K blocks of 256"),
              std::string::npos)
        << f.status();
  }
  EXPECT_FALSE(GgufFile::TypeBytes(16, 256).ok());
  EXPECT_EQ(*GgufFile::TypeBytes(13, 512), 352u);  // two q5_K super-blocks
  EXPECT_FALSE(
      GgufFile::TypeBytes(static_cast<uint32_t>(GgmlType::kQ4_1), 33).ok());
  EXPECT_EQ(*GgufFile::TypeBytes(static_cast<uint32_t>(GgmlType::kQ4_1), 64),
            40u);
  EXPECT_EQ(*GgufFile::TypeBytes(static_cast<uint32_t>(GgmlType::kQ4_0), 64),
            36u);
  EXPECT_EQ(*GgufFile::TypeBytes(static_cast<uint32_t>(GgmlType::kBF16), 3),
            6u);

  auto missing = GgufFile::Open("/nonexistent/x.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// A flipped type byte or dimension changes a tensor's size: the tensors no
// longer tile the data section, and the file is refused naming the tensor
// (it used to load and serve wrong text).
TEST(GgufFileTest, RejectsTensorsThatDoNotTileTheData) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  const std::vector<uint8_t> q(34 * 4, 1);  // 4 q8_0 blocks: 128 values
  const std::vector<float> b(64, 1.0f);
  ASSERT_TRUE(
      w.AddTensor("a", {128}, GgmlType::kQ8_0, q.data(), q.size()).ok());
  ASSERT_TRUE(w.AddTensor("b", {64}, GgmlType::kF32, b.data(), 256).ok());
  const std::vector<uint8_t> good = w.Serialize();
  {
    const std::string path = WriteBytes("tiled", good);
    auto f = GgufFile::Open(path);
    std::filesystem::remove(path);
    ASSERT_TRUE(f.ok()) << f.status();
  }
  // Tensor "a"'s info: name "a" (length 1), n_dims 1, dim 128, type, offset.
  size_t type_at = 0;
  for (size_t i = 8; i + 20 < good.size(); ++i) {
    if (good[i] == 'a' && good[i - 8] == 1 && good[i + 1] == 1) {
      type_at = i + 1 + 4 + 8;
      break;
    }
  }
  ASSERT_GT(type_at, 0u);
  ASSERT_EQ(good[type_at], static_cast<uint8_t>(GgmlType::kQ8_0));
  auto expect_refused = [&](std::vector<uint8_t> bytes, const char* what,
                            const char* says) {
    const std::string path = WriteBytes("untiled", bytes);
    auto f = GgufFile::Open(path);
    std::filesystem::remove(path);
    ASSERT_FALSE(f.ok()) << what;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(f.status().message().find(says), std::string::npos)
        << what << ": " << f.status();
  };
  // q8_0 (136 bytes) read as q4_0 (72 bytes): a gap before "b".
  std::vector<uint8_t> bad = good;
  bad[type_at] = static_cast<uint8_t>(GgmlType::kQ4_0);
  expect_refused(bad, "q8_0 -> q4_0", "gap after a");
  // ... as f32 (512 bytes): "b" overlaps it (or it runs past the file).
  bad = good;
  bad[type_at] = static_cast<uint8_t>(GgmlType::kF32);
  expect_refused(bad, "q8_0 -> f32", "a");
  // A doubled dimension: 256 values, 272 bytes, overlapping "b".
  bad = good;
  bad[type_at - 8] = 0;
  bad[type_at - 7] = 1;  // 256, little-endian
  expect_refused(bad, "dim 128 -> 256", "overlaps a");
}

// The shared SmolLM2 checkpoint, against the facts its README states.
TEST(GgufFileTest, ReadsSmolLm2) {
  auto f = GgufFile::Open(std::string(LATENTKV_SHARED_DIR) +
                          "/models/smollm2-135m-instruct/"
                          "SmolLM2-135M-Instruct.Q4_1.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->tensors().size(), 272u);
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*f)->GetInt("llama.block_count"), 30);
  EXPECT_EQ(*(*f)->GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(*(*f)->GetInt("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*(*f)->GetString("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ((*(*f)->GetStringArray("tokenizer.ggml.tokens")).size(), 49152u);
  EXPECT_EQ((*(*f)->GetStringArray("tokenizer.ggml.merges")).size(), 48900u);
  const GgufTensorInfo* emb = (*f)->FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, static_cast<uint32_t>(GgmlType::kQ8_0));
  EXPECT_EQ(emb->dims, (std::vector<int64_t>{576, 49152}));
  int q41 = 0, f32 = 0;
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    q41 += t.type == static_cast<uint32_t>(GgmlType::kQ4_1);
    f32 += t.type == static_cast<uint32_t>(GgmlType::kF32);
  }
  EXPECT_EQ(q41, 210);
  EXPECT_EQ(f32, 61);
  EXPECT_EQ((*f)->FindTensor("output.weight"), nullptr);  // tied
}

}  // namespace
}  // namespace latentkv::model
