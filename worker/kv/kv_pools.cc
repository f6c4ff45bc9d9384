#include "worker/kv/kv_pools.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

absl::StatusOr<std::unique_ptr<KvPools>> KvPools::Create(
    kernels::Backend* backend, const KvCache& cache, KvScales scales) {
  auto pools = std::unique_ptr<KvPools>(new KvPools());
  pools->backend_ = backend;
  pools->dtype_ = cache.dtype();
  const bool fp8 = cache.dtype() == DType::kF8E4M3;
  if (fp8 && (static_cast<int32_t>(scales.k.size()) != cache.num_layers() ||
              scales.v.size() != scales.k.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("fp8 KV needs K and V scales for each of the ",
                     cache.num_layers(), " layers"));
  }
  const int64_t elem = DTypeSize(cache.dtype());
  pools->layers_.resize(cache.num_layers());
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const LayerKvShape& s = cache.shape(l);
    Layer& L = pools->layers_[l];
    const size_t slots =
        static_cast<size_t>(cache.allocator(l).num_pages()) * cache.page_size();
    const std::string what = absl::StrCat("the KV pool of layer ", l);
    auto k = backend->Alloc(slots * s.d_qk * elem, what);
    if (!k.ok()) return k.status();
    auto v = backend->Alloc(slots * s.d_vo * elem, what);
    if (!v.ok()) return v.status();
    auto pos = backend->Alloc(slots * sizeof(int32_t), what);
    if (!pos.ok()) return pos.status();
    L.k = std::move(*k);
    L.v = std::move(*v);
    L.pos = std::move(*pos);
    backend->Fill(L.k.data(), 0, L.k.bytes());
    backend->Fill(L.v.data(), 0, L.v.bytes());
    backend->Fill(L.pos.data(), 0, L.pos.bytes());
    L.view.dtype = cache.dtype();
    L.view.page_size = cache.page_size();
    L.view.n_kv_heads = s.n_kv_heads;
    L.view.d_qk = s.d_qk;
    L.view.d_vo = s.d_vo;
    L.view.k = L.k.data();
    L.view.v = L.v.data();
    L.view.pos = L.pos.as<int32_t>();
    if (!fp8) continue;
    for (const auto* part : {&scales.k[l], &scales.v[l]}) {
      if (static_cast<int32_t>(part->size()) != s.n_kv_heads) {
        return absl::InvalidArgumentError(
            absl::StrCat("fp8 KV scales of layer ", l, ": ", part->size(),
                         " entries for ", s.n_kv_heads, " KV heads"));
      }
      for (float f : *part) {
        if (!(f > 0.0f) || !std::isfinite(f)) {
          return absl::InvalidArgumentError(
              absl::StrCat("fp8 KV scale of layer ", l, " is ", f,
                           " (must be > 0, finite)"));
        }
      }
    }
    L.host_k_scale = scales.k[l];
    L.host_v_scale = scales.v[l];
    const size_t sb = sizeof(float) * s.n_kv_heads;
    auto ks = backend->Alloc(sb, "fp8 KV scales");
    if (!ks.ok()) return ks.status();
    auto vs = backend->Alloc(sb, "fp8 KV scales");
    if (!vs.ok()) return vs.status();
    L.k_scale = std::move(*ks);
    L.v_scale = std::move(*vs);
    backend->CopyIn(L.k_scale.data(), L.host_k_scale.data(), sb);
    backend->CopyIn(L.v_scale.data(), L.host_v_scale.data(), sb);
    L.view.k_scale = L.k_scale.as<float>();
    L.view.v_scale = L.v_scale.as<float>();
  }
  absl::Status st = backend->Synchronize();
  if (!st.ok()) return st;
  return pools;
}

float KvPools::k_scale(int32_t layer, int32_t head) const {
  const Layer& L = layers_[layer];
  return L.host_k_scale.empty() ? 1.0f : L.host_k_scale[head];
}

float KvPools::v_scale(int32_t layer, int32_t head) const {
  const Layer& L = layers_[layer];
  return L.host_v_scale.empty() ? 1.0f : L.host_v_scale[head];
}

int64_t KvPools::row_bytes(int32_t layer) const {
  const kernels::KvPoolView& v = layers_[layer].view;
  return KvRowBytes(dtype_, v.d_qk, v.d_vo);
}

absl::Status KvPools::Stage(size_t slots, size_t bytes) {
  if (slot_stage_.bytes() < slots * sizeof(int64_t)) {
    auto b = backend_->Alloc(std::max<size_t>(slots * sizeof(int64_t), 4096),
                             "KV slot lists");
    if (!b.ok()) return b.status();
    slot_stage_ = std::move(*b);
  }
  if (row_stage_.bytes() < bytes) {
    auto b = backend_->Alloc(std::max<size_t>(bytes, 4096), "KV rows");
    if (!b.ok()) return b.status();
    row_stage_ = std::move(*b);
  }
  return absl::OkStatus();
}

absl::Status KvPools::Apply(int32_t layer, const KvMoves& moves) {
  const size_t n = moves.src.size();
  if (n == 0) return absl::OkStatus();
  absl::Status st = Stage(2 * n, 0);
  if (!st.ok()) return st;
  auto* ids = slot_stage_.as<int64_t>();
  backend_->CopyIn(ids, moves.src.data(), n * sizeof(int64_t));
  backend_->CopyIn(ids + n, moves.dst.data(), n * sizeof(int64_t));
  backend_->MoveKvSlots(layers_[layer].view, ids, ids + n,
                        static_cast<int64_t>(n));
  // The lists are host vectors the caller may reuse: wait for the copies.
  return backend_->Synchronize();
}

