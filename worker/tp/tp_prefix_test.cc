// The local prefix cache in a tensor-parallel group (ranks as threads, real
// Gloo, stories260K): the leader's index decides and every follower repeats
// its index/attach/evict changes in order. Under KV memory pressure (cached
// blocks evicted, sequences preempted) and with prompts sharing prefixes,
// the group streams one TP = 1 engine's greedy tokens, shares cached blocks
// (hits counted), evicts, and no follower diverges.
#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/stories260k_for_tests.h"
#include "worker/tp/in_process_group.h"

namespace latentkv::worker {
namespace {

// Wave w's request i: a 24-token shared prefix (one of two), a tail.
GenerationRequest Request(int w, int i) {
  GenerationRequest r;
  r.id = "w" + std::to_string(w) + "r" + std::to_string(i);
  r.prompt = {1};
  for (int j = 0; j < 23; ++j) r.prompt.push_back(259 + (i % 2) * 97 + j * 5);
  for (int j = 0; j < 3 + i; ++j) r.prompt.push_back(300 + w * 31 + i * 7 + j);
  r.max_new_tokens = 40;
  r.ignore_eos = true;
  return r;
}

// Two waves of 8 concurrent requests; tokens in order.
std::vector<std::vector<int32_t>> Waves(Engine& e) {
  std::vector<std::vector<int32_t>> out;
  for (int w = 0; w < 2; ++w) {
    std::vector<std::vector<int32_t>> tokens(8);
    std::vector<std::promise<void>> done(8);
    for (int i = 0; i < 8; ++i) {
      auto* t = &tokens[i];
      auto* d = &done[i];
      EXPECT_TRUE(e.Submit(Request(w, i), [t, d](const GenerationEvent& ev) {
                     if (ev.token >= 0) t->push_back(ev.token);
                     EXPECT_TRUE(ev.status.ok()) << ev.status;
                     if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
                       d->set_value();
                     }
                   }).ok());
    }
    for (auto& d : done) d.get_future().wait();
    out.insert(out.end(), tokens.begin(), tokens.end());
  }
  return out;
}

class TpPrefixCacheTest : public ::testing::TestWithParam<int> {};

TEST_P(TpPrefixCacheTest, GroupSharesEvictsAndMatchesOneRank) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.scheduler.max_step_tokens = 32;
  o.prefix_caching = true;
  std::vector<std::vector<int32_t>> want;
  {
    EngineOptions one = o;
    one.kv.max_bytes = 1 << 20;
    InProcessGroup g(Stories260k(), 1, one);
    want = Waves(g.engine());
  }
  // Per rank: room for a few of the 8 sequences' KV at once.
  o.kv.max_bytes = 96 << 10;
  InProcessGroup g(Stories260k(), GetParam(), o);
  EXPECT_EQ(Waves(g.engine()), want);
  const EngineStats s = g.engine().Stats();
  EXPECT_GT(s.prefix_hits, 0);
  EXPECT_GT(s.prefix_hit_tokens, 0);
  EXPECT_GT(s.prefix_evicted_blocks, 0);
  EXPECT_GT(s.preemptions, 0);
  for (const absl::Status& st : g.Stop()) EXPECT_TRUE(st.ok()) << st;
}

INSTANTIATE_TEST_SUITE_P(Ranks, TpPrefixCacheTest, ::testing::Values(2, 4));

}  // namespace
}  // namespace latentkv::worker
