// Tensor parallelism on the real stories260K checkpoint, ranks as threads
// with real Gloo communicators on loopback: the sharded forward gives the
// same logits as one rank (1e-4), and a leader engine with followers gives
// the same greedy tokens as a single-rank engine, with eviction and a KV
// capacity on.
#include <cmath>
#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "model/shard.h"
#include "worker/engine/stories260k_for_tests.h"
#include "worker/tp/in_process_group.h"
#include "worker/tp/tensor_parallel.h"

namespace latentkv::worker {
namespace {

std::vector<std::unique_ptr<comm::Communicator>> Group(int size) {
  return JoinGlooGroup(size, absl::Seconds(20));
}

// Prompt of 37 tokens, then 12 single-token steps; logits of every step.
std::vector<float> RunSteps(std::shared_ptr<const model::ModelWeights> w,
                            comm::Communicator* comm) {
  auto backend = kernels::MakeCpuBackend();
  ModelRunner runner(w, backend.get(), comm);
  auto kv_storage = CreateKvStorage(runner, backend.get(), {.page_size = 4});
  EXPECT_TRUE(kv_storage.ok());
  auto& cache = kv_storage->cache;
  auto& pools = kv_storage->pools;
  std::vector<int32_t> tokens = {1};
  for (int i = 0; i < 48; ++i) tokens.push_back(259 + (i * 37) % 250);
  SequenceKv kv;
  kv.Init(*cache);
  std::vector<float> all, logits;
  int64_t pos = 0;
  while (pos < static_cast<int64_t>(tokens.size())) {
    const int32_t len = pos == 0 ? 37 : 1;
    EXPECT_TRUE(kv.Reserve(*cache, len).ok());
    ForwardChunk ch;
    ch.kv = &kv;
    ch.tokens = tokens.data() + pos;
    ch.len = len;
    ch.start = pos;
    EXPECT_TRUE(runner.Forward({ch}, *cache, *pools, &logits).ok());
    all.insert(all.end(), logits.begin(), logits.end());
    pos += len;
  }
  kv.Release(*cache);
  return all;
}

class TensorParallelTest : public ::testing::TestWithParam<int> {};

TEST_P(TensorParallelTest, ShardedLogitsEqualOneRank) {
  const int size = GetParam();
  const std::vector<float> want = RunSteps(Stories260k(), nullptr);
  auto group = Group(size);
  std::vector<std::vector<float>> got(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto shard = model::ShardForTensorParallel(Stories260k(), r, size);
      ASSERT_TRUE(shard.ok()) << shard.status();
      got[r] = RunSteps(*shard, group[r].get());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < size; ++r) {
    ASSERT_EQ(got[r].size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[r][i], want[i], 1e-4 * (1 + std::abs(want[i])))
          << "rank " << r << " index " << i;
    }
  }
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;         // odd requests: generated tokens'
  std::vector<float> prompt_logprobs;  // and the prompt's (every row's logits)
  absl::Status status;
};

std::vector<Outcome> Serve(Engine& e, int n_requests) {
  std::vector<Outcome> out(n_requests);
  std::vector<std::promise<void>> done(n_requests);
  for (int i = 0; i < n_requests; ++i) {
    GenerationRequest r;
    r.id = "r" + std::to_string(i);
    r.prompt = {1};
    for (int j = 0; j < 20 + 9 * i; ++j)
      r.prompt.push_back(259 + (i * 31 + j * 7) % 250);
    r.max_new_tokens = 60;
    r.ignore_eos = true;
    if (i % 2 == 1) {
      r.sampling.logprobs = 2;
      r.sampling.prompt_logprobs = true;
    }
    Outcome* o = &out[i];
    std::promise<void>* d = &done[i];
    EXPECT_TRUE(e.Submit(std::move(r), [o, d](const GenerationEvent& ev) {
                   if (ev.token >= 0) o->tokens.push_back(ev.token);
                   if (ev.logprobs) o->logprobs.push_back(ev.logprobs->logprob);
                   for (const TokenLogprobs& t : ev.prompt_logprobs) {
                     o->prompt_logprobs.push_back(t.logprob);
                   }
                   if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
                     o->status = ev.status;
                     d->set_value();
                   }
                 }).ok());
  }
  for (auto& d : done) d.get_future().wait();
  return out;
}

