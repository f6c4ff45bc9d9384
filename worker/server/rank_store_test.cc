// Each rank of a tensor-parallel group stores and fetches its own KV heads
// in the shared kvstore: a real KvStore gRPC server on loopback, one
// StorePrefixCache per rank (its head range), groups of ranks as threads
// with real Gloo (in_process_group.h) over the real stories260K checkpoint.
// A group of P ranks publishes, a group of D ranks (another size) reuses
// the stored prefixes; the greedy tokens equal one plain TP=1 engine's. A
// block is stored only once every head range arrived (a rank that does not
// publish leaves nothing usable); a rank that cannot fetch its heads makes
// the whole group prefill, never import mixed KV.
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/kvstore_service.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/stories260k_for_tests.h"
#include "worker/server/kv_transfer.h"
#include "worker/server/prefix_cache.h"
#include "worker/tp/in_process_group.h"

namespace latentkv::worker {
namespace {

constexpr int kRequests = 8;
constexpr int kNewTokens = 24;
constexpr int kBlockTokens = 8;

std::vector<int32_t> Prompt(int i) {
  std::vector<int32_t> p = {1};
  for (int j = 0; j < 20 + 7 * i; ++j)
    p.push_back(259 + (i * 31 + j * 7) % 250);
  return p;
}

EngineOptions Options() {
  EngineOptions o;
  o.kv.page_size = 4;
  o.kv.max_bytes = 4 << 20;
  o.scheduler.max_step_tokens = 48;
  o.prefix_caching = false;  // every reuse comes from the store
  return o;
}

// A kvstore on 127.0.0.1 (ephemeral port), in this process.
class Store {
 public:
  Store() {
    store_ = *kvstore::BlockStore::Create({});
    service_ = std::make_unique<kvstore::KvStoreService>(
        store_.get(), kvstore::KvStoreServiceOptions{});
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                       &port_);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
  }
  ~Store() {
    store_->Close();
    server_->Shutdown();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  kvstore::BlockStore& blocks() { return *store_; }

 private:
  std::unique_ptr<kvstore::BlockStore> store_;
  std::unique_ptr<kvstore::KvStoreService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// Rank r's StorePrefixCache in a group of `size` over stories260K.
std::vector<std::unique_ptr<StorePrefixCache>> RankCaches(
    const std::string& address, int size) {
  const std::vector<LayerKvShape> group = KvShapesOf(Stories260k()->config);
  const int32_t per_rank = group[0].n_kv_heads / size;
  std::vector<std::unique_ptr<StorePrefixCache>> out;
  for (int r = 0; r < size; ++r) {
    PrefixCacheOptions po;
    po.address = address;
    po.block_tokens = kBlockTokens;
    po.model_id = "stories260K";
    if (size > 1) {
      po.head_begin = r * per_rank;
      po.head_end = (r + 1) * per_rank;
    }
    out.push_back(std::make_unique<StorePrefixCache>(po, group));
  }
  return out;
}

InProcessGroup::PerRank Links(std::vector<RankKvStore*> links) {
  return [links](int r, EngineOptions* o) { o->kv_store = links[r]; };
}

InProcessGroup::PerRank Links(
    const std::vector<std::unique_ptr<StorePrefixCache>>& caches) {
  std::vector<RankKvStore*> out;
  for (const auto& c : caches) out.push_back(c.get());
  return Links(out);
}

// Runs the kRequests prompts concurrently on `e`; with `leader_cache`, each
// request fetches its stored prefix and publishes its blocks as the worker
// service sets it up (UseStorePrefix). Tokens in request order.
std::vector<std::vector<int32_t>> RunAll(Engine& e,
                                         StorePrefixCache* leader_cache,
                                         int tp_size) {
  std::vector<std::vector<int32_t>> out(kRequests);
  std::vector<std::promise<void>> done(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    GenerationRequest g;
    g.id = "r" + std::to_string(i);
    g.prompt = Prompt(i);
    g.max_new_tokens = kNewTokens;
    g.ignore_eos = true;
    if (leader_cache != nullptr) UseStorePrefix(*leader_cache, tp_size, &g);
    auto* o = &out[i];
    auto* d = &done[i];
    absl::Status st = e.Submit(std::move(g), [o, d](const GenerationEvent& ev) {
      if (ev.token >= 0) o->push_back(ev.token);
      EXPECT_TRUE(ev.status.ok()) << ev.status;
      if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
        d->set_value();
      }
    });
    EXPECT_TRUE(st.ok()) << st;
  }
  for (auto& d : done) d.get_future().wait();
  return out;
}

const std::vector<std::vector<int32_t>>& Want() {
  static const auto* want = [] {
    InProcessGroup one(Stories260k(), 1, Options());
    return new std::vector<std::vector<int32_t>>(
        RunAll(one.engine(), nullptr, 1));
  }();
  return *want;
}

// Whole blocks of what each request leaves in the cache: its prompt and
// every generated token but the last (never fed back).
int64_t ExpectedBlocks() {
  int64_t n = 0;
  for (int i = 0; i < kRequests; ++i) {
    n += (static_cast<int64_t>(Prompt(i).size()) + kNewTokens - 1) /
         kBlockTokens;
  }
  return n;
}

void Publish(Store& store, int size) {
  auto caches = RankCaches(store.address(), size);
  {
    InProcessGroup writer(Stories260k(), size, Options(), Links(caches));
    EXPECT_EQ(RunAll(writer.engine(), caches[0].get(), size), Want());
    for (const absl::Status& st : writer.Stop()) EXPECT_TRUE(st.ok()) << st;
  }
  for (auto& c : caches) {
    c->Flush();
    EXPECT_EQ(c->errors(), 0);
    EXPECT_EQ(c->publish_dropped(), 0);
  }
}

struct Sizes {
  int writer, reader;
};
class RankStoreTest : public ::testing::TestWithParam<Sizes> {};

TEST_P(RankStoreTest, AGroupReusesWhatAGroupOfAnotherSizeStored) {
  const Sizes sz = GetParam();
  Store store;
  Publish(store, sz.writer);
  const kvstore::BlockStoreStats st = store.blocks().stats();
  EXPECT_EQ(st.blocks, ExpectedBlocks());
  EXPECT_EQ(st.pending_blocks, 0);
  EXPECT_EQ(st.dropped_pending_blocks, 0);

  auto caches = RankCaches(store.address(), sz.reader);
  InProcessGroup reader(Stories260k(), sz.reader, Options(), Links(caches));
  EXPECT_EQ(RunAll(reader.engine(), caches[0].get(), sz.reader), Want());
  const EngineStats es = reader.engine().Stats();
  EXPECT_EQ(es.kv_imports, kRequests);
  EXPECT_EQ(es.kv_import_failures, 0);
  // Every rank fetched its heads of every stored prompt block.
  int64_t stored_prompt_tokens = 0;
  for (int i = 0; i < kRequests; ++i) {
    stored_prompt_tokens += (static_cast<int64_t>(Prompt(i).size()) - 1) /
                            kBlockTokens * kBlockTokens;
  }
  for (auto& c : caches) EXPECT_EQ(c->hit_tokens(), stored_prompt_tokens);
  for (const absl::Status& s : reader.Stop()) EXPECT_TRUE(s.ok()) << s;
}

INSTANTIATE_TEST_SUITE_P(Sizes, RankStoreTest,
                         ::testing::Values(Sizes{2, 1}, Sizes{1, 2},
                                           Sizes{2, 4}, Sizes{4, 2}),
                         [](const ::testing::TestParamInfo<Sizes>& p) {
                           return "tp" + std::to_string(p.param.writer) +
                                  "_to_tp" + std::to_string(p.param.reader);
                         });

// A writer group whose rank 1 never publishes (dead, or no store link):
// its heads never arrive, so no block is ever whole and nothing is read.
TEST(RankStoreFailureTest, MissingHeadRangeLeavesNothingUsable) {
  Store store;
  auto caches = RankCaches(store.address(), 2);
  {
    InProcessGroup writer(Stories260k(), 2, Options(),
                          Links({caches[0].get(), nullptr}));
    EXPECT_EQ(RunAll(writer.engine(), caches[0].get(), 2), Want());
  }
  caches[0]->Flush();
  EXPECT_EQ(store.blocks().stats().blocks, 0);
  EXPECT_EQ(store.blocks().stats().pending_blocks, ExpectedBlocks());

  auto one = RankCaches(store.address(), 1);
  InProcessGroup reader(Stories260k(), 1, Options(), Links(one));
  EXPECT_EQ(RunAll(reader.engine(), one[0].get(), 1), Want());
  EXPECT_EQ(reader.engine().Stats().kv_imports, 0);
}

// A rank whose fetch fails (its heads evicted between the leader's lookup
// and its own Get, or its store unreachable): no rank keeps the prefix,
// the group prefills, the tokens are the same.
class FailingFetch : public RankKvStore {
 public:
  absl::StatusOr<KvSnapshot> FetchBlocks(absl::Span<const uint64_t>) override {
    return absl::NotFoundError("evicted");
  }
  void PublishAsync(std::vector<int32_t>, KvSnapshot) override {}
};

TEST(RankStoreFailureTest, ARankThatCannotFetchMakesTheGroupPrefill) {
  Store store;
  Publish(store, 1);
  auto caches = RankCaches(store.address(), 2);
  FailingFetch failing;
  InProcessGroup reader(Stories260k(), 2, Options(),
                        Links({caches[0].get(), &failing}));
  EXPECT_EQ(RunAll(reader.engine(), caches[0].get(), 2), Want());
  const EngineStats es = reader.engine().Stats();
  EXPECT_EQ(es.kv_imports, 0);
  EXPECT_EQ(es.kv_import_failures, kRequests);
  for (const absl::Status& s : reader.Stop()) EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace latentkv::worker
