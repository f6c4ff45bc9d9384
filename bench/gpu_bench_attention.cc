// gpu_bench's attention section: Backend::PagedAttention decode and prefill
// over one layer's pool filled with random rows (see gpu_bench.cc).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/gpu_bench.h"
#include "common/dtype.h"
#include "kernels/ops.h"

namespace latentkv::bench {
namespace {

constexpr int kPageSize = 16;

struct AttnCase {
  std::string name;
  int batch = 0;   // sequences
  int ctx = 0;     // cached tokens per sequence (a multiple of kPageSize)
  int q_rows = 0;  // query rows per sequence: 1 (decode) or ctx (prefill)
  int n_heads = 0;
  int n_kv = 0;
  int d = 0;  // d_qk = d_vo
  DType dtype = DType::kBF16;
};

// Allocates `bytes` on `be` into *out.
absl::Status Alloc(kernels::Backend& be, int64_t bytes,
                   kernels::DeviceBuffer* out) {
  auto b = be.Alloc(static_cast<size_t>(bytes), "gpu_bench attention");
  if (!b.ok()) return b.status();
  *out = std::move(*b);
  return absl::OkStatus();
}

template <typename T>
absl::Status Upload(kernels::Backend& be, const std::vector<T>& host,
                    kernels::DeviceBuffer* out) {
  absl::Status s = Alloc(be, host.size() * sizeof(T), out);
  if (s.ok()) be.CopyIn(out->data(), host.data(), host.size() * sizeof(T));
  return s;
}

absl::StatusOr<nlohmann::json> RunCase(GpuBench& bench, kernels::Backend& be,
                                       const AttnCase& c) {
  const int npp = c.ctx / kPageSize;  // pages per (sequence, KV head)
  const int64_t pages = int64_t{c.batch} * c.n_kv * npp;
  const int64_t elem = DTypeSize(c.dtype);
  const int64_t page_k = int64_t{kPageSize} * c.d * elem;  // = page_v
  const int64_t total_q = int64_t{c.batch} * c.q_rows;
  const int64_t qv = int64_t{c.n_heads} * c.d;  // values per query row
  kernels::DeviceBuffer k, v, pos, scales, q, q_pos, q_indptr, kv_indptr,
      kv_indices, kv_last, out;
  absl::Status s;
  for (auto [buf, bytes] :
       {std::pair{&k, pages * page_k}, std::pair{&v, pages * page_k},
        std::pair{&pos, pages * kPageSize * 4},
        std::pair{&out, total_q * qv * 4}}) {
    if (s.ok()) s = Alloc(be, bytes, buf);
  }
  if (!s.ok()) return s;

  // Pages in random order (a fragmented cache); kv_indices lists them per
  // (sequence, KV head), npp each.
  std::vector<int32_t> perm(pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(c.batch + c.ctx));
  const std::vector<float> host_scales(2 * c.n_kv, 1.0f / 224);
  s = Upload(be, host_scales, &scales);
  if (!s.ok()) return s;
  kernels::KvPoolView pool;
  pool.dtype = c.dtype;
  pool.page_size = kPageSize;
  pool.n_kv_heads = c.n_kv;
  pool.d_qk = pool.d_vo = c.d;
  pool.k = k.data();
  pool.v = v.data();
  pool.pos = pos.as<int32_t>();
  pool.k_scale = scales.as<float>();
  pool.v_scale = scales.as<float>() + c.n_kv;

  // Fill every slot with random rows through WriteKv, in chunks of tokens.
  {
    const int64_t tokens = int64_t{c.batch} * c.ctx;
    const int64_t chunk = std::min<int64_t>(8192, tokens);
    kernels::DeviceBuffer kr, vr, slots_d, pos_d;
    const std::vector<float> host_k = RandomF32(chunk * c.n_kv * c.d, 1),
                             host_v = RandomF32(chunk * c.n_kv * c.d, 2);
    s = Upload(be, host_k, &kr);
    if (s.ok()) s = Upload(be, host_v, &vr);
    if (s.ok()) s = Alloc(be, chunk * c.n_kv * 8, &slots_d);
    if (s.ok()) s = Alloc(be, chunk * 4, &pos_d);
    if (!s.ok()) return s;
    std::vector<int64_t> slots(chunk * c.n_kv);
    std::vector<int32_t> positions(chunk);
    for (int64_t g0 = 0; g0 < tokens; g0 += chunk) {
      const int64_t n = std::min(chunk, tokens - g0);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t seq = (g0 + t) / c.ctx, p = (g0 + t) % c.ctx;
        positions[t] = static_cast<int32_t>(p);
        for (int h = 0; h < c.n_kv; ++h) {
          slots[t * c.n_kv + h] =
              int64_t{perm[(seq * c.n_kv + h) * npp + p / kPageSize]} *
                  kPageSize +
              p % kPageSize;
        }
      }
      be.CopyIn(slots_d.data(), slots.data(), n * c.n_kv * 8);
      be.CopyIn(pos_d.data(), positions.data(), n * 4);
      be.WriteKv(kr.as<float>(), vr.as<float>(), pos_d.as<int32_t>(), n,
                 slots_d.as<int64_t>(), pool);
      s = be.Synchronize();
      if (!s.ok()) return s;
    }
  }

