// Prefill/decode disaggregation at the engine level, on stories260K: one
// engine prefills and exports the prompt's KV (after its residency policy),
// another imports it and decodes; the tokens, and the KV held at the end,
// equal a single engine's. A snapshot of the wrong shape or residency plan
// falls back to a local prefill.
#include <algorithm>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "worker/engine/engine.h"
#include "worker/engine/stories260k_for_tests.h"

namespace latentkv::worker {
namespace {

struct Result {
  std::vector<int32_t> tokens;
  std::shared_ptr<const KvSnapshot> kv;
  absl::Status status;
};

Result RunOne(Engine& e, GenerationRequest r) {
  Result out;
  std::promise<void> done;
  out.status = e.Submit(std::move(r), [&](const GenerationEvent& ev) {
    if (ev.token >= 0) out.tokens.push_back(ev.token);
    if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
      out.kv = ev.kv;
      if (!ev.status.ok()) out.status = ev.status;
      done.set_value();
    }
  });
  if (out.status.ok()) done.get_future().wait();
  return out;
}

// Polls `done` for up to a second: engine stats are a post-step snapshot.
template <typename Pred>
bool WaitFor(Pred done) {
  for (int i = 0; i < 200 && !done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// No request running and no pages held beyond the local prefix cache's.
bool Released(Engine& e) {
  const EngineStats s = e.Stats();
  return s.running == 0 && s.kv_pages_in_use == s.prefix_cached_pages;
}

// Greedy by default; a seeded sampled request when `sampled`.
bool g_sampled = false;
// Prompt tokens of Request() (BOS included).
int g_prompt_len = 91;

GenerationRequest Request(int max_new) {
  GenerationRequest r;
  if (g_sampled) {
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.95f;
    r.sampling.seed = 1234;
  }
  r.id = "r";
  r.prompt = {1};
  for (int j = 1; j < g_prompt_len; ++j) {
    r.prompt.push_back(259 + ((j - 1) * 13) % 250);
  }
  r.max_new_tokens = max_new;
  r.ignore_eos = true;
  return r;
}

// Returns the prefill side's snapshot.
std::shared_ptr<const KvSnapshot> ExpectDisaggregatedEqualsSingle(
    const EngineOptions& o) {
  auto single = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  auto prefill = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  auto decode = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(single.ok() && prefill.ok() && decode.ok());
  if (!single.ok() || !prefill.ok() || !decode.ok()) return nullptr;
  // Both long requests export their final KV too: what the decode side
  // holds at the end must equal what one engine holds.
  GenerationRequest w = Request(40);
  w.export_kv = true;
  const Result want = RunOne(**single, w);
  GenerationRequest p = Request(1);
  p.export_kv = true;
  const Result pre = RunOne(**prefill, p);
  EXPECT_TRUE(pre.status.ok()) << pre.status;
  EXPECT_EQ(pre.tokens.size(), 1u);
  EXPECT_NE(pre.kv, nullptr);
  if (pre.tokens.size() != 1 || pre.kv == nullptr) return nullptr;
  // Exported, then released (the stats snapshot follows the step): only the
  // local prefix cache keeps pages.
  EXPECT_TRUE(WaitFor([&] { return Released(**prefill); }));
  GenerationRequest d = Request(40);
  d.import_kv = pre.kv;
  d.import_first_token = pre.tokens[0];
  d.export_kv = true;
  const Result got = RunOne(**decode, d);
  EXPECT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_TRUE(want.kv != nullptr && got.kv != nullptr);
  if (want.kv != nullptr && got.kv != nullptr) {
    EXPECT_EQ(got.kv->rows, want.kv->rows);  // same slots kept, same values
    EXPECT_EQ(got.kv->codebooks, want.kv->codebooks);
  }
  EXPECT_TRUE(WaitFor([&] { return (*decode)->Stats().kv_imports == 1; }));
  // What moved: the rows each (layer, head) kept, each a position plus
  // d_qk + d_vo values, and any codebook blobs.
  int64_t bytes = 0;
  EXPECT_EQ(pre.kv->dtype, o.kv.dtype);
  for (const auto& layer : pre.kv->rows) {
    for (const std::string& r : layer) {
      // stories260K: d_qk = d_vo = 8.
      EXPECT_EQ(r.size() % (4 + 16 * DTypeSize(o.kv.dtype)), 0u);
      bytes += r.size();
    }
  }
  for (const auto& layer : pre.kv->codebooks) {
    for (const std::string& b : layer) bytes += b.size();
  }
  // Query windows: count, next, q [count, 8 heads, d_qk 8], positions
  // [count], count = the prompt's last queries the window holds.
  const size_t count = std::min(g_prompt_len, o.residency.window);
  for (const std::string& w : pre.kv->windows) {
    if (w.empty()) continue;
    EXPECT_EQ(w.size(), 8u + 4 * (8 * 8 + 1) * count);
    bytes += w.size();
  }
  EXPECT_EQ(pre.kv->bytes(), bytes);
  return pre.kv;
}

// SpindleKV with pages of 4: `codebook_layers` shallow layers as codebooks,
// the query window of `window` queries (other options at their defaults).
EngineOptions Spindle(int codebook_layers, int window) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.residency.policy = "spindle";
  o.residency.codebook_layers = codebook_layers;
  o.residency.window = window;
  return o;
}

TEST(KvTransferEngineTest, FullCacheTransferEqualsSingleEngine) {
  EngineOptions o;
  o.kv.page_size = 4;
  ExpectDisaggregatedEqualsSingle(o);
}

TEST(KvTransferEngineTest, SeededSamplingTransferEqualsSingleEngine) {
  EngineOptions o;
  o.kv.page_size = 4;
  g_sampled = true;
  ExpectDisaggregatedEqualsSingle(o);
  g_sampled = false;
}

TEST(KvTransferEngineTest, EvictedCacheTransferEqualsSingleEngine) {
  EngineOptions o = Spindle(0, 8);
  o.residency.budget = 0.4;
  o.residency.capacity = {64};
  ExpectDisaggregatedEqualsSingle(o);
}

// A capacity eviction on the very first decode steps scores the keys with
// the window of the prompt's last queries: that window moves with the KV,
// so the decode side keeps the same slots as one engine (the shared check
// compares the final KV; it fails without the window).
TEST(KvTransferEngineTest, CapacityEvictionRightAfterTransferEqualsSingle) {
  EngineOptions o = Spindle(0, 8);
  o.residency.budget = 1.0;     // no prompt-end eviction
  o.residency.capacity = {92};  // the prompt is 91 tokens
  auto kv = ExpectDisaggregatedEqualsSingle(o);
  ASSERT_NE(kv, nullptr);
}

// A prompt shorter than the window: only the window's filled slots move,
// and the decode side's capacity evictions still keep what one engine keeps.
TEST(KvTransferEngineTest, PartlyFilledWindowTransfersEqualsSingle) {
  EngineOptions o = Spindle(0, 8);
  o.residency.budget = 1.0;    // no prompt-end eviction
  o.residency.capacity = {8};  // evictions from the first decode steps
  g_prompt_len = 6;
  auto kv = ExpectDisaggregatedEqualsSingle(o);
  g_prompt_len = 91;
  ASSERT_NE(kv, nullptr);
  EXPECT_FALSE(kv->windows.empty());
}

// SpindleKV with its codebook layers: the codebook entries move in their
// compressed form (no fallback), smaller than the rows they stand for.
TEST(KvTransferEngineTest, CodebookLayersTransferCompressed) {
  EngineOptions o = Spindle(2, 8);
  o.residency.budget = 0.4;
  auto kv = ExpectDisaggregatedEqualsSingle(o);
  ASSERT_NE(kv, nullptr);
  ASSERT_TRUE(kv->has_codebooks());
  int64_t codebook_bytes = 0, as_rows = 0;
  for (size_t l = 0; l < kv->codebooks.size(); ++l) {
    for (const std::string& b : kv->codebooks[l]) {
      if (b.empty()) continue;
      auto h = KvSnapshot::ParseCodebook(b, kv->shapes[l]);
      ASSERT_TRUE(h.ok()) << h.status();
      EXPECT_GT(h->records, 0);
      codebook_bytes += b.size();
      as_rows += h->records * kv->row_bytes(l);
    }
  }
  EXPECT_LT(codebook_bytes, as_rows);
}

// KV prefilled under plan `from`, imported under plan `to`: refused, so the
// decode side prefills locally (same tokens as it alone) and keeps nothing of
// the refused import.
void ExpectRefusedIntoOtherPlan(const EngineOptions& from,
                                const EngineOptions& to) {
  auto prefill = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), from);
  auto decode = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), to);
  ASSERT_TRUE(prefill.ok() && decode.ok());
  const Result want = RunOne(**decode, Request(20));
  GenerationRequest p = Request(1);
  p.export_kv = true;
  const Result pre = RunOne(**prefill, p);
  ASSERT_TRUE(pre.status.ok() && pre.kv != nullptr &&
              pre.kv->has_residency_state());
  GenerationRequest d = Request(20);
  d.import_kv = pre.kv;
  d.import_first_token = pre.tokens[0];
  const Result got = RunOne(**decode, d);
  ASSERT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_TRUE(
      WaitFor([&] { return (*decode)->Stats().kv_import_failures == 1; }));
  EXPECT_EQ((*decode)->Stats().kv_imports, 0);
  EXPECT_TRUE(WaitFor([&] { return Released(**decode); }));
}

