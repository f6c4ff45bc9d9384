// Prefill -> decode KV transfer, the decode side (worker/server/
// prefill_assembler.h, worker/kv/kv_io.h, worker/residency): the messages of
// one Worker.Prefill stream (frames.h; the first input byte picks this
// worker's KV dtype) are assembled and checked as CallPrefill does, then a
// snapshot that passes is imported as the engine imports it: ImportKv into
// the pools and SequenceResidency::ImportState (codebook entries of the
// codebook layer, query windows). A snapshot that passes is also split over
// a group's 2 ranks, sent over the group wire and joined back (same bytes).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "tests/fuzz/frames.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/kv_shapes.h"
#include "worker/cache/kv_snapshot_heads.h"
#include "worker/kv/kv_io.h"
#include "worker/residency/sequence_residency.h"
#include "worker/server/prefill_assembler.h"
#include "worker/tp/tp_kv.h"

namespace lw = latentkv::worker;
namespace lf = latentkv::fuzz;

namespace {

// One decode worker's cache per KV dtype.
struct Worker {
  std::unique_ptr<latentkv::kernels::Backend> backend =
      latentkv::kernels::MakeCpuBackend();
  std::unique_ptr<lw::KvCache> cache;
  std::unique_ptr<lw::KvPools> pools;
  std::shared_ptr<const lw::ResidencyPlan> plan;
  latentkv::v1::KvLayout layout;

  explicit Worker(latentkv::DType dtype) {
    cache = *lw::KvCache::Create(
        lf::KvShapes(), {.page_size = 4, .max_bytes = 1 << 20, .dtype = dtype});
    pools = *lw::KvPools::Create(backend.get(), *cache);
    lw::ResidencyOptions o;
    o.policy = "spindle";
    o.codebook_layers = 1;
    o.window = lf::kWindow;
    o.pool_kernel = 1;
    plan = *lw::ResidencyPlan::Create(o, lf::kLayers, lf::kHeads, lf::kKvHeads);
    layout = lf::TransferLayoutOf(dtype);
  }
};

// Tensor-parallel groups re-shard what arrives by KV-head range: a snapshot
// that splits over the 2 ranks of a group survives the group wire (TpKv)
// and joins back into the same rows, codebook blobs and windows.
void CheckResharding(const lw::KvSnapshot& s) {
  constexpr int32_t kQPerKv = lf::kHeads / lf::kKvHeads;
  auto parts = lw::SplitHeads(s, 2, kQPerKv);
  if (!parts.ok()) return;  // e.g. a window sized for other heads
  std::vector<lw::KvSnapshot> back;
  for (const lw::KvSnapshot& p : *parts) {
    auto q = lw::ParseTpKv(lw::SerializeTpKv(p), p.shapes, p.dtype);
    if (!q.ok()) __builtin_trap();
    back.push_back(std::move(*q));
  }
  auto joined = lw::JoinHeads(back, kQPerKv);
  if (!joined.ok() || joined->rows != s.rows) __builtin_trap();
  // Absent and empty entries are the same state.
  auto at = [](const std::vector<std::string>& v, size_t i) {
    return i < v.size() ? v[i] : std::string();
  };
  for (size_t l = 0; l < s.rows.size(); ++l) {
    if (at(joined->windows, l) != at(s.windows, l)) __builtin_trap();
    for (size_t h = 0; h < s.rows[l].size(); ++h) {
      const std::string a =
          l < joined->codebooks.size() ? at(joined->codebooks[l], h) : "";
      const std::string b = l < s.codebooks.size() ? at(s.codebooks[l], h) : "";
      if (a != b) __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Worker* workers[3] = {new Worker(lf::KvDType(0)),
                               new Worker(lf::KvDType(1)),
                               new Worker(lf::KvDType(2))};
  lf::Input in(data, size);
  Worker& w = *workers[in.Byte() % 3];
  lw::PrefillAssembler assembler(w.layout);
  for (std::string_view frame : lf::SplitFrames(in.Rest())) {
    latentkv::v1::PrefillResponse msg;
    if (!msg.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
      return 0;
    }
    if (!assembler.Add(msg).ok()) return 0;
  }
  auto snap = assembler.Finish();
  if (!snap.ok() || *snap == nullptr) return 0;
  CheckResharding(**snap);
  lw::SequenceKv kv;
  kv.Init(*w.cache);
  if (lw::ImportKv(*w.cache, *w.pools, kv, **snap).ok()) {
    lw::SequenceResidency r(w.plan, {lf::kDim, lf::kDim}, lf::kHeads,
                            /*prompt_len=*/1);
    r.MarkPromptIn();
    (void)r.ImportState(*w.cache, *w.pools, kv, **snap);
  }
  kv.Release(*w.cache);
  return 0;
}
