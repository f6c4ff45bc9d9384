// KV transfer between tensor-parallel groups of different sizes, in one
// process (ranks as threads, real Gloo on loopback, the real stories260K
// checkpoint): a prefill group of P ranks exports each prompt's KV as the
// group's whole (every KV head, gathered from its ranks), a decode group of
// D ranks imports it (each rank its KV-head range) and decodes. For every
// (P, D) the greedy tokens equal one TP=1 engine's, with a full cache, with
// SnapKV eviction (query windows move with the rows), and for a stored
// prefix (kvstore-style import, the rest prefilled); the exported bytes are
// the same whatever P; a snapshot that does not split falls back to a local
// prefill, and so does a partial stored prefix.
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cache/kv_snapshot_heads.h"
#include "worker/engine/stories260k_for_tests.h"
#include "worker/tp/in_process_group.h"

namespace latentkv::worker {
namespace {

constexpr int kRequests = 8;
constexpr int kNewTokens = 40;

// A group of `size` ranks over stories260K (size 1: a plain engine).
class Group : public InProcessGroup {
 public:
  Group(int size, const EngineOptions& o,
        const InProcessGroup::PerRank& per_rank = {})
      : InProcessGroup(Stories260k(), size, o, per_rank) {}
  ~Group() {
    for (const absl::Status& st : Stop()) EXPECT_TRUE(st.ok()) << st;
  }
};

struct Outcome {
  std::vector<int32_t> tokens;
  std::shared_ptr<const KvSnapshot> kv;
  absl::Status status;
};

std::vector<int32_t> Prompt(int i) {
  std::vector<int32_t> p = {1};
  for (int j = 0; j < 20 + 7 * i; ++j)
    p.push_back(259 + (i * 31 + j * 7) % 250);
  return p;
}

// Runs `requests` concurrently; outcomes in order.
std::vector<Outcome> RunAll(Engine& e,
                            std::vector<GenerationRequest> requests) {
  std::vector<Outcome> out(requests.size());
  std::vector<std::promise<void>> done(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].id = "r" + std::to_string(i);
    requests[i].ignore_eos = true;
    Outcome* o = &out[i];
    std::promise<void>* d = &done[i];
    absl::Status st =
        e.Submit(std::move(requests[i]), [o, d](const GenerationEvent& ev) {
          if (ev.token >= 0) o->tokens.push_back(ev.token);
          if (ev.kv != nullptr) o->kv = ev.kv;
          if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
            o->status = ev.status;
            d->set_value();
          }
        });
    EXPECT_TRUE(st.ok()) << st;
  }
  for (auto& d : done) d.get_future().wait();
  return out;
}

std::vector<GenerationRequest> Plain(int n, int max_new) {
  std::vector<GenerationRequest> r(n);
  for (int i = 0; i < n; ++i) {
    r[i].prompt = Prompt(i);
    r[i].max_new_tokens = max_new;
  }
  return r;
}

EngineOptions Options(bool evict) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.kv.max_bytes = 4 << 20;
  o.scheduler.max_step_tokens = 48;
  if (evict) {
    o.residency.policy = "spindle";
    o.residency.codebook_layers = 0;
    o.residency.budget = 0.5;
    o.residency.window = 8;
    o.residency.capacity = {48};
  }
  return o;
}

struct Sizes {
  int prefill, decode;
  bool evict;
};

class GroupTransferTest : public ::testing::TestWithParam<Sizes> {};