  // Queries: each sequence's rows at the last q_rows positions of its
  // context (decode: position ctx - 1 sees every cached token).
  const std::vector<float> host_q = RandomF32(total_q * qv, 3);
  std::vector<int32_t> host_qpos(total_q), host_qind(c.batch + 1),
      host_kvind(int64_t{c.batch} * c.n_kv + 1),
      host_last(int64_t{c.batch} * c.n_kv, kPageSize);
  for (int64_t r = 0; r < total_q; ++r)
    host_qpos[r] = c.ctx - c.q_rows + static_cast<int32_t>(r % c.q_rows);
  for (int i = 0; i <= c.batch; ++i) host_qind[i] = i * c.q_rows;
  for (size_t i = 0; i < host_kvind.size(); ++i) host_kvind[i] = i * npp;
  for (auto [host, buf] :
       {std::pair{&host_qpos, &q_pos}, std::pair{&host_qind, &q_indptr},
        std::pair{&host_kvind, &kv_indptr}, std::pair{&perm, &kv_indices},
        std::pair{&host_last, &kv_last}}) {
    if (s.ok()) s = Upload(be, *host, buf);
  }
  if (s.ok()) s = Upload(be, host_q, &q);
  if (!s.ok()) return s;

  kernels::PagedAttentionArgs a;
  a.num_seqs = c.batch;
  a.n_heads = c.n_heads;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  a.q_indptr = q_indptr.as<int32_t>();
  a.q = q.as<float>();
  a.q_pos = q_pos.as<int32_t>();
  a.kv_indptr = kv_indptr.as<int32_t>();
  a.kv_indices = kv_indices.as<int32_t>();
  a.kv_last_page_len = kv_last.as<int32_t>();
  a.SetPool(pool);
  a.out = out.as<float>();
  a.total_q = static_cast<int32_t>(total_q);
  a.max_q_rows = c.q_rows;
  a.max_pages = npp;

  // Every output element written (NaN poison), and the last sequence's last
  // (up to 4) rows against the CPU reference over a host copy of its pages.
  be.Fill(out.data(), 0xFF, out.bytes());
  be.PagedAttention(a);
  std::vector<float> dev_out(total_q * qv);
  be.CopyOut(dev_out.data(), out.data(), out.bytes());
  s = be.Synchronize();
  if (!s.ok()) return s;
  const int64_t unwritten =
      std::count_if(dev_out.begin(), dev_out.end(),
                    [](float x) { return !std::isfinite(x); });
  const int seq = c.batch - 1, rows = std::min(c.q_rows, 4);
  const int64_t local_pages = int64_t{c.n_kv} * npp;
  std::vector<uint8_t> hk(local_pages * page_k), hv(local_pages * page_k);
  std::vector<int32_t> hpos(local_pages * kPageSize);
  for (int64_t lp = 0; lp < local_pages; ++lp) {
    const int64_t dp = perm[int64_t{seq} * c.n_kv * npp + lp];
    be.CopyOut(hk.data() + lp * page_k, k.as<uint8_t>() + dp * page_k, page_k);
    be.CopyOut(hv.data() + lp * page_k, v.as<uint8_t>() + dp * page_k, page_k);
    be.CopyOut(hpos.data() + lp * kPageSize, pos.as<int32_t>() + dp * kPageSize,
               kPageSize * 4);
  }
  s = be.Synchronize();
  if (!s.ok()) return s;
  const int64_t row0 = int64_t{seq} * c.q_rows + c.q_rows - rows;
  std::vector<int32_t> ref_qind = {0, rows}, ref_kvind(c.n_kv + 1),
                       ref_ind(local_pages), ref_last(c.n_kv, kPageSize);
  for (int h = 0; h <= c.n_kv; ++h) ref_kvind[h] = h * npp;
  std::iota(ref_ind.begin(), ref_ind.end(), 0);
  std::vector<float> ref_out(rows * qv);
  kernels::PagedAttentionArgs r = a;
  r.num_seqs = 1;
  r.q_indptr = ref_qind.data();
  r.q = host_q.data() + row0 * qv;
  r.q_pos = host_qpos.data() + row0;
  r.kv_indptr = ref_kvind.data();
  r.kv_indices = ref_ind.data();
  r.kv_last_page_len = ref_last.data();
  r.k_pool = hk.data();
  r.v_pool = hv.data();
  r.pos_pool = hpos.data();
  r.k_scale = host_scales.data();
  r.v_scale = host_scales.data() + c.n_kv;
  r.out = ref_out.data();
  r.total_q = rows;
  r.max_q_rows = rows;
  kernels::PagedAttention(r);
  double err = 0, norm = 0;
  for (int64_t i = 0; i < rows * qv; ++i) {
    const double d = double{dev_out[row0 * qv + i]} - ref_out[i];
    err += d * d;
    norm += double{ref_out[i]} * ref_out[i];
  }
  const double rel_err = std::sqrt(err / std::max(norm, 1e-30));

