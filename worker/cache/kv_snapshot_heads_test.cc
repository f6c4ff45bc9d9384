// SplitHeads / JoinHeads: rank r's part holds KV heads [r * n / parts, ...)
// of every layer with their codebook blobs, and of each query window the
// query heads of those KV heads (checked value by value against the index
// formula); joining the parts gives the original bytes back; bad shapes and
// disagreeing windows are refused.
#include "worker/cache/kv_snapshot_heads.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

constexpr int32_t kQPerKv = 3;

// The value at (layer, window entry, query head, dim): unique per index.
float QValue(int l, int i, int h, int d) {
  return static_cast<float>(l * 100000 + i * 1000 + h * 10 + d);
}

// Layers of 4 KV heads (d_qk 2 + l, d_vo 3): head h of layer l holds
// 1 + h rows whose bytes are (l, h); codebook blobs "cb l h"; a window of
// `count` entries over 4 * kQPerKv query heads with positions 7 + i.
KvSnapshot Make(int layers, int count) {
  KvSnapshot s;
  s.dtype = DType::kF32;
  for (int l = 0; l < layers; ++l) {
    const LayerKvShape shape{4, 2 + l, 3};
    s.shapes.push_back(shape);
    s.rows.emplace_back();
    s.codebooks.emplace_back();
    for (int h = 0; h < 4; ++h) {
      s.rows[l].push_back(
          std::string((1 + h) * s.row_bytes(l), static_cast<char>(16 * l + h)));
      s.codebooks[l].push_back("cb " + std::to_string(l) + " " +
                               std::to_string(h));
    }
    std::string w(8, '\0');
    const int32_t next = count;
    std::memcpy(w.data(), &count, 4);
    std::memcpy(w.data() + 4, &next, 4);
    for (int i = 0; i < count; ++i) {
      for (int h = 0; h < 4 * kQPerKv; ++h) {
        for (int d = 0; d < shape.d_qk; ++d) {
          const float v = QValue(l, i, h, d);
          w.append(reinterpret_cast<const char*>(&v), 4);
        }
      }
    }
    for (int i = 0; i < count; ++i) {
      const int32_t p = 7 + i;
      w.append(reinterpret_cast<const char*>(&p), 4);
    }
    s.windows.push_back(count > 0 ? w : "");
  }
  return s;
}

class SplitHeadsTest : public ::testing::TestWithParam<int> {};

TEST_P(SplitHeadsTest, PartsHoldTheirHeadRangesAndJoinBack) {
  const int parts = GetParam();
  const int per = 4 / parts;
  const KvSnapshot full = Make(3, 5);
  auto split = SplitHeads(full, parts, kQPerKv);
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_EQ(split->size(), static_cast<size_t>(parts));
  for (int r = 0; r < parts; ++r) {
    const KvSnapshot& p = (*split)[r];
    for (int l = 0; l < 3; ++l) {
      ASSERT_EQ(p.shapes[l].n_kv_heads, per);
      EXPECT_EQ(p.shapes[l].d_qk, 2 + l);
      for (int j = 0; j < per; ++j) {
        const int h = r * per + j;
        EXPECT_EQ(p.rows[l][j], std::string((1 + h) * full.row_bytes(l),
                                            static_cast<char>(16 * l + h)));
        EXPECT_EQ(p.codebooks[l][j],
                  "cb " + std::to_string(l) + " " + std::to_string(h));
      }
      const std::string& w = p.windows[l];
      const int d_qk = 2 + l, heads = per * kQPerKv;
      ASSERT_EQ(w.size(), 8u + 5 * (4u * heads * d_qk + 4));
      for (int i = 0; i < 5; ++i) {
        for (int hq = 0; hq < heads; ++hq) {
          for (int d = 0; d < d_qk; ++d) {
            float v;
            std::memcpy(&v, w.data() + 8 + 4 * ((i * heads + hq) * d_qk + d),
                        4);
            EXPECT_EQ(v, QValue(l, i, r * heads + hq, d));
          }
        }
        int32_t pos;
        std::memcpy(&pos, w.data() + 8 + 4 * 5 * heads * d_qk + 4 * i, 4);
        EXPECT_EQ(pos, 7 + i);
      }
    }
  }
  auto joined = JoinHeads(*split, kQPerKv);
  ASSERT_TRUE(joined.ok()) << joined.status();
  for (int l = 0; l < 3; ++l) EXPECT_EQ(joined->shapes[l].n_kv_heads, 4);
  EXPECT_EQ(joined->rows, full.rows);
  EXPECT_EQ(joined->codebooks, full.codebooks);
  EXPECT_EQ(joined->windows, full.windows);
  EXPECT_EQ(joined->bytes(), full.bytes());
}

INSTANTIATE_TEST_SUITE_P(Parts, SplitHeadsTest, ::testing::Values(1, 2, 4));