TEST_P(GroupTransferTest, DecodeGroupGivesOneRanksTokens) {
  const Sizes s = GetParam();
  const EngineOptions o = Options(s.evict);
  std::vector<Outcome> want, prefilled;
  {
    Group one(1, o);
    want = RunAll(one.engine(), Plain(kRequests, kNewTokens));
    std::vector<GenerationRequest> ex = Plain(kRequests, 1);
    for (auto& r : ex) r.export_kv = true;
    prefilled = RunAll(one.engine(), std::move(ex));  // TP=1 bytes, for sizes
  }
  std::vector<Outcome> exported;
  {
    Group prefill(s.prefill, o);
    std::vector<GenerationRequest> ex = Plain(kRequests, 1);
    for (auto& r : ex) r.export_kv = true;
    exported = RunAll(prefill.engine(), std::move(ex));
  }
  std::vector<GenerationRequest> im = Plain(kRequests, kNewTokens);
  for (int i = 0; i < kRequests; ++i) {
    const Outcome& x = exported[i];
    ASSERT_TRUE(x.status.ok()) << x.status;
    ASSERT_NE(x.kv, nullptr);
    ASSERT_EQ(x.tokens.size(), 1u);
    EXPECT_EQ(x.tokens[0], want[i].tokens[0]);
    // The group's whole: every KV head, as many bytes as one rank's export.
    EXPECT_EQ(x.kv->shapes[0].n_kv_heads, 4);
    EXPECT_EQ(x.kv->bytes(), prefilled[i].kv->bytes()) << "request " << i;
    EXPECT_EQ(x.kv->windows.empty(), !s.evict);
    im[i].import_kv = x.kv;
    im[i].import_first_token = x.tokens[0];
  }
  Group decode(s.decode, o);
  const std::vector<Outcome> got = RunAll(decode.engine(), std::move(im));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
  }
  const EngineStats st = decode.engine().Stats();
  EXPECT_EQ(st.kv_imports, kRequests);
  EXPECT_EQ(st.kv_import_failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Sizes, GroupTransferTest,
                         ::testing::Values(Sizes{2, 1, false},
                                           Sizes{1, 2, false},
                                           Sizes{2, 4, false},
                                           Sizes{2, 2, true}, Sizes{4, 2, true},
                                           Sizes{1, 4, true}),
                         [](const auto& info) {
                           return "P" + std::to_string(info.param.prefill) +
                                  "D" + std::to_string(info.param.decode) +
                                  (info.param.evict ? "Evict" : "Full");
                         });

// A stored prefix (import_first_token = -1): the prompt's first 16 tokens
// from a TP=2 group's export, the rest prefilled by a TP=4 group.
TEST(GroupTransferTest, StoredPrefixImportsIntoAnotherGroupSize) {
  const EngineOptions o = Options(false);
  std::vector<Outcome> want;
  {
    Group one(1, o);
    want = RunAll(one.engine(), Plain(kRequests, kNewTokens));
  }
  std::vector<GenerationRequest> ex = Plain(kRequests, 1);
  for (auto& r : ex) {
    r.prompt.resize(16);
    r.export_kv = true;
  }
  std::vector<Outcome> exported;
  {
    Group two(2, o);
    exported = RunAll(two.engine(), std::move(ex));
  }
  std::vector<GenerationRequest> im = Plain(kRequests, kNewTokens);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_NE(exported[i].kv, nullptr) << exported[i].status;
    EXPECT_EQ(exported[i].kv->tokens(0, 3), 16);
    im[i].import_kv = exported[i].kv;
  }
  Group four(4, o);
  const std::vector<Outcome> got = RunAll(four.engine(), std::move(im));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
  }
  EXPECT_EQ(four.engine().Stats().kv_imports, kRequests);
}

// A partial stored prefix (one layer's rows of one KV head cut short, as a
// store block missing part of a head range would give): the group's leader
// refuses it before any rank imports, and the group prefills the prompt.
TEST(GroupTransferTest, PartialStoredPrefixIsPrefilledByTheGroup) {
  const EngineOptions o = Options(false);
  std::vector<Outcome> want, exported;
  {
    Group one(1, o);
    want = RunAll(one.engine(), Plain(2, kNewTokens));
    std::vector<GenerationRequest> ex = Plain(2, 1);
    for (auto& r : ex) {
      r.prompt.resize(16);
      r.export_kv = true;
    }
    exported = RunAll(one.engine(), std::move(ex));
  }
  std::vector<GenerationRequest> im = Plain(2, kNewTokens);
  for (int i = 0; i < 2; ++i) {
    auto partial = std::make_shared<KvSnapshot>(*exported[i].kv);
    // Request 0: a head of rank 0's range; request 1: of rank 1's.
    std::string& rows = partial->rows[2][i == 0 ? 1 : 3];
    rows.resize(rows.size() - 4 * partial->row_bytes(2));
    im[i].import_kv = partial;
  }
  Group two(2, o);
  const std::vector<Outcome> got = RunAll(two.engine(), std::move(im));
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
  }
  const EngineStats st = two.engine().Stats();
  EXPECT_EQ(st.kv_imports, 0);
  EXPECT_EQ(st.kv_import_failures, 2);
}

