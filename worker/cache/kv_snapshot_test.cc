// KvSnapshot::CheckRows: rows from another process are refused when a K or
// V value is NaN or infinite in any KV dtype, or rows are not whole; the
// position field and finite extremes pass.
#include "worker/cache/kv_snapshot.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/dtype.h"
#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

// One layer (d_qk 3, d_vo 2), two heads, `n` rows per head of value `fill`.
KvSnapshot Make(DType dt, int n, float fill) {
  KvSnapshot s;
  s.shapes = {LayerKvShape{2, 3, 2}};
  s.dtype = dt;
  s.rows.assign(1, std::vector<std::string>(2));
  const int64_t e = DTypeSize(dt);
  for (auto& head : s.rows[0]) {
    for (int i = 0; i < n; ++i) {
      std::string row(4 + 5 * e, '\0');
      const int32_t pos = 0x7f800000;  // looks like inf, but is a position
      std::memcpy(row.data(), &pos, 4);
      for (int j = 0; j < 5; ++j) {
        if (dt == DType::kF8E4M3) {
          row[4 + j] = static_cast<char>(F32ToF8E4M3(fill));
        } else {
          ConvertFromF32(&fill, 1, dt, row.data() + 4 + j * e);
        }
      }
      head += row;
    }
  }
  return s;
}

void Poison(KvSnapshot* s, int head, int row, int value, float x) {
  const int64_t e = DTypeSize(s->dtype);
  char* p = s->rows[0][head].data() + row * s->row_bytes(0) + 4 + value * e;
  if (s->dtype == DType::kF8E4M3) {
    *p = static_cast<char>(std::isnan(x) ? 0xff : F32ToF8E4M3(x));
  } else {
    ConvertFromF32(&x, 1, s->dtype, p);
  }
}

TEST(KvSnapshotTest, CheckRowsRefusesNonFiniteValuesInEveryDtype) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    SCOPED_TRACE(std::string(DTypeName(dt)));
    EXPECT_TRUE(Make(dt, 4, 1.5f).CheckRows().ok());
    // The largest finite values pass (f16 max 65504, fp8 448).
    const float big = dt == DType::kF16      ? 65504.0f
                      : dt == DType::kF8E4M3 ? 448.0f
                                             : 3e38f;
    EXPECT_TRUE(Make(dt, 2, -big).CheckRows().ok());
    for (float bad : {nan, inf, -inf}) {
      if (dt == DType::kF8E4M3 && std::isinf(bad)) continue;  // saturates
      KvSnapshot s = Make(dt, 4, 0.25f);
      Poison(&s, /*head=*/1, /*row=*/2, /*value=*/4, bad);  // a V value
      const absl::Status st = s.CheckRows();
      EXPECT_TRUE(absl::IsDataLoss(st)) << bad;
      EXPECT_NE(st.message().find("head 1 row 2"), std::string::npos) << st;
      EXPECT_NE(st.message().find("V value"), std::string::npos) << st;
    }
    KvSnapshot k = Make(dt, 3, 0.25f);
    Poison(&k, 0, 0, 0, nan);
    EXPECT_NE(k.CheckRows().message().find("K value"), std::string::npos);
  }
}

TEST(KvSnapshotTest, CheckRowsRefusesPartialRows) {
  KvSnapshot s = Make(DType::kBF16, 3, 1.0f);
  s.rows[0][1].pop_back();
  EXPECT_TRUE(absl::IsDataLoss(s.CheckRows()));
}

}  // namespace
}  // namespace latentkv::worker
