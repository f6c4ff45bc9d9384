// Tensor-parallel groups in the disaggregated topology, as real processes on
// loopback (Gloo groups): prefill and decode groups of equal and mixed TP
// sizes (2 -> 1, 1 -> 2, 2 -> 2, 2 -> 4) stream exactly one TP = 1 mixed
// worker's greedy tokens for 24 concurrent streams, with every transfer
// taken (no fallback) and the bytes moved the latent minimum (each KV head's
// rows once) whatever the sizes; the kvstore shared by a TP = 2 and a TP = 1
// group gives prefix hits across sizes, one request at a time and with 24
// concurrent streams; a prefill group whose follower rank died leaves the
// decode group to prefill locally, with the same tokens; a decode group
// whose rank dies mid-stream hands its streams to another decode group
// without losing a token.
#include <signal.h>

#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

constexpr int kStreams = 24;
constexpr int kTokens = 24;

const std::vector<std::string> kStarts = {
    "Once upon a time",    "The little dog",  "Tom and Lily went",
    "One day, a bird",     "The sun was",     "There was a big tree",
    "Lucy found a shiny",  "The cat and the", "A boy named Max",
    "In the garden there", "Mom said to Ben", "The old man had a"};

std::string PromptOf(int i) {
  return kStarts[i % kStarts.size()] + (i < 12 ? "" : " and then");
}

// Every stream at once (stream i's prompt: prompt(i)); the tokens of each.
std::vector<std::vector<int32_t>> Streams(
    Cluster& c, const std::function<std::string(int)>& prompt = PromptOf) {
  std::vector<StreamResult> r(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back(
        [&, i] { r[i] = Generate(c.stub(), Greedy(prompt(i), kTokens)); });
  }
  for (auto& t : threads) t.join();
  std::vector<std::vector<int32_t>> out;
  for (const StreamResult& s : r) {
    EXPECT_TRUE(s.status.ok()) << s.status.error_message() << c.Logs();
    out.push_back(s.tokens);
  }
  return out;
}

const std::vector<std::vector<int32_t>>& Reference() {
  static const auto* want = [] {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster c(o);
    return new std::vector<std::vector<int32_t>>(Streams(c));
  }();
  return *want;
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

struct Sizes {
  int prefill, decode;
};

class TpDisaggregationTest : public ::testing::TestWithParam<Sizes> {};

TEST_P(TpDisaggregationTest, GroupsOfAnySizesGiveOneWorkersTokens) {
  const auto& want = Reference();
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.per_worker_tp = {GetParam().prefill, GetParam().decode};
  o.per_worker_args = {{"--role=prefill"}, {"--role=decode"}};
  Cluster c(o);
  EXPECT_EQ(Streams(c), want);
  const pb::WorkerStats d = c.WorkerStats(1);
  EXPECT_EQ(d.kv_transfers(), static_cast<uint64_t>(kStreams));
  EXPECT_EQ(d.kv_transfer_fallbacks(), 0u) << c.Logs();
  // With several ranks on either side every prefill rank parks its KV
  // heads and every decode rank pulls its own from them.
  EXPECT_EQ(d.kv_transfers_pulled(), static_cast<uint64_t>(kStreams))
      << c.Logs();
  EXPECT_EQ(d.kv_imports(), static_cast<uint64_t>(kStreams));
  // Each prompt token's rows once: 5 layers x 4 KV heads x (position + 8 K
  // + 8 V) x 4 bytes, whatever the groups' sizes.
  int64_t tokens = 0;
  for (int i = 0; i < kStreams; ++i) tokens += PromptTokens(c, PromptOf(i));
  EXPECT_EQ(d.kv_transfer_bytes(), tokens * 5 * 4 * (1 + 8 + 8) * 4);
  EXPECT_EQ(c.WorkerStats(0).tokens_generated(),
            static_cast<uint64_t>(kStreams));
}

INSTANTIATE_TEST_SUITE_P(Sizes, TpDisaggregationTest,
                         ::testing::Values(Sizes{2, 1}, Sizes{1, 2},
                                           Sizes{2, 2}, Sizes{2, 4}),
                         [](const auto& info) {
                           return "P" + std::to_string(info.param.prefill) +
                                  "D" + std::to_string(info.param.decode);
                         });

TEST(TpDisaggregationFailureTest, DeadPrefillRankMeansLocalPrefill) {
  const auto& want = Reference();
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.per_worker_tp = {2, 2};
  o.per_worker_args = {{"--role=prefill"}, {"--role=decode"}};
  Cluster c(o);
  ASSERT_EQ(kill(c.follower(0, 1).pid(), SIGKILL), 0);
  // The prefill group breaks on its next step (its leader then leaves):
  // every transfer that fails is prefilled by the decode group.
  EXPECT_EQ(Streams(c), want);
  const pb::WorkerStats d = c.WorkerStats(1);
  EXPECT_EQ(d.kv_transfers() + d.kv_transfer_fallbacks(),
            static_cast<uint64_t>(kStreams));
  EXPECT_GT(d.kv_transfer_fallbacks(), 0u);
}

// A decode group whose rank dies mid-stream breaks (its leader leaves); the
// coordinator finishes its streams on the other decode group, which takes
// the prompts' KV from the prefill group again: no token lost or repeated.
TEST(TpDisaggregationFailureTest, DeadDecodeRankMidStreamLosesNoTokens) {
  std::vector<StreamResult> want;
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster c(o);
    want = LongStreams(c, 300);
  }
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 3;
  o.per_worker_tp = {2, 2, 2};
  o.per_worker_args = {
      {"--role=prefill"}, {"--role=decode"}, {"--role=decode"}};
  Cluster c(o);
  // Rank 1 of decode group 1 dies once that group is streaming.
  const std::vector<StreamResult> got = LongStreams(c, 300, &c.follower(1, 1));
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    ASSERT_EQ(want[i].tokens.size(), 300u);
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "stream " << i;
  }
}

