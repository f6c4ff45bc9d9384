// PollUntil on a fake clock (the pauses it takes, where it stops) and once on
// the real one.
#include "worker/comm/poll_until.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::comm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Time moves only when the loop sleeps.
class FakeClock final : public PollClock {
 public:
  absl::Time Now() override { return now_; }
  void Sleep(absl::Duration d) override {
    sleeps.push_back(d);
    now_ += d;
  }
  // Time passing outside Sleep (e.g. inside a poll).
  void Advance(absl::Duration d) { now_ += d; }
  absl::Time start() const { return absl::UnixEpoch(); }
  std::vector<absl::Duration> sleeps;

 private:
  absl::Time now_ = absl::UnixEpoch();
};

PollOptions Options(FakeClock* clock) {
  PollOptions o;
  o.min_interval = absl::Milliseconds(1);
  o.max_interval = absl::Milliseconds(4);
  o.clock = clock;
  return o;
}

TEST(PollUntilTest, DoneAtOnceNeverSleeps) {
  FakeClock clock;
  int polls = 0;
  EXPECT_TRUE(PollUntil(clock.start() + absl::Seconds(1), Options(&clock), "x",
                        [&]() -> absl::StatusOr<bool> {
                          ++polls;
                          return true;
                        })
                  .ok());
  EXPECT_EQ(polls, 1);
  EXPECT_TRUE(clock.sleeps.empty());
}

TEST(PollUntilTest, PausesDoubleUpToTheMaximum) {
  FakeClock clock;
  int polls = 0;
  EXPECT_TRUE(PollUntil(clock.start() + absl::Seconds(1), Options(&clock), "x",
                        [&]() -> absl::StatusOr<bool> { return ++polls == 5; })
                  .ok());
  EXPECT_EQ(polls, 5);
  EXPECT_THAT(clock.sleeps,
              ElementsAre(absl::Milliseconds(1), absl::Milliseconds(2),
                          absl::Milliseconds(4), absl::Milliseconds(4)));
}

TEST(PollUntilTest, DeadlinePassesAfterAFinalPollAtTheDeadline) {
  FakeClock clock;
  const absl::Time deadline = clock.start() + absl::Milliseconds(10);
  std::vector<absl::Time> polled_at;
  const absl::Status s = PollUntil(deadline, Options(&clock), "waiting for y",
                                   [&]() -> absl::StatusOr<bool> {
                                     polled_at.push_back(clock.Now());
                                     return false;
                                   });
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(s.message(), HasSubstr("waiting for y: not done after 10ms"));
  // Pauses 1, 2, 4, then 3 (cut at the deadline): the last poll is at it.
  EXPECT_THAT(clock.sleeps,
              ElementsAre(absl::Milliseconds(1), absl::Milliseconds(2),
                          absl::Milliseconds(4), absl::Milliseconds(3)));
  ASSERT_EQ(polled_at.size(), 5u);
  EXPECT_EQ(polled_at.back(), deadline);
}

TEST(PollUntilTest, ConditionMetAtTheDeadlineIsSeen) {
  FakeClock clock;
  const absl::Time deadline = clock.start() + absl::Milliseconds(10);
  EXPECT_TRUE(
      PollUntil(deadline, Options(&clock), "x", [&]() -> absl::StatusOr<bool> {
        return clock.Now() >= deadline;
      }).ok());
}

TEST(PollUntilTest, PastDeadlinePollsOnce) {
  FakeClock clock;
  int polls = 0;
  const absl::Status s =
      PollUntil(clock.start() - absl::Seconds(1), Options(&clock), "x",
                [&]() -> absl::StatusOr<bool> {
                  ++polls;
                  return false;
                });
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(polls, 1);
  EXPECT_TRUE(clock.sleeps.empty());
}

TEST(PollUntilTest, PollErrorStopsTheWait) {
  FakeClock clock;
  int polls = 0;
  const absl::Status s =
      PollUntil(clock.start() + absl::Seconds(1), Options(&clock), "x",
                [&]() -> absl::StatusOr<bool> {
                  if (++polls == 3) return absl::UnavailableError("peer died");
                  return false;
                });
  EXPECT_EQ(s, absl::UnavailableError("peer died"));
  EXPECT_EQ(polls, 3);
}

TEST(PollUntilTest, SpinPhaseOnlyYields) {
  FakeClock clock;
  PollOptions o = Options(&clock);
  o.spin = absl::Milliseconds(2);
  int polls = 0;
  // Each poll takes 1 ms: yields while within 2 ms of the first poll, then
  // pauses of 1 and 2 ms.
  EXPECT_TRUE(PollUntil(clock.start() + absl::Seconds(1), o, "x",
                        [&]() -> absl::StatusOr<bool> {
                          clock.Advance(absl::Milliseconds(1));
                          return ++polls == 4;
                        })
                  .ok());
  EXPECT_THAT(clock.sleeps,
              ElementsAre(absl::ZeroDuration(), absl::Milliseconds(1),
                          absl::Milliseconds(2)));
}

TEST(PollUntilTest, RealClockWaitsUntilTheDeadline) {
  const absl::Time start = absl::Now();
  PollOptions o;
  o.min_interval = absl::Milliseconds(1);
  o.max_interval = absl::Milliseconds(5);
  const absl::Status s =
      PollUntil(start + absl::Milliseconds(50), o, "x",
                []() -> absl::StatusOr<bool> { return false; });
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(waited, absl::Milliseconds(50));
  EXPECT_LT(waited, absl::Seconds(2));
}

}  // namespace
}  // namespace latentkv::comm