absl::Status KvPools::ReadRows(int32_t layer, const std::vector<int64_t>& slots,
                               std::string* rows) {
  const size_t n = slots.size();
  if (n == 0) return absl::OkStatus();
  const size_t bytes = n * static_cast<size_t>(row_bytes(layer));
  absl::Status st = Stage(n, bytes);
  if (!st.ok()) return st;
  backend_->CopyIn(slot_stage_.data(), slots.data(), n * sizeof(int64_t));
  backend_->GatherKvRows(layers_[layer].view, slot_stage_.as<int64_t>(),
                         static_cast<int64_t>(n), row_stage_.data());
  const size_t at = rows->size();
  rows->resize(at + bytes);
  backend_->CopyOut(rows->data() + at, row_stage_.data(), bytes);
  return backend_->Synchronize();
}

absl::Status KvPools::WriteRows(int32_t layer,
                                const std::vector<int64_t>& slots,
                                const char* rows, size_t rows_bytes) {
  const size_t n = slots.size();
  const size_t bytes = n * static_cast<size_t>(row_bytes(layer));
  if (rows_bytes != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV rows of layer ", layer, ": ", rows_bytes,
                     " bytes for ", n, " slots of ", row_bytes(layer)));
  }
  if (n == 0) return absl::OkStatus();
  absl::Status st = Stage(n, bytes);
  if (!st.ok()) return st;
  backend_->CopyIn(slot_stage_.data(), slots.data(), n * sizeof(int64_t));
  backend_->CopyIn(row_stage_.data(), rows, bytes);
  backend_->ScatterKvRows(layers_[layer].view, slot_stage_.as<int64_t>(),
                          static_cast<int64_t>(n), row_stage_.data());
  return backend_->Synchronize();
}

absl::Status KvPools::ReadF32(int32_t layer, int32_t head,
                              const std::vector<int64_t>& slots, float* k,
                              float* v, int32_t* pos) {
  rows_tmp_.clear();
  absl::Status st = ReadRows(layer, slots, &rows_tmp_);
  if (!st.ok()) return st;
  const kernels::KvPoolView& view = layers_[layer].view;
  const int64_t rb = row_bytes(layer);
  const int64_t kb = int64_t{DTypeSize(dtype_)} * view.d_qk;
  for (size_t i = 0; i < slots.size(); ++i) {
    const char* r = rows_tmp_.data() + i * rb;
    if (pos != nullptr) std::memcpy(pos + i, r, 4);
    kernels::KvToF32(r + 4, dtype_, view.d_qk, k_scale(layer, head),
                     k + i * view.d_qk);
    if (v != nullptr) {
      kernels::KvToF32(r + 4 + kb, dtype_, view.d_vo, v_scale(layer, head),
                       v + i * view.d_vo);
    }
  }
  return absl::OkStatus();
}

absl::Status KvPools::WindowScores(int32_t layer, int32_t head,
                                   const std::vector<int64_t>& slots,
                                   const float* q, const int32_t* q_pos,
                                   int64_t n_w, int32_t group, float scale,
                                   float* scores, int32_t* k_pos) {
  const size_t n = slots.size();
  if (n == 0) return absl::OkStatus();
  const kernels::KvPoolView& view = layers_[layer].view;
  // Row staging holds, in order: q, q_pos, scores, k_pos (4-byte values).
  const size_t nq = static_cast<size_t>(n_w) * group * view.d_qk;
  const size_t ns = static_cast<size_t>(group) * n;
  absl::Status st = Stage(n, 4 * (nq + n_w + ns + n));
  if (!st.ok()) return st;
  auto* f = row_stage_.as<float>();
  float* dq = f;
  auto* dqp = reinterpret_cast<int32_t*>(f + nq);
  float* ds = f + nq + n_w;
  auto* dkp = reinterpret_cast<int32_t*>(f + nq + n_w + ns);
  backend_->CopyIn(slot_stage_.data(), slots.data(), n * sizeof(int64_t));
  backend_->CopyIn(dq, q, nq * sizeof(float));
  backend_->CopyIn(dqp, q_pos, n_w * sizeof(int32_t));
  backend_->WindowScores(view, head, slot_stage_.as<int64_t>(),
                         static_cast<int64_t>(n), dq, dqp, n_w, group, scale,
                         ds, dkp);
  backend_->CopyOut(scores, ds, ns * sizeof(float));
  backend_->CopyOut(k_pos, dkp, n * sizeof(int32_t));
  return backend_->Synchronize();
}

absl::StatusOr<HostKvPool> KvPools::HostF32(int32_t layer) const {
  if (!backend_->host_addressable() || dtype_ != DType::kF32) {
    return absl::FailedPreconditionError(absl::StrCat(
        "host access to the KV pool needs the cpu backend and f32 KV (have ",
        std::string(backend_->name()), ", ", std::string(DTypeName(dtype_)),
        ")"));
  }
  const Layer& L = layers_[layer];
  return HostKvPool{L.k.as<float>(), L.v.as<float>(), L.pos.as<int32_t>()};
}

}  // namespace latentkv::worker
