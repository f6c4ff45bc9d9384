// SpindleKV codebook blobs (worker/cache/kv_snapshot.h's format; parsed by
// KvSnapshot::ParseCodebook and loaded by worker/residency/codebook_store.h)
// and codebooks read back from storage (worker/codebook: FromCodewords, then
// Append and Decode over them). The first input byte picks the thresholds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/kv_shapes.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/codebook/codebook.h"
#include "worker/residency/codebook_store.h"

namespace lw = latentkv::worker;
namespace lf = latentkv::fuzz;

namespace {

struct Layer {
  std::unique_ptr<latentkv::kernels::Backend> backend =
      latentkv::kernels::MakeCpuBackend();
  std::unique_ptr<lw::KvCache> cache = *lw::KvCache::Create(
      lf::KvShapes(), {.page_size = 4, .max_bytes = 1 << 20});
  std::unique_ptr<lw::KvPools> pools =
      *lw::KvPools::Create(backend.get(), *cache);
  lw::HostKvPool hp = *pools->HostF32(0);
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Layer* layer = new Layer;
  lf::Input in(data, size);
  const float theta = 0.5f + (in.Byte() % 6) * 0.1f;  // 0.5 .. 1.0
  const std::string blob(in.Rest());
  const lw::LayerKvShape shape = lf::KvShapes()[0];

  // Storage: the blob's codewords as a codebook, then new vectors joining it.
  if (blob.size() >= 4 && blob.size() % 4 == 0) {
    std::vector<float> words(blob.size() / 4);
    std::memcpy(words.data(), blob.data(), blob.size());
    auto cb = lw::Codebook::FromCodewords(lf::kDim, std::move(words));
    if (cb.ok()) {
      const float x[2 * lf::kDim] = {1, 0, 0, 0, 0.5f, -0.5f, 0.25f, 2};
      float magnitude = 0;
      std::vector<int32_t> index(2);
      std::vector<float> mags(2), out(2 * lf::kDim);
      for (int i = 0; i < 2; ++i) {
        index[i] = cb->Append(x + i * lf::kDim, theta, &magnitude);
        mags[i] = magnitude;
      }
      cb->Reconstruct(index.data(), mags.data(), 2, out.data());
    }
  }

  // Transfer: the blob as one head's codebook entries.
  if (!lw::KvSnapshot::ParseCodebook(blob, shape).ok()) return 0;
  lw::SequenceKv kv;
  kv.Init(*layer->cache);
  lw::CodebookStore store;
  auto& aux = kv.aux(0, 0);
  if (store.Import(*layer->cache, layer->hp, aux, 0, blob).ok() &&
      aux.tokens > 0) {
    const int64_t n = aux.tokens;
    std::vector<float> k(n * lf::kDim), v(n * lf::kDim);
    std::vector<int32_t> pos(n);
    store.Reconstruct(*layer->cache, layer->hp, aux, 0, k.data(), v.data(),
                      pos.data());
    (void)store.Export(*layer->cache, layer->hp, aux, 0);
    const float kx[lf::kDim] = {0.6f, 0.8f, 0, 0}, vx[lf::kDim] = {0, 0, 1, 0};
    const int32_t p = 1 << 20;
    (void)store.Add(*layer->cache, layer->hp, aux, 0, kx, vx, &p, 1, theta,
                    theta, /*cluster=*/false);
  }
  kv.Release(*layer->cache);
  return 0;
}
