// The supervisor over real processes (/bin/sleep): a dead process takes its
// unit down and the unit comes back after the back-off, which doubles;
// a critical unit's death is reported and not restarted.
#include "tools/cli/supervisor.h"

#include <signal.h>
#include <sys/wait.h>

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::cli {
namespace {

using std::chrono::milliseconds;

bool Alive(pid_t p) { return p > 0 && kill(p, 0) == 0; }

Supervisor::Factory Sleepers(int n, std::vector<int>* incarnations) {
  return [n, incarnations](int incarnation) {
    incarnations->push_back(incarnation);
    return std::vector<std::vector<std::string>>(
        n, std::vector<std::string>{"/bin/sleep", "60"});
  };
}

TEST(SupervisorTest, AUnitRestartsWholeAfterABackoffThatDoubles) {
  Supervisor::Options o;
  o.first_backoff = milliseconds(100);
  o.stop_grace = milliseconds(500);
  Supervisor s(o);
  std::vector<int> inc;
  const int group = s.Add("group-0", Sleepers(2, &inc), /*critical=*/false);
  ASSERT_EQ(s.pids(group).size(), 2u);
  const pid_t first = s.pids(group)[0], second = s.pids(group)[1];
  ASSERT_TRUE(Alive(first) && Alive(second));

  kill(first, SIGKILL);
  std::this_thread::sleep_for(milliseconds(50));
  const auto t0 = Supervisor::Clock::now();
  EXPECT_TRUE(s.Poll(t0));
  EXPECT_FALSE(Alive(second)) << "the rest of the unit is stopped";
  EXPECT_TRUE(s.pids(group).empty());
  EXPECT_TRUE(s.Poll(t0 + milliseconds(50)));  // still backing off
  EXPECT_TRUE(s.pids(group).empty());
  EXPECT_TRUE(s.Poll(t0 + milliseconds(100)));
  ASSERT_EQ(s.pids(group).size(), 2u);
  EXPECT_EQ(s.restarts(group), 1);
  EXPECT_EQ(inc, (std::vector<int>{0, 1}));
  for (pid_t p : s.pids(group)) EXPECT_TRUE(Alive(p));

  // The second death waits twice as long.
  const pid_t again = s.pids(group)[1];
  kill(again, SIGKILL);
  const auto t1 = t0 + milliseconds(200);
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_TRUE(s.Poll(t1));
  EXPECT_TRUE(s.Poll(t1 + milliseconds(150)));
  EXPECT_TRUE(s.pids(group).empty());
  EXPECT_TRUE(s.Poll(t1 + milliseconds(200)));
  EXPECT_EQ(s.pids(group).size(), 2u);
  EXPECT_EQ(inc, (std::vector<int>{0, 1, 2}));
  s.StopAll(milliseconds(500));
  EXPECT_TRUE(s.pids(group).empty());
}

TEST(SupervisorTest, ACriticalUnitsDeathIsReportedNotRestarted) {
  Supervisor s;
  std::vector<int> inc_c, inc_w;
  const int coord = s.Add("coordinator", Sleepers(1, &inc_c), true);
  const int worker = s.Add("worker", Sleepers(1, &inc_w), false);
  const pid_t c = s.pids(coord)[0];
  kill(c, SIGKILL);
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_FALSE(s.Poll(Supervisor::Clock::now()));
  EXPECT_EQ(s.failed(), "coordinator");
  EXPECT_FALSE(s.Poll(Supervisor::Clock::now() + std::chrono::seconds(60)));
  EXPECT_EQ(inc_c, (std::vector<int>{0}));
  const pid_t w = s.pids(worker)[0];
  EXPECT_TRUE(Alive(w));
  s.StopAll(milliseconds(500));
  EXPECT_FALSE(Alive(w));
}

}  // namespace
}  // namespace latentkv::cli
