#include "model/safetensors.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return testing::TempDir() + "/safetensors_test_" + name;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A raw file: length prefix, `header` text, `data_bytes` zero bytes.
std::string RawFile(const std::string& header, size_t data_bytes,
                    uint64_t declared_len = UINT64_MAX) {
  uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  out += header;
  out += std::string(data_bytes, '\0');
  return out;
}

absl::Status OpenRaw(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  WriteAll(path, bytes);
  return SafetensorsFile::Open(path).status();
}

TEST(SafetensorsTest, RoundTripAllDtypes) {
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};
  std::vector<uint16_t> b(3);
  for (int i = 0; i < 3; ++i) b[i] = F32ToBf16(a[i]);
  std::vector<uint16_t> h(5);
  for (int i = 0; i < 5; ++i) h[i] = F32ToF16(a[i]);

  SafetensorsWriter w;
  w.Add("f32", DType::kF32, {2, 3}, a.data());
  w.Add("bf16", DType::kBF16, {3}, b.data());
  w.Add("f16", DType::kF16, {5, 1}, h.data());
  w.AddF32("conv_bf16", DType::kBF16, {2, 3}, a.data());
  w.Add("empty", DType::kF32, {0, 4}, nullptr);
  w.SetMetadata("format", "pt");
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(w.Write(path).ok());

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 5u);
  EXPECT_THAT(
      (*f)->metadata(),
      ElementsAre(std::pair<const std::string, std::string>("format", "pt")));
  const TensorEntry* t = (*f)->Find("f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_THAT(t->shape, ElementsAre(2, 3));
  EXPECT_EQ(t->numel(), 6);
  ASSERT_EQ(t->nbytes, 24u);
  EXPECT_EQ(std::memcmp(t->data, a.data(), 24), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 4, 0u);

  t = (*f)->Find("bf16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kBF16);
  EXPECT_EQ(std::memcmp(t->data, b.data(), 6), 0);
  t = (*f)->Find("f16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF16);
  EXPECT_THAT(t->shape, ElementsAre(5, 1));
  EXPECT_EQ(std::memcmp(t->data, h.data(), 10), 0);
  t = (*f)->Find("conv_bf16");
  ASSERT_NE(t, nullptr);
  std::vector<float> back(6);
  ConvertToF32(t->data, t->dtype, 6, back.data());
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(back[i], a[i], 1e-2 * std::abs(a[i]));
  t = (*f)->Find("empty");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->nbytes, 0u);
  EXPECT_EQ((*f)->Find("nope"), nullptr);

  // The header is padded so the data section starts 8-byte aligned, and the
  // data is contiguous (what other safetensors readers require).
  const std::string raw = ReadAll(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + n + 24 + 6 + 10 + 12);
}

TEST(SafetensorsTest, StreamWriterAnyOrderAndMissing) {
  std::vector<float> x = {1, 2, 3, 4};
  SafetensorsStreamWriter w;
  w.Declare("b", DType::kF32, {4});
  w.Declare("a", DType::kF16, {4});
  const std::string path = TempPath("stream.safetensors");
  ASSERT_TRUE(w.Open(path).ok());
  ASSERT_TRUE(w.WriteF32("a", x.data()).ok());
  EXPECT_FALSE(w.Write("zzz", x.data()).ok());
  EXPECT_FALSE(w.WriteF32("a", x.data()).ok());  // twice
  ASSERT_TRUE(w.Write("b", x.data()).ok());
  ASSERT_TRUE(w.Finish().ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<float> back(4);
  ConvertToF32((*f)->Find("a")->data, DType::kF16, 4, back.data());
  EXPECT_THAT(back, ElementsAre(1, 2, 3, 4));

  SafetensorsStreamWriter w2;
  w2.Declare("a", DType::kF32, {4});
  ASSERT_TRUE(w2.Open(TempPath("stream2.safetensors")).ok());
  absl::Status s = w2.Finish();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("a was never written"));
}

void ExpectInvalid(const absl::Status& s, const std::string& what) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr(what));
}