// Codebook entries for a layer the decode side does not keep as codebooks.
TEST(KvTransferEngineTest, CodebooksIntoAnotherPlanFallBackToLocalPrefill) {
  ExpectRefusedIntoOtherPlan(Spindle(2, 8), Spindle(0, 8));
}

// A query window of another size.
TEST(KvTransferEngineTest, WindowOfAnotherSizeFallsBackToLocalPrefill) {
  ExpectRefusedIntoOtherPlan(Spindle(0, 8), Spindle(0, 4));
}

// Rows move in the pools' dtype, 2 or 1 bytes a value: bf16, f16 and fp8
// caches (fp8 scales follow from the weights, equal on both sides) give the
// single engine's tokens and final KV, bit for bit.
TEST(KvTransferEngineTest, NarrowKvDtypesTransferAsStored) {
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    SCOPED_TRACE(std::string(DTypeName(dt)));
    EngineOptions o = Spindle(0, 8);
    o.kv.dtype = dt;
    auto snap = ExpectDisaggregatedEqualsSingle(o);
    ASSERT_NE(snap, nullptr);
    EXPECT_EQ(snap->row_bytes(0), 4 + 16 * DTypeSize(dt));
  }
}

TEST(KvTransferEngineTest, SnapshotOfAnotherDtypeFallsBackToLocalPrefill) {
  EngineOptions f32;
  f32.kv.page_size = 4;
  EngineOptions bf16 = f32;
  bf16.kv.dtype = DType::kBF16;
  auto from = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), f32);
  auto to = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), bf16);
  ASSERT_TRUE(from.ok() && to.ok());
  GenerationRequest p = Request(1);
  p.export_kv = true;
  const Result pre = RunOne(**from, p);
  ASSERT_NE(pre.kv, nullptr);
  const Result want = RunOne(**to, Request(10));
  GenerationRequest d = Request(10);
  d.import_kv = pre.kv;
  d.import_first_token = pre.tokens[0];
  const Result got = RunOne(**to, d);
  ASSERT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_TRUE(WaitFor([&] { return (*to)->Stats().kv_import_failures == 1; }));
  EXPECT_EQ((*to)->Stats().kv_imports, 0);
}

// Codebook layers keep their records in f32 host pages: any other KV dtype
// is refused when the engine starts, naming what they need.
TEST(KvTransferEngineTest, CodebookLayersNeedF32Kv) {
  EngineOptions o = Spindle(2, 8);
  o.kv.dtype = DType::kBF16;
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(e.status().message().find("--kv_dtype f32"), std::string::npos)
      << e.status();
}

TEST(KvTransferEngineTest, MismatchedSnapshotFallsBackToLocalPrefill) {
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), {});
  ASSERT_TRUE(e.ok());
  const Result want = RunOne(**e, Request(20));
  auto snap = std::make_shared<KvSnapshot>();
  snap->shapes = {{4, 4, 4}};  // one layer of the wrong dims
  snap->rows = {{"", "", "", ""}};
  GenerationRequest d = Request(20);
  d.import_kv = snap;
  d.import_first_token = want.tokens[0];
  const Result got = RunOne(**e, d);
  ASSERT_TRUE(got.status.ok());
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ((*e)->Stats().kv_import_failures, 1);
  EXPECT_EQ((*e)->Stats().kv_imports, 0);
}

}  // namespace
}  // namespace latentkv::worker