  auto ms = MedianCallMs(be, [&] { be.PagedAttention(a); });
  if (!ms.ok()) return ms.status();
  // Bytes every call must read: K + V + positions of every cached slot.
  const double bytes =
      double(c.batch) * c.n_kv * c.ctx * (2.0 * c.d * elem + 4);
  const double bytes_per_s = bytes / (*ms * 1e-3);
  double visible = 0;  // (query row, key) pairs under the causal mask
  for (int i = 0; i < c.q_rows; ++i) visible += c.ctx - c.q_rows + i + 1;
  const double flops = 4.0 * c.d * c.n_heads * visible * c.batch;
  nlohmann::json row = {
      {"name", c.name},
      {"batch", c.batch},
      {"ctx", c.ctx},
      {"q_rows", c.q_rows},
      {"head_dim", c.d},
      {"kv_dtype", std::string(DTypeName(c.dtype))},
      {"ms", *ms},
      {"bytes", bytes},
      {"gbs", bytes_per_s / 1e9},
      {"pct_hbm", 100.0 * bytes_per_s / bench.hbm_bytes_per_s},
      {"tflops", c.q_rows > 1 ? nlohmann::json(flops / (*ms * 1e-3) / 1e12)
                              : nlohmann::json()},
      {"rel_err", rel_err},
      {"unwritten", unwritten},
      {"ok", unwritten == 0 && rel_err < 1e-3}};
  return row;
}

}  // namespace

absl::Status RunAttention(GpuBench& bench) {
  const bool small = bench.options.small;
  const int n_heads = small ? 8 : 32, n_kv = small ? 2 : 8;
  const int full_d = small ? 32 : 128;
  using Shape = std::pair<int, int>;  // batch, ctx
  const std::vector<Shape> decode =
      small
          ? std::vector<Shape>{{2, 256}, {3, 128}}
          : std::vector<Shape>{{32, 4096}, {32, 8192}, {64, 4096}, {64, 8192}};
  const int prefill = small ? 64 : 2048;
  std::vector<AttnCase> cases;
  for (int d : {full_d, full_d / 2}) {
    for (DType dt : {DType::kBF16, DType::kF8E4M3}) {
      for (auto [b, ctx] : decode) {
        cases.push_back(
            {absl::StrCat("decode/d", d, "/", std::string(DTypeName(dt)), "/b",
                          b, "/ctx", ctx),
             b, ctx, 1, n_heads, n_kv, d, dt});
      }
    }
  }
  for (int d : {full_d, full_d / 2}) {
    cases.push_back(
        {absl::StrCat("prefill/d", d, "/bf16/q", prefill, "/ctx", prefill), 1,
         prefill, prefill, n_heads, n_kv, d, DType::kBF16});
  }
  auto backend = bench.NewBackend();
  if (!backend.ok()) return backend.status();
  for (const AttnCase& c : cases) {
    auto r = RunCase(bench, **backend, c);
    if (!r.ok()) {
      bench.Error(c.name, r.status());
      backend = bench.NewBackend();  // the failed one may be poisoned
      if (!backend.ok()) return backend.status();
      continue;
    }
    std::printf("%-36s %9.4f ms %7.0f GB/s %5.1f%% HBM  err %.1e %s\n",
                c.name.c_str(), (*r)["ms"].get<double>(),
                (*r)["gbs"].get<double>(), (*r)["pct_hbm"].get<double>(),
                (*r)["rel_err"].get<double>(),
                (*r)["ok"].get<bool>() ? "ok" : "WRONG");
    std::fflush(stdout);
    if (!(*r)["ok"].get<bool>()) {
      bench.Error(c.name, absl::InternalError(absl::StrCat(
                              "wrong output: rel_err ", (*r)["rel_err"].dump(),
                              ", unwritten ", (*r)["unwritten"].dump())));
    }
    bench.results["attention"].push_back(*r);
    if (bench.save) bench.save();
  }
  return absl::OkStatus();
}

}  // namespace latentkv::bench