TEST(SplitHeadsTest, EmptyWindowsAndNoResidencyStateStayEmpty) {
  KvSnapshot full = Make(2, 0);
  full.codebooks.clear();
  auto split = SplitHeads(full, 2, kQPerKv);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_TRUE((*split)[1].codebooks.empty());
  EXPECT_EQ((*split)[1].windows, std::vector<std::string>(2));
  auto joined = JoinHeads(*split, kQPerKv);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->rows, full.rows);
  EXPECT_FALSE(joined->has_residency_state());
}

TEST(SplitHeadsTest, RefusesWhatDoesNotSplit) {
  const KvSnapshot full = Make(2, 3);
  EXPECT_FALSE(SplitHeads(full, 3, kQPerKv).ok());  // 4 heads, 3 ranks
  EXPECT_FALSE(SplitHeads(full, 0, kQPerKv).ok());
  EXPECT_FALSE(SplitHeads(full, 2, 2).ok());  // window sized for 3 per KV
  KvSnapshot short_window = full;
  short_window.windows[1].pop_back();
  EXPECT_FALSE(SplitHeads(short_window, 2, kQPerKv).ok());
  KvSnapshot missing_head = full;
  missing_head.rows[0].pop_back();
  EXPECT_FALSE(SplitHeads(missing_head, 2, kQPerKv).ok());
}

TEST(HeadsHoldEqualTokensTest, RaggedHeadsAreTold) {
  KvSnapshot even = Make(2, 3);
  for (auto& layer : even.rows) {
    for (auto& r : layer) r = layer[0];  // every head as head 0
  }
  even.codebooks.clear();
  EXPECT_TRUE(HeadsHoldEqualTokens(even));
  KvSnapshot ragged = even;
  ragged.rows[1][2].resize(ragged.rows[1][2].size() - ragged.row_bytes(1));
  EXPECT_FALSE(HeadsHoldEqualTokens(ragged));
  EXPECT_FALSE(HeadsHoldEqualTokens(Make(2, 3)));  // 1 + h rows per head
  KvSnapshot missing = even;
  missing.rows[0].pop_back();
  EXPECT_FALSE(HeadsHoldEqualTokens(missing));
}

TEST(JoinHeadsTest, RefusesPartsThatDisagree) {
  auto split = SplitHeads(Make(2, 3), 2, kQPerKv);
  ASSERT_TRUE(split.ok());
  std::vector<KvSnapshot> moved = *split;
  // A rank whose window positions differ: its queries are not the group's.
  moved[1].windows[0][8 + 4 * 3 * 2 * kQPerKv * 2] ^= 1;
  EXPECT_FALSE(JoinHeads(moved, kQPerKv).ok());
  std::vector<KvSnapshot> dims = *split;
  dims[1].shapes[1].d_vo = 5;
  EXPECT_FALSE(JoinHeads(dims, kQPerKv).ok());
  std::vector<KvSnapshot> state = *split;
  state[0].windows.clear();
  EXPECT_FALSE(JoinHeads(state, kQPerKv).ok());
  EXPECT_FALSE(JoinHeads({}, kQPerKv).ok());
  // A rank whose heads hold no codebook entries sends none: joined as "".
  std::vector<KvSnapshot> no_cb = *split;
  no_cb[1].codebooks.clear();
  auto joined = JoinHeads(no_cb, kQPerKv);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->codebooks[0][3], "");
  EXPECT_EQ(joined->codebooks[0][1], "cb 0 1");
}

// Unequal ranges (a decode rank pulling 3 heads from one prefill rank and
// 1 from another): each slice holds exactly its heads' rows, codebooks and
// query heads, and the slices join back to the original bytes.
TEST(SliceHeadsTest, UnequalRangesSliceAndJoinBack) {
  const KvSnapshot full = Make(3, 4);
  auto a = SliceHeads(full, 0, 3, kQPerKv);
  auto b = SliceHeads(full, 3, 4, kQPerKv);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->shapes[2].n_kv_heads, 3);
  EXPECT_EQ(b->rows[1][0],
            std::string(4 * full.row_bytes(1), static_cast<char>(16 * 1 + 3)));
  EXPECT_EQ(b->codebooks[2][0], "cb 2 3");
  // Slice b's window holds query heads 9..11 of each entry.
  const std::string& w = b->windows[1];
  const int d_qk = 3;
  ASSERT_EQ(w.size(), 8u + 4 * (4u * kQPerKv * d_qk + 4));
  float v;
  std::memcpy(&v, w.data() + 8 + 4 * ((2 * kQPerKv + 1) * d_qk + 2), 4);
  EXPECT_EQ(v, QValue(1, 2, 3 * kQPerKv + 1, 2));
  auto joined = JoinHeads({*a, *b}, kQPerKv);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->rows, full.rows);
  EXPECT_EQ(joined->codebooks, full.codebooks);
  EXPECT_EQ(joined->windows, full.windows);
  EXPECT_FALSE(SliceHeads(full, 2, 2, kQPerKv).ok());
  EXPECT_FALSE(SliceHeads(full, 3, 5, kQPerKv).ok());
}

}  // namespace
}  // namespace latentkv::worker
