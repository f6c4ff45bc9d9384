#include "coordinator/metrics/request_timeline.h"

#include <numeric>

#include "gtest/gtest.h"

namespace latentkv::coordinator {
namespace {

using Ms = std::chrono::milliseconds;

TEST(RequestTimelineTest, LatenciesFromMessageTimes) {
  const auto t0 = RequestTimeline::Clock::now();
  RequestTimeline tl(t0);
  tl.OnMessage(t0 + Ms(5), 0);    // no tokens: ignored
  tl.OnMessage(t0 + Ms(100), 2);  // first token + one more, together
  tl.OnMessage(t0 + Ms(130), 1);
  tl.OnMessage(t0 + Ms(190), 3);  // 60 ms over 3 tokens
  const auto end = t0 + Ms(200);
  EXPECT_EQ(tl.tokens(), 6);
  EXPECT_NEAR(*tl.ttft_s(), 0.100, 1e-9);
  EXPECT_NEAR(tl.e2e_s(end), 0.200, 1e-9);
  EXPECT_NEAR(*tl.tpot_s(end), 0.100 / 5, 1e-9);
  const std::vector<double>& itl = tl.itl_s();
  ASSERT_EQ(itl.size(), 5u);  // tokens - 1
  EXPECT_EQ(itl[0], 0.0);
  EXPECT_NEAR(itl[1], 0.030, 1e-9);
  EXPECT_NEAR(itl[2], 0.020, 1e-9);
  EXPECT_NEAR(itl[4], 0.020, 1e-9);
  // ITLs add up to last token message - first token message.
  EXPECT_NEAR(std::accumulate(itl.begin(), itl.end(), 0.0), 0.090, 1e-9);
}

TEST(RequestTimelineTest, CallsWithoutTokens) {
  const auto t0 = RequestTimeline::Clock::now();
  RequestTimeline none(t0);
  EXPECT_FALSE(none.ttft_s().has_value());
  EXPECT_FALSE(none.tpot_s(t0 + Ms(3)).has_value());
  EXPECT_TRUE(none.itl_s().empty());
  RequestTimeline one(t0);
  one.OnMessage(t0 + Ms(10), 1);
  EXPECT_TRUE(one.ttft_s().has_value());
  EXPECT_FALSE(one.tpot_s(t0 + Ms(11)).has_value());
  EXPECT_TRUE(one.itl_s().empty());
}

}  // namespace
}  // namespace latentkv::coordinator
