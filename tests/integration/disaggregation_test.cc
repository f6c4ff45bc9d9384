// Prefill/decode disaggregation with real processes on loopback: a prefill
// worker computes each prompt's latent KV and streams it to a decode worker
// (Worker.Prefill, layout checked on arrival). Same greedy tokens as one
// mixed worker; the bytes moved are the latent formula; a layout mismatch or
// a dead prefill worker falls back to prefilling on the decode worker.
#include <signal.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

const std::vector<std::string> kPrompts = {
    "Once upon a time", "The little dog was very happy because",
    "Tom and Lily went to the park to play with a red ball"};

std::string KvLatentDir() {
  static const std::string dir = [] {
    const std::string out = MakeTempDir() + "/kvl50";
    int code = -1;
    RunCommand(
        {BinDir() + "/latentkv", "convert", "--model=" + Stories260kDir(),
         "--out=" + out, "--kv-latent=d_qk=4,d_vo=4", "--init=calibrated",
         "--joint_heads=false",  // per-head latents: 4 KV heads below
         "--calib-text=" + std::string(LATENTKV_SHARED_DIR) +
             "/text/tinystories_train_excerpt.txt",
         "--calib-lines=50"},
        &code);
    EXPECT_EQ(code, 0);
    return out;
  }();
  return dir;
}

std::vector<std::vector<int32_t>> Generations(Cluster& c) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& p : kPrompts) {
    StreamResult r = Generate(c.stub(), Greedy(p, 60));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message() << c.Logs();
    out.push_back(r.tokens);
  }
  return out;
}

// One mixed worker's generations.
std::vector<std::vector<int32_t>> Mixed(
    const std::string& model,
    const std::vector<std::string>& worker_args = {}) {
  ClusterOptions o;
  o.model_dir = model;
  o.worker_args = worker_args;
  Cluster c(o);
  return Generations(c);
}

// A prefill worker (0) and a decode worker (1).
ClusterOptions PrefillDecode(const std::string& model,
                             const std::vector<std::string>& worker_args = {}) {
  ClusterOptions o;
  o.model_dir = model;
  o.worker_args = worker_args;
  o.workers = 2;
  o.per_worker_args = {{"--role=prefill"}, {"--role=decode"}};
  return o;
}

int64_t PromptTokens(Cluster& c, const std::string& p) {
  grpc::ClientContext ctx;
  pb::TokenizeRequest req;
  req.set_text(p);
  req.set_add_bos(true);
  pb::TokenizeResponse resp;
  EXPECT_TRUE(c.stub().Tokenize(&ctx, req, &resp).ok());
  return resp.token_ids_size();
}

TEST(DisaggregationTest, PrefillAndDecodeWorkersEqualOneMixedWorker) {
  const auto want = Mixed(KvLatentDir());
  Cluster c(PrefillDecode(KvLatentDir()));
  EXPECT_EQ(Generations(c), want);
  const pb::WorkerStats d = c.WorkerStats(1);
  EXPECT_EQ(d.kv_transfers(), kPrompts.size());
  EXPECT_EQ(d.kv_transfer_fallbacks(), 0u);
  // The latent layout moves, per prompt token, layer and KV head, a
  // position and d_qk + d_vo = 4 + 4 values; full head dims would be 8 + 8.
  int64_t tokens = 0;
  for (const std::string& p : kPrompts) tokens += PromptTokens(c, p);
  EXPECT_EQ(d.kv_transfer_bytes(), tokens * 5 * 4 * (1 + 4 + 4) * 4);
  EXPECT_EQ(d.kv_transfer_full_bytes(), tokens * 5 * 4 * (1 + 8 + 8) * 4);
  // The prefill worker decoded nothing beyond the first tokens.
  EXPECT_EQ(c.WorkerStats(0).tokens_generated(), kPrompts.size());
}

// SpindleKV with codebook layers on both sides: eviction layers move as
// kept rows, codebook layers as their codebook entries (compressed), with no
// fallback; the same greedy tokens as one mixed worker with that policy.
TEST(DisaggregationTest, SpindleCodebookLayersMoveCompressed) {
  const std::vector<std::string> spindle = {
      "--page_size=4", "--kv_policy=spindle", "--kv_budget=0.4",
      "--kv_window=8", "--kv_codebook_layers=2"};
  const auto want = Mixed(Stories260kDir(), spindle);
  Cluster c(PrefillDecode(Stories260kDir(), spindle));
  EXPECT_EQ(Generations(c), want);
  const pb::WorkerStats d = c.WorkerStats(1);
  EXPECT_EQ(d.kv_transfers(), kPrompts.size());
  EXPECT_EQ(d.kv_transfer_fallbacks(), 0u);
  EXPECT_EQ(d.kv_imports(), kPrompts.size());
  // (These prompts are a few tokens, so the query windows that move with
  // the KV weigh about as much as it: no byte ratio is checked here;
  // transfer_bench measures it on long prompts.)
  EXPECT_GT(d.kv_transfer_bytes(), 0u);
}

TEST(DisaggregationTest, LayoutMismatchIsRefusedAndPrefilledLocally) {
  const auto want = Mixed(KvLatentDir());
  ClusterOptions o;
  o.model_dir = KvLatentDir();
  o.workers = 2;
  // The prefill worker serves the full-dimension model: its layout differs.
  o.per_worker_args = {{"--role=prefill", "--model=" + Stories260kDir()},
                       {"--role=decode"}};
  Cluster c(o);
  EXPECT_EQ(Generations(c), want);
  const pb::WorkerStats d = c.WorkerStats(1);
  EXPECT_EQ(d.kv_transfers(), 0u);
  EXPECT_EQ(d.kv_transfer_fallbacks(), kPrompts.size());
  EXPECT_EQ(d.kv_imports(), 0u);
}

TEST(DisaggregationTest, DeadPrefillWorkerFallsBackToLocalPrefill) {
  const auto want = Mixed(Stories260kDir());
  Cluster c(PrefillDecode(Stories260kDir()));
  ASSERT_EQ(kill(c.worker(0).pid(), SIGKILL), 0);
  // Until its registration lapses the coordinator may still name it; the
  // decode worker then cannot reach it and prefills itself.
  EXPECT_EQ(Generations(c), want);
}

TEST(DisaggregationTest, KilledDecodeWorkerMidStreamLosesNoTokens) {
  std::vector<StreamResult> want;
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster c(o);
    want = LongStreams(c, 400);
  }
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 3;
  o.per_worker_args = {
      {"--role=prefill"}, {"--role=decode"}, {"--role=decode"}};
  Cluster c(o);
  // Mid-stream: once decode worker 1 is running streams that have tokens.
  const std::vector<StreamResult> got = LongStreams(c, 400, &c.worker(1));
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    ASSERT_EQ(want[i].tokens.size(), 400u);
    // No token duplicated or lost across the failover.
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "stream " << i;
  }
}

}  // namespace
}  // namespace latentkv::testing