std::vector<int32_t> Tokenize(Cluster& c, const std::string& text) {
  grpc::ClientContext ctx;
  pb::TokenizeRequest req;
  req.set_text(text);
  req.set_add_bos(true);
  pb::TokenizeResponse resp;
  EXPECT_TRUE(c.stub().Tokenize(&ctx, req, &resp).ok());
  return {resp.token_ids().begin(), resp.token_ids().end()};
}

// Greedy tokens of `prompt` from worker i directly (no routing).
std::vector<int32_t> OnWorker(Cluster& c, int i, const std::string& prompt) {
  pb::WorkerGenerateRequest req;
  req.set_request_id("direct");
  for (int32_t t : Tokenize(c, prompt)) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_tokens(30);
  req.mutable_sampling()->set_temperature(0);
  grpc::ClientContext ctx;
  auto reader = c.WorkerStub(i)->Generate(&ctx, req);
  pb::WorkerGenerateResponse resp;
  std::vector<int32_t> out;
  while (reader->Read(&resp)) {
    out.insert(out.end(), resp.token_ids().begin(), resp.token_ids().end());
  }
  const grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  return out;
}

// Blocks written by a TP = 2 group (each rank its own KV heads) are hits
// for a TP = 1 group and the other way round (each rank of the TP = 2
// group fetching its own heads): the store keeps a block back until every
// head has arrived and slices it for any reader.
TEST(TpKvStoreTest, GroupsOfDifferentSizesShareStoredPrefixes) {
  const std::string base = LongStoryLine();
  ASSERT_FALSE(base.empty());
  const std::string other = "Tom and Lily " + base.substr(100);
  // {prompt, worker}: worker 0 is the TP = 2 group, worker 1 TP = 1.
  const std::vector<std::pair<std::string, int>> runs = {
      {base + " The end.", 0},
      {base + " Then they went home", 1},
      {other + " She smiled", 1},
      {other + " They laughed", 0}};
  // Then 24 concurrent streams over both groups, each sharing one of the
  // two stored prefixes.
  auto shared = [&](int i) {
    return (i % 2 ? other : base) + " " + PromptOf(i);
  };
  std::vector<std::vector<int32_t>> want, want_streams;
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster plain(o);
    for (const auto& [p, w] : runs) want.push_back(OnWorker(plain, 0, p));
    want_streams = Streams(plain, shared);
  }
  const std::string dir = MakeTempDir();
  Process store({BinDir() + "/latentkv-kvstore", "--port=0",
                 "--port_file=" + dir + "/kvstore.addr", "--capacity_mb=64"},
                dir + "/kvstore.log");
  const std::string addr = WaitForLine(dir + "/kvstore.addr", 30);
  ASSERT_FALSE(addr.empty());
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.per_worker_tp = {2, 1};
  o.worker_args = {"--kvstore=" + addr, "--kvstore_block_tokens=16",
                   "--prefix_caching=false"};
  Cluster c(o);
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(OnWorker(c, runs[i].second, runs[i].first), want[i])
        << runs[i].first;
    // Every rank publishes its heads asynchronously: let the blocks land
    // (whole: the store holds back a block until both ranks' heads came).
    EXPECT_TRUE(WaitForStoreToSettle(addr));
  }
  for (int w : {0, 1}) {
    const pb::WorkerStats s = c.WorkerStats(w);
    EXPECT_GT(s.kv_blocks_published(), 0u) << "worker " << w;
    // The second run on each worker found the other group's blocks.
    EXPECT_GE(s.kv_prefix_hit_tokens(), 64u) << "worker " << w;
    EXPECT_EQ(s.kv_imports(), 1u) << "worker " << w;
    EXPECT_EQ(s.kv_store_errors(), 0u) << "worker " << w;
  }
  EXPECT_EQ(Streams(c, shared), want_streams);
  uint64_t hits = 0;
  for (int w : {0, 1}) {
    const pb::WorkerStats s = c.WorkerStats(w);
    hits += s.kv_prefix_hit_tokens();
    EXPECT_EQ(s.kv_store_errors(), 0u) << "worker " << w;
  }
  // Each of the 24 found at least 6 stored blocks of its 400-character
  // prefix (plus the 2 x 64 tokens above).
  EXPECT_GE(hits, 2u * 64u + 24u * 96u);
}

}  // namespace
}  // namespace latentkv::testing
