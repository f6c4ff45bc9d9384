// Prefill -> decode KV transfer, the decode side (worker/server/
// prefill_assembler.h, worker/kv/kv_io.h, worker/residency): the messages of
// one Worker.Prefill stream (frames.h; the first input byte picks this
// worker's KV dtype) are assembled and checked as CallPrefill does, then a
// snapshot that passes is imported as the engine imports it: ImportKv into
// the pools and SequenceResidency::ImportState (codebook entries of the
// codebook layer, query windows).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/backend.h"
#include "tests/fuzz/frames.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/kv_shapes.h"
#include "worker/kv/kv_io.h"
#include "worker/residency/sequence_residency.h"
#include "worker/server/prefill_assembler.h"

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