TEST(SafetensorsTest, RejectsCorruptFiles) {
  // Missing file.
  EXPECT_FALSE(SafetensorsFile::Open(TempPath("does_not_exist")).ok());
  // Shorter than the length prefix.
  ExpectInvalid(OpenRaw("short", std::string(5, '\0')), "too short");
  // Header length beyond the file.
  ExpectInvalid(OpenRaw("hdrlen", RawFile("{}", 0, 1000)), "header length");
  ExpectInvalid(OpenRaw("hdrlen_huge", RawFile("{}", 0, UINT64_MAX - 1)),
                "header length");
  // Bad JSON.
  ExpectInvalid(OpenRaw("badjson", RawFile("{\"a\": [", 0)), "invalid JSON");
  ExpectInvalid(OpenRaw("notobj", RawFile("[1, 2]", 0)), "not a JSON object");
  // Unknown dtype.
  ExpectInvalid(OpenRaw("dtype", RawFile(R"({"w": {"dtype": "I64", "shape": [2],
                      "data_offsets": [0, 16]}})",
                                         16)),
                "w: unsupported dtype I64");
  // Offsets out of range.
  ExpectInvalid(OpenRaw("range", RawFile(R"({"w": {"dtype": "F32", "shape": [4],
                      "data_offsets": [8, 24]}})",
                                         16)),
                "w: data_offsets [8, 24] outside");
  ExpectInvalid(
      OpenRaw("reversed", RawFile(R"({"w": {"dtype": "F32", "shape": [0],
                      "data_offsets": [8, 4]}})",
                                  16)),
      "outside");
  // Size mismatch between shape and offsets.
  ExpectInvalid(
      OpenRaw("size", RawFile(R"({"w": {"dtype": "BF16", "shape": [2, 3],
                      "data_offsets": [0, 16]}})",
                              16)),
      "w: shape [2,3] of BF16 needs 12 bytes");
  // Overflowing shape.
  ExpectInvalid(OpenRaw("overflow", RawFile(R"({"w": {"dtype": "F32",
                      "shape": [4294967296, 4294967296, 16],
                      "data_offsets": [0, 16]}})",
                                            16)),
                "w: shape");
  // Negative dims, missing fields, bad offsets.
  ExpectInvalid(OpenRaw("neg", RawFile(R"({"w": {"dtype": "F32", "shape": [-1],
                      "data_offsets": [0, 4]}})",
                                       16)),
                "w: bad shape");
  ExpectInvalid(OpenRaw("nodtype", RawFile(R"({"w": {"shape": [1],
                      "data_offsets": [0, 4]}})",
                                           16)),
                "w: missing dtype");
  ExpectInvalid(OpenRaw("offs", RawFile(R"({"w": {"dtype": "F32", "shape": [1],
                      "data_offsets": [0]}})",
                                        16)),
                "w: data_offsets");
  ExpectInvalid(
      OpenRaw("offneg", RawFile(R"({"w": {"dtype": "F32", "shape": [1],
                      "data_offsets": [-4, 0]}})",
                                16)),
      "w: bad data_offsets");
  // Overlapping tensors.
  ExpectInvalid(
      OpenRaw("overlap", RawFile(R"({"a": {"dtype": "F32", "shape": [2],
                      "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2],
                      "data_offsets": [4, 12]}})",
                                 16)),
      "overlaps");
  // Bad metadata.
  ExpectInvalid(OpenRaw("meta", RawFile(R"({"__metadata__": {"k": 3}})", 0)),
                "__metadata__");
}

TEST(SafetensorsTest, RejectsTruncatedData) {
  std::vector<float> a(64, 1.5f);
  SafetensorsWriter w;
  w.Add("x", DType::kF32, {8, 8}, a.data());
  const std::string path = TempPath("trunc_src.safetensors");
  ASSERT_TRUE(w.Write(path).ok());
  std::string raw = ReadAll(path);
  ASSERT_TRUE(OpenRaw("trunc_ok", raw).ok());
  raw.resize(raw.size() - 4);
  ExpectInvalid(OpenRaw("trunc", raw), "x: data_offsets");
  // Truncated inside the header.
  raw.resize(20);
  ExpectInvalid(OpenRaw("trunc_hdr", raw), "header length");
}

}  // namespace
}  // namespace latentkv::model
