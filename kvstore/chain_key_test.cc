#include "kvstore/chain_key.h"

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::kvstore {
namespace {

// A second code path: XXH3-64 (seed 0) for inputs of 9..128 bytes written
// from the algorithm's specification, independent of libxxhash.
constexpr unsigned char kSecret[128] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c,
    0xf7, 0x21, 0xad, 0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb,
    0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e,
    0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
    0x81, 0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb,
    0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97,
    0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7,
    0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31,
    0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64};

uint64_t Le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t MulFold(uint64_t a, uint64_t b) {
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

uint64_t Avalanche(uint64_t h) {
  h ^= h >> 37;
  h *= 0x165667919E3779F9ULL;
  return h ^ (h >> 32);
}

uint64_t Mix16(const unsigned char* in, const unsigned char* sec) {
  return MulFold(Le64(in) ^ Le64(sec), Le64(in + 8) ^ Le64(sec + 8));
}

uint64_t ReferenceXxh3(const std::vector<unsigned char>& in) {
  const size_t len = in.size();
  const unsigned char* p = in.data();
  if (len <= 16) {  // 9..16 bytes
    const uint64_t lo = Le64(p) ^ (Le64(kSecret + 24) ^ Le64(kSecret + 32));
    const uint64_t hi =
        Le64(p + len - 8) ^ (Le64(kSecret + 40) ^ Le64(kSecret + 48));
    return Avalanche(len + __builtin_bswap64(lo) + hi + MulFold(lo, hi));
  }
  uint64_t acc = len * 0x9E3779B185EBCA87ULL;  // 17..128 bytes
  if (len > 32) {
    if (len > 64) {
      if (len > 96) {
        acc += Mix16(p + 48, kSecret + 96);
        acc += Mix16(p + len - 64, kSecret + 112);
      }
      acc += Mix16(p + 32, kSecret + 64);
      acc += Mix16(p + len - 48, kSecret + 80);
    }
    acc += Mix16(p + 16, kSecret + 32);
    acc += Mix16(p + len - 32, kSecret + 48);
  }
  acc += Mix16(p, kSecret);
  acc += Mix16(p + len - 16, kSecret + 16);
  return Avalanche(acc);
}

uint64_t ReferenceChainKey(uint64_t parent, const std::vector<int32_t>& t) {
  std::vector<unsigned char> bytes;
  for (int b = 0; b < 8; ++b) bytes.push_back((parent >> (8 * b)) & 0xff);
  for (int32_t x : t) {
    const uint32_t u = static_cast<uint32_t>(x);
    for (int b = 0; b < 4; ++b) bytes.push_back((u >> (8 * b)) & 0xff);
  }
  const uint64_t h = ReferenceXxh3(bytes);
  return h == 0 ? kZeroKeyReplacement : h;
}

BlockKey Key(BlockKey parent, const std::vector<int32_t>& t) {
  return ChainKey(parent, t.data(), static_cast<int>(t.size()));
}

// Golden values computed independently with the Python `xxhash` package
// (its own bundled XXH3) over the documented byte layout:
//   xxh3_64_intdigest(struct.pack('<Q', parent) + struct.pack('<Ni', *t)).
// A change here breaks every stored key and router index: never update them
// to make the test pass.
TEST(ChainKeyTest, GoldenValues) {
  const BlockKey k0 = Key(0, {1, 2, 3, 4});
  EXPECT_EQ(k0, 0x341839abbe30be0bULL);
  EXPECT_EQ(Key(k0, {5, 6, 7, 8}), 0x37b6de0623bdb5caULL);
  EXPECT_EQ(Key(0, {1, 2}), 0xa32c1566c369405fULL);
  EXPECT_EQ(Key(0x0123456789abcdefULL, {-1, 2147483647, -2147483647 - 1, 0}),
            0x958bfabbe1b4bb85ULL);
  EXPECT_EQ(Key(7, {}), 0x81671e58d6b596afULL);
  std::vector<int32_t> t;
  for (int i = 100; i < 132; ++i) t.push_back(i);
  const std::vector<BlockKey> keys = PrefixKeys(t, 16);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0], 0xb8410de03d8ebd47ULL);
  EXPECT_EQ(keys[1], 0x97848bb05af0216aULL);
}

TEST(ChainKeyTest, MatchesIndependentImplementation) {
  std::mt19937_64 rng(42);
  for (int n = 1; n <= 30; ++n) {  // 12..128 bytes: every short-input path
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<int32_t> t(n);
      for (auto& x : t) x = static_cast<int32_t>(rng());
      const uint64_t parent = rep == 0 ? 0 : rng();
      ASSERT_EQ(Key(parent, t), ReferenceChainKey(parent, t))
          << "n=" << n << " rep=" << rep;
    }
  }
}

TEST(ChainKeyTest, OrderAndParentSensitive) {
  EXPECT_NE(Key(0, {1, 2, 3}), Key(0, {3, 2, 1}));
  EXPECT_NE(Key(0, {1, 2, 3}), Key(1, {1, 2, 3}));
  EXPECT_NE(Key(0, {1, 2, 3}), Key(0, {1, 2, 3, 0}));
  EXPECT_EQ(Key(5, {1, 2, 3}), Key(5, {1, 2, 3}));
  std::mt19937 rng(1);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_NE(Key(rng(), {static_cast<int32_t>(rng())}), 0u);
  }
}

TEST(ChainKeyTest, PrefixKeysChainsFullBlocks) {
  std::vector<int32_t> t(37);
  for (int i = 0; i < 37; ++i) t[i] = i * 7 + 1;
  const std::vector<BlockKey> keys = PrefixKeys(t, 8);
  ASSERT_EQ(keys.size(), 4u);  // the 5 trailing tokens make no block
  BlockKey parent = 0;
  for (int i = 0; i < 4; ++i) {
    parent = ChainKey(parent, t.data() + 8 * i, 8);
    EXPECT_EQ(keys[i], parent);
  }
  EXPECT_TRUE(PrefixKeys(t, 0).empty());
  EXPECT_TRUE(PrefixKeys(t, -3).empty());
  EXPECT_TRUE(PrefixKeys({}, 8).empty());
  EXPECT_EQ(PrefixKeys(t, 37).size(), 1u);
  EXPECT_TRUE(PrefixKeys(t, 38).empty());
}

TEST(ChainKeyTest, SharedPrefixesShareKeysDivergenceChangesTheRest) {
  std::vector<int32_t> a(32), b(32);
  for (int i = 0; i < 32; ++i) a[i] = b[i] = i;
  b[9] = 999;  // inside block 1 of 4
  const auto ka = PrefixKeys(a, 8), kb = PrefixKeys(b, 8);
  EXPECT_EQ(ka[0], kb[0]);
  for (int i = 1; i < 4; ++i) EXPECT_NE(ka[i], kb[i]) << i;
  // The same block of tokens under different parents gets different keys.
  EXPECT_NE(ChainKey(ka[0], a.data() + 16, 8), ka[1]);
}

}  // namespace
}  // namespace latentkv::kvstore