TEST_P(TensorParallelTest, LeaderAndFollowersGiveSingleRankTokens) {
  const int size = GetParam();
  EngineOptions o;
  o.kv.page_size = 4;
  o.kv.max_bytes = 2 << 20;
  o.scheduler.max_step_tokens = 24;  // chunked prefill mixed with decode
  o.residency.policy = "spindle";
  o.residency.codebook_layers = 0;
  o.residency.budget = 0.5;
  o.residency.window = 8;
  o.residency.capacity = {64};
  std::vector<Outcome> want;
  {
    auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
    ASSERT_TRUE(e.ok()) << e.status();
    want = Serve(**e, 6);
  }
  auto group = Group(size);
  std::vector<std::unique_ptr<TpFollower>> followers(size);
  std::vector<absl::Status> follower_status(size);
  std::vector<std::thread> threads;
  for (int r = 1; r < size; ++r) {
    auto shard = model::ShardForTensorParallel(Stories260k(), r, size);
    ASSERT_TRUE(shard.ok());
    auto f = TpFollower::Create(*shard, kernels::MakeCpuBackend(), o,
                                group[r].get());
    ASSERT_TRUE(f.ok()) << f.status();
    followers[r] = std::move(*f);
    threads.emplace_back([&, r] { follower_status[r] = followers[r]->Run(); });
  }
  TpLeader leader(group[0].get());
  EngineOptions lo = o;
  lo.step_listener = &leader;
  auto shard0 = model::ShardForTensorParallel(Stories260k(), 0, size);
  ASSERT_TRUE(shard0.ok());
  auto e =
      Engine::Create(*shard0, kernels::MakeCpuBackend(), lo, group[0].get());
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<Outcome> got = Serve(**e, 6);
  (*e)->Stop();  // broadcasts shutdown
  for (auto& t : threads) t.join();
  for (int r = 1; r < size; ++r) {
    EXPECT_TRUE(follower_status[r].ok()) << follower_status[r];
    EXPECT_GT(followers[r]->steps(), 0);
  }
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    // Log-probabilities, the prompt's included (all rows' logits across the
    // group), as on one rank.
    ASSERT_EQ(got[i].prompt_logprobs.size(), want[i].prompt_logprobs.size());
    ASSERT_EQ(got[i].logprobs.size(), want[i].logprobs.size());
    if (i % 2 == 1) {
      EXPECT_EQ(want[i].prompt_logprobs.size(), 20 + 9 * i);
    }
    for (size_t k = 0; k < got[i].prompt_logprobs.size(); ++k) {
      EXPECT_NEAR(got[i].prompt_logprobs[k], want[i].prompt_logprobs[k], 1e-3);
    }
    for (size_t k = 0; k < got[i].logprobs.size(); ++k) {
      EXPECT_NEAR(got[i].logprobs[k], want[i].logprobs[k], 1e-3);
    }
  }
  EXPECT_GT((*e)->Stats().kv_evicted_slots, 0);
}

INSTANTIATE_TEST_SUITE_P(Sizes, TensorParallelTest, ::testing::Values(2, 4));

TEST(TensorParallelCheckTest, RanksConfiguredDifferentlyRefuseToServe) {
  EngineOptions a;
  EngineOptions b = a;
  b.kv.dtype = DType::kBF16;
  const model::ModelConfig& c = Stories260k()->config;
  EXPECT_NE(GroupKvLayout(a, c), GroupKvLayout(b, c));
  EngineOptions d = a;
  d.residency.window = 9;
  EXPECT_NE(GroupKvLayout(a, c), GroupKvLayout(d, c));
  for (const EngineOptions* other : {&a, &b}) {
    auto group = Group(3);
    std::vector<absl::Status> st(3);
    std::vector<std::thread> threads;
    for (int r = 0; r < 3; ++r) {
      threads.emplace_back([&, r] {
        st[r] = AgreeOnGroupLayout(group[r].get(),
                                   GroupKvLayout(r == 2 ? *other : a, c));
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < 3; ++r) {
      if (other == &a) {
        EXPECT_TRUE(st[r].ok()) << st[r];
      } else {
        // Every rank learns it, naming the rank that differs.
        EXPECT_TRUE(absl::IsFailedPrecondition(st[r])) << st[r];
        EXPECT_NE(st[r].message().find("rank 2"), std::string::npos);
      }
    }
  }
}

TEST(TensorParallelCheckTest, CodebookLayersRefusedWithMoreThanOneRank) {
  ResidencyOptions o;
  o.policy = "spindle";
  EXPECT_EQ(CheckTensorParallelResidency(o, 5, 2).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckTensorParallelResidency(o, 5, 1).ok());
  o.codebook_layers = 0;
  EXPECT_TRUE(CheckTensorParallelResidency(o, 5, 2).ok());
  EXPECT_FALSE(model::ShardForTensorParallel(Stories260k(), 0, 3).ok());
  EXPECT_FALSE(model::ShardForTensorParallel(Stories260k(), 2, 2).ok());
}

}  // namespace
}  // namespace latentkv::worker