// KV whose heads do not split over the group (3 of 4 heads): prefilled on
// the group instead, same tokens.
TEST(GroupTransferTest, UnsplittableKvFallsBackToLocalPrefill) {
  const EngineOptions o = Options(false);
  std::vector<Outcome> want, exported;
  {
    Group one(1, o);
    want = RunAll(one.engine(), Plain(2, kNewTokens));
    std::vector<GenerationRequest> ex = Plain(2, 1);
    for (auto& r : ex) r.export_kv = true;
    exported = RunAll(one.engine(), std::move(ex));
  }
  std::vector<GenerationRequest> im = Plain(2, kNewTokens);
  for (int i = 0; i < 2; ++i) {
    auto bad = std::make_shared<KvSnapshot>(*exported[i].kv);
    for (size_t l = 0; l < bad->shapes.size(); ++l) {
      bad->shapes[l].n_kv_heads = 3;
      bad->rows[l].pop_back();
    }
    im[i].import_kv = bad;
    im[i].import_first_token = exported[i].tokens[0];
  }
  Group two(2, o);
  const std::vector<Outcome> got = RunAll(two.engine(), std::move(im));
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
  }
  EXPECT_EQ(two.engine().Stats().kv_imports, 0);
}

// Rank-to-rank pulls (the transport is kv_source.h's gRPC; here a fake
// source hands each rank the slice of a TP=1 export it asks for): a decode
// group of 2 whose ranks each take only their own KV heads gives one
// engine's tokens, with a full cache and with SnapKV eviction (query
// windows sliced with the heads); when a rank cannot pull, no rank keeps
// the KV, the transferred first token is taken back and the group computes
// the prompt (same tokens, the failure counted).
class SlicingPuller : public RankKvPuller {
 public:
  SlicingPuller(const std::vector<Outcome>* exported, int32_t begin,
                int32_t end, bool fail)
      : exported_(exported), begin_(begin), end_(end), fail_(fail) {}
  absl::StatusOr<KvSnapshot> Pull(const KvPull& pull, int64_t* bytes) override {
    if (fail_) return absl::UnavailableError("source gone");
    const KvSnapshot& full = *(*exported_)[std::stoi(pull.transfer_id)].kv;
    auto part = SliceHeads(full, begin_, end_, 2);
    if (part.ok()) *bytes = part->bytes();
    return part;
  }

 private:
  const std::vector<Outcome>* exported_;
  int32_t begin_, end_;
  bool fail_;
};

void PullInto(bool evict, bool follower_fails) {
  const EngineOptions o = Options(evict);
  std::vector<Outcome> want, exported;
  {
    Group one(1, o);
    want = RunAll(one.engine(), Plain(kRequests, kNewTokens));
    std::vector<GenerationRequest> ex = Plain(kRequests, 1);
    for (auto& r : ex) r.export_kv = true;
    exported = RunAll(one.engine(), std::move(ex));
  }
  const int32_t heads = Stories260k()->config.num_kv_heads;
  const int32_t q_per_kv = Stories260k()->config.num_heads / heads;
  ASSERT_EQ(q_per_kv, 2);  // SlicingPuller's query heads per KV head
  std::vector<std::unique_ptr<SlicingPuller>> pullers;
  for (int r = 0; r < 2; ++r) {
    pullers.push_back(std::make_unique<SlicingPuller>(
        &exported, r * heads / 2, (r + 1) * heads / 2,
        follower_fails && r == 1));
  }
  std::vector<GenerationRequest> im = Plain(kRequests, kNewTokens);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_NE(exported[i].kv, nullptr);
    KvPull pull;
    pull.transfer_id = std::to_string(i);
    int64_t bytes = 0;
    auto mine = pullers[0]->Pull(pull, &bytes);
    ASSERT_TRUE(mine.ok()) << mine.status();
    im[i].import_kv = std::make_shared<const KvSnapshot>(*std::move(mine));
    im[i].import_first_token = exported[i].tokens[0];
    im[i].import_pull = pull;
  }
  Group two(2, o, [&](int r, EngineOptions* ro) {
    ro->kv_puller = pullers[r].get();
  });
  const std::vector<Outcome> got = RunAll(two.engine(), std::move(im));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
  }
  const EngineStats st = two.engine().Stats();
  EXPECT_EQ(st.kv_imports, follower_fails ? 0 : kRequests);
  EXPECT_EQ(st.kv_import_failures, follower_fails ? kRequests : 0);
  int64_t half = 0;
  for (const Outcome& e : exported) {
    half += SliceHeads(*e.kv, heads / 2, heads, 2)->bytes();
  }
  EXPECT_EQ(st.kv_peer_pull_bytes, follower_fails ? 0 : half);
}

TEST(GroupPullTest, EachRankPullsItsOwnHeads) { PullInto(false, false); }
TEST(GroupPullTest, EachRankPullsItsOwnHeadsWithEviction) {
  PullInto(true, false);
}
TEST(GroupPullTest, ARankThatCannotPullMakesTheGroupComputeThePrompt) {
  PullInto(false, true);
}
TEST(GroupPullTest, ARankThatCannotPullWithEviction) { PullInto(true, true); }

}  // namespace
}  // namespace latentkv::worker
