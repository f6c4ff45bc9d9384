// latentkv's dequantization of ggml's Q5_0/Q5_1 and k-quant blocks against
// gguf-py's numpy implementation, bit for bit, on seeded random blocks and
// edge blocks (testdata/ggml_quants/*.bin, written by
// tools/reference/ggml_quants_reference.py).
#include "model/gguf/ggml_quants.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::model {
namespace {

struct Case {
  const char* file;
  GgmlQuant type;
  int block_elems, block_bytes;
};

class GgmlQuantsTest : public ::testing::TestWithParam<Case> {};

TEST_P(GgmlQuantsTest, MatchesGgufPyBitForBit) {
  const Case& c = GetParam();
  const auto layout = GgmlQuantLayoutOf(static_cast<uint32_t>(c.type));
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->block_elems, c.block_elems);
  EXPECT_EQ(layout->block_bytes, c.block_bytes);
  std::ifstream in(std::string(LATENTKV_GGML_QUANTS_DIR) + "/" + c.file,
                   std::ios::binary);
  ASSERT_TRUE(in) << c.file;
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  // blocks, then 4 bytes per element
  const size_t per_block = c.block_bytes + 4 * c.block_elems;
  ASSERT_EQ(data.size() % per_block, 0u);
  const int64_t blocks = data.size() / per_block;
  const int64_t n = blocks * c.block_elems;
  std::vector<float> want(n), got(n, -1.0f);
  std::memcpy(want.data(), data.data() + blocks * c.block_bytes, n * 4);
  DequantizeGgml(static_cast<uint32_t>(c.type), data.data(), n, got.data());
  int mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(&got[i], &want[i], 4) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << c.file << " element " << i << " (block "
                    << i / c.block_elems << ", " << i % c.block_elems
                    << "): got " << got[i] << ", gguf-py " << want[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << n;
}

INSTANTIATE_TEST_SUITE_P(
    Formats, GgmlQuantsTest,
    ::testing::Values(Case{"q5_0.bin", GgmlQuant::kQ5_0, 32, 22},
                      Case{"q5_1.bin", GgmlQuant::kQ5_1, 32, 24},
                      Case{"q2_k.bin", GgmlQuant::kQ2_K, 256, 84},
                      Case{"q3_k.bin", GgmlQuant::kQ3_K, 256, 110},
                      Case{"q4_k.bin", GgmlQuant::kQ4_K, 256, 144},
                      Case{"q5_k.bin", GgmlQuant::kQ5_K, 256, 176},
                      Case{"q6_k.bin", GgmlQuant::kQ6_K, 256, 210}));

TEST(GgmlQuantsLayoutTest, OtherTypesHaveNone) {
  for (uint32_t t : {0u, 1u, 2u, 3u, 8u, 9u, 15u, 30u, 1000u}) {
    EXPECT_FALSE(GgmlQuantLayoutOf(t).has_value()) << t;
  }
}

}  // namespace
}  // namespace latentkv::model
