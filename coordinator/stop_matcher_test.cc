#include "coordinator/stop_matcher.h"

#include "gtest/gtest.h"

namespace latentkv::coordinator {
namespace {

// Feeds pieces and returns everything emitted (plus the flush if not stopped).
std::string Feed(std::vector<std::string> stops,
                 std::vector<std::string> pieces, bool* stopped) {
  StopMatcher m(std::move(stops));
  std::string out;
  for (const auto& p : pieces) {
    out += m.Push(p);
    if (m.stopped()) break;
  }
  if (!m.stopped()) out += m.Flush();
  *stopped = m.stopped();
  return out;
}

TEST(StopMatcherTest, Table) {
  struct Case {
    std::vector<std::string> stops;
    std::vector<std::string> pieces;
    std::string want;
    bool want_stop;
  };
  const std::vector<Case> cases = {
      {{}, {"a", "b"}, "ab", false},
      {{"END"}, {"abc", "E", "N", "D", "zzz"}, "abc", true},
      {{"END"}, {"abE", "Nx"}, "abENx", false},
      {{"xyz", "b"}, {"aaxy", "zb"}, "aa", true},  // earliest stop wins
      {{"\n\n"}, {"one\n", "\ntwo"}, "one", true},
      {{""}, {"keep"}, "keep", false},
      {{"lo"}, {"hello world"}, "hel", true},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    bool stopped = false;
    EXPECT_EQ(Feed(cases[i].stops, cases[i].pieces, &stopped), cases[i].want)
        << "case " << i;
    EXPECT_EQ(stopped, cases[i].want_stop) << "case " << i;
  }
}

TEST(StopMatcherTest, HoldsBackOnlyPossibleStopPrefixes) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Push("abcS"), "abc");
  EXPECT_EQ(m.Push("T"), "");
  EXPECT_EQ(m.Push("x"), "STx");
  EXPECT_FALSE(m.stopped());
}

}  // namespace
}  // namespace latentkv::coordinator
