// GPU benchmark of the CUDA backend (built with -DLATENTKV_WITH_CUDA=ON),
// on the shapes of Llama-3-8B (32 query heads, 8 KV heads, head dim 128;
// KV-Latent 50%: d_qk = d_vo = 64), against the device's memory bandwidth
// measured in the same run (kernels::cuda::MeasureCopyBandwidth: a
// device-to-device copy, bytes read plus bytes written).
//
//   capacity   concurrent 8k-token sequences that fit in the free device
//              memory beside the model's weights, for full bf16 KV, latent
//              50% bf16 and latent 50% fp8_e4m3 (bytes per token as the pools
//              store them: KvRowBytes per KV head and layer), confirmed by
//              allocating the weights' bytes and every layer's K/V/position
//              pools for that many sequences through the backend.
//   attention  Backend::PagedAttention decode (1 query row per sequence,
//              batch 32/64, context 4096/8192, page size 16, pools filled
//              with random rows through WriteKv, pages in random order) for
//              full/latent dims x bf16/fp8: GB/s = bytes of K + V +
//              positions read per call / median time, and its fraction of
//              the copy bandwidth (goal >= 70%); plus a prefill case (1
//              sequence, 2048 query rows over 2048 tokens, causal) in
//              TFLOP/s. Every case is checked against the CPU reference
//              (kernels::PagedAttention) on one sequence, and every output
//              element must be written (the output is poisoned with NaN).
//   decode     ModelRunner::Forward decode steps of a synthetic
//              Llama-3-8B-shaped model (bf16 weights, random, built in
//              memory: WriteSyntheticModel draws its normals on one thread,
//              about 36 ns a parameter here, so 8B would take minutes) with
//              a bf16 KV cache after a prefill of --decode_ctx tokens per
//              sequence, full and latent 50% dims: tokens/s against the
//              roofline (weight bytes + KV bytes read per step) / bandwidth
//              (goal >= 60%); the weight bytes leave out the embedding table
//              (a step reads one row per token). A step includes the logits'
//              copy to the host (the engine samples there).
//
// Usage: gpu_bench [--out_dir=DIR] [--sections=capacity,attention,decode]
//                  [--decode_layers=32] [--decode_ctx=1024]
//                  [--decode_batches=1,32] [--decode_steps=24]
//                  [--backend=cuda|cpu] [--small]
// Writes DIR/gpu_bench.json and DIR/gpu_bench.md (DIR defaults to $OUT, else
// the current directory) after every case, prints the tables at the end and
// exits 1 when any case failed. --backend=cpu --small runs the same logic on
// tiny shapes on the CPU (a smoke test of the bench itself).
#include "bench/gpu_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#if LATENTKV_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace latentkv::bench {

absl::StatusOr<std::unique_ptr<kernels::Backend>> GpuBench::NewBackend() const {
#if LATENTKV_WITH_CUDA
  if (options.backend == "cuda") return kernels::cuda::MakeCudaBackend();
#endif
  return kernels::CreateBackend(options.backend);
}

void GpuBench::Error(const std::string& what, const absl::Status& status) {
  const std::string line = what + ": " + status.ToString();
  std::fprintf(stderr, "ERROR %s\n", line.c_str());
  results["errors"].push_back(line);
  if (save) save();
}

absl::StatusOr<double> MedianCallMs(kernels::Backend& backend,
                                    const std::function<void()>& fn, int reps) {
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  for (int i = 0; i < 2; ++i) fn();
  absl::Status s = backend.Synchronize();
  if (!s.ok()) return s;
  Clock::time_point t0 = Clock::now();
  fn();
  s = backend.Synchronize();
  if (!s.ok()) return s;
  const double one = std::max(ms_since(t0), 1e-3);
  const int calls = std::clamp(static_cast<int>(25.0 / one), 1, 1000);
  std::vector<double> per_call;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    for (int i = 0; i < calls; ++i) fn();
    s = backend.Synchronize();
    if (!s.ok()) return s;
    per_call.push_back(ms_since(t0) / calls);
  }
  std::nth_element(per_call.begin(), per_call.begin() + per_call.size() / 2,
                   per_call.end());
  return per_call[per_call.size() / 2];
}

std::vector<float> RandomF32(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : v) {
    x += 0x9E3779B97F4A7C15ull;  // splitmix64
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    f = static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }
  return v;
}

model::ModelConfig Llama3_8BShape(int layers, int head_dim) {
  model::ModelConfig c = model::ModelConfig::Llama(4096, 14336, layers, 32, 8,
                                                   128256, 8192, 500000.0);
  c.qk_head_dim.assign(layers, head_dim);
  c.vo_head_dim.assign(layers, head_dim);
  return c;
}

int64_t WeightBytes(const model::ModelConfig& c, DType matrix_dtype) {
  const int64_t h = c.hidden_size;
  int64_t matrix_values = int64_t{c.vocab_size} * h;  // embeddings
  if (!c.tie_word_embeddings) matrix_values += int64_t{c.vocab_size} * h;
  int64_t norm_values = h;
  for (int l = 0; l < c.num_layers; ++l) {
    const int64_t dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
    matrix_values += (c.num_heads + c.num_kv_heads) * dqk * h +
                     (c.num_kv_heads + c.num_heads) * dvo * h +
                     3 * h * c.intermediate_size;
    norm_values += 2 * h;
  }
  return matrix_values * DTypeSize(matrix_dtype) + norm_values * 4;
}

// --- capacity ---------------------------------------------------------------

absl::Status RunCapacity(GpuBench& bench) {
  const bool small = bench.options.small;
  const int layers = small ? 2 : 32;
  const int ctx = small ? 512 : 8192;
  const int page_size = 16;
  auto backend = bench.NewBackend();
  if (!backend.ok()) return backend.status();
  int64_t free_bytes = bench.free_bytes;
#if LATENTKV_WITH_CUDA
  if (bench.options.backend == "cuda") {
    auto info = kernels::cuda::QueryDevice(0);
    if (!info.ok()) return info.status();
    free_bytes = info->free_bytes;  // with this backend's context in place
  }
#endif
  // Left free for the runner's activation workspace, the cuBLAS workspace
  // and allocation granularity.
  const int64_t reserve = small ? (int64_t{64} << 20) : (int64_t{1} << 30);
  struct Config {
    const char* name;
    bool latent;
    DType dtype;
  };
  for (const Config& cfg :
       {Config{"full/bf16", false, DType::kBF16},
        Config{"latent50/bf16", true, DType::kBF16},
        Config{"latent50/fp8_e4m3", true, DType::kF8E4M3}}) {
    model::ModelConfig c = Llama3_8BShape(layers, cfg.latent ? 64 : 128);
    if (small) {
      c = model::ModelConfig::Llama(256, 512, layers, 8, 2, 512, 1024);
      c.qk_head_dim.assign(layers, cfg.latent ? 16 : 32);
      c.vo_head_dim = c.qk_head_dim;
    }
    const int64_t weights = WeightBytes(c, DType::kBF16);
    const int64_t row = KvRowBytes(cfg.dtype, c.qk_head_dim[0],
                                   c.vo_head_dim[0]);  // per KV head, layer
    const int64_t token_bytes = row * c.num_kv_heads * layers;
    const int64_t seq_bytes = token_bytes * ctx;
    const int64_t avail = free_bytes - weights - reserve;
    const int64_t seqs = avail > 0 ? avail / seq_bytes : 0;
    // Confirm: the weights' bytes, then every layer's K, V and position
    // pools (as KvPools allocates them) for `n` sequences.
    auto fits = [&](int64_t n) {
      std::vector<kernels::DeviceBuffer> held;
      auto w = (*backend)->Alloc(weights, "weights");
      if (!w.ok()) return false;
      held.push_back(std::move(*w));
      const int64_t pages = n * c.num_kv_heads * (ctx / page_size);
      const int64_t elem = DTypeSize(cfg.dtype);
      for (int l = 0; l < layers; ++l) {
        for (int64_t bytes : {pages * page_size * c.qk_head_dim[l] * elem,
                              pages * page_size * c.vo_head_dim[l] * elem,
                              pages * page_size * int64_t{4}}) {
          auto b = (*backend)->Alloc(bytes, "kv pool");
          if (!b.ok()) return false;
          held.push_back(std::move(*b));
        }
      }
      return true;
    };
    int64_t allocated = seqs;
    while (allocated > 0 && !fits(allocated)) allocated = allocated * 19 / 20;
    nlohmann::json r = {{"config", cfg.name},
                        {"context", ctx},
                        {"layers", layers},
                        {"kv_bytes_per_token", token_bytes},
                        {"kv_bytes_per_token_layer", row * c.num_kv_heads},
                        {"weights_gb", weights / 1e9},
                        {"free_gb", free_bytes / 1e9},
                        {"reserve_gb", reserve / 1e9},
                        {"seqs_computed", seqs},
                        {"seqs_allocated", allocated},
                        {"confirmed", allocated == seqs && seqs > 0}};
    bench.results["capacity"].push_back(r);
    std::printf(
        "capacity %-18s %8lld B/token  %5lld seqs@%d (allocated %lld)\n",
        cfg.name, static_cast<long long>(token_bytes),
        static_cast<long long>(seqs), ctx, static_cast<long long>(allocated));
    if (bench.save) bench.save();
  }
  return (*backend)->Synchronize();
}

namespace {

// --- output
// -------------------------------------------------------------------

std::string Fmt(const nlohmann::json& v, const char* fmt = "%.3g") {
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_string()) return v.get<std::string>();
  char buf[64];
  if (v.is_number_integer()) {
    std::snprintf(buf, sizeof(buf), "%lld", v.get<long long>());
  } else {
    std::snprintf(buf, sizeof(buf), *fmt != 0 ? fmt : "%.4g", v.get<double>());
  }
  return buf;
}

// A markdown table of `rows` with the given (header, key, format) columns.
std::string Table(const nlohmann::json& rows,
                  const std::vector<std::vector<const char*>>& cols) {
  std::string out = "|";
  for (const auto& c : cols) out += std::string(" ") + c[0] + " |";
  out += "\n|";
  for (size_t i = 0; i < cols.size(); ++i) out += "---|";
  out += "\n";
  for (const auto& r : rows) {
    out += "|";
    for (const auto& c : cols) {
      out +=
          " " + Fmt(r.contains(c[1]) ? r[c[1]] : nlohmann::json(), c[2]) + " |";
    }
    out += "\n";
  }
  return out;
}

std::string Markdown(const nlohmann::json& res) {
  std::string md = "# gpu_bench\n\n";
  if (res.contains("device")) md += "device: " + res["device"].dump() + "\n\n";
  md += "HBM copy bandwidth (read + write): " +
        Fmt(res.value("hbm_copy_gbs", nlohmann::json()), "%.0f") + " GB/s\n\n";
  if (res.contains("capacity")) {
    md += "## Concurrent sequences (KV pools beside the weights)\n\n" +
          Table(res["capacity"], {{"config", "config", ""},
                                  {"ctx", "context", ""},
                                  {"KV B/token", "kv_bytes_per_token", ""},
                                  {"weights GB", "weights_gb", "%.2f"},
                                  {"free GB", "free_gb", "%.2f"},
                                  {"seqs computed", "seqs_computed", ""},
                                  {"seqs allocated", "seqs_allocated", ""},
                                  {"confirmed", "confirmed", ""}}) +
          "\n";
  }
  if (res.contains("attention")) {
    md += "## Paged attention (goal: decode >= 70% of copy bandwidth)\n\n" +
          Table(res["attention"], {{"case", "name", ""},
                                   {"ms", "ms", "%.4f"},
                                   {"GB/s", "gbs", "%.0f"},
                                   {"% HBM", "pct_hbm", "%.1f"},
                                   {"TFLOP/s", "tflops", "%.1f"},
                                   {"rel err", "rel_err", "%.2g"},
                                   {"ok", "ok", ""}}) +
          "\n";
  }
  if (res.contains("decode")) {
    md += "## Decode through ModelRunner (goal >= 60% of roofline)\n\n" +
          Table(res["decode"], {{"model", "model", ""},
                                {"batch", "batch", ""},
                                {"ctx", "ctx", "%.0f"},
                                {"step ms", "step_ms", "%.3f"},
                                {"tok/s", "tok_s", "%.1f"},
                                {"roofline tok/s", "roofline_tok_s", "%.1f"},
                                {"% roofline", "pct_roofline", "%.1f"},
                                {"weights GB", "weight_gb", "%.2f"},
                                {"KV GB/step", "kv_gb_per_step", "%.3f"},
                                {"prefill tok/s", "prefill_tok_s", "%.0f"}}) +
          "\n";
  }
  if (res.contains("errors")) {
    md += "## Errors\n\n";
    for (const auto& e : res["errors"])
      md += "- " + e.get<std::string>() + "\n";
  }
  return md;
}

bool ParseInts(const std::string& s, std::vector<int>* out) {
  out->clear();
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(p, &v) || v <= 0) return false;
    out->push_back(v);
  }
  return !out->empty();
}

int Usage(const char* arg) {
  std::fprintf(stderr,
               "bad flag %s\nusage: gpu_bench [--out_dir=DIR] "
               "[--sections=capacity,attention,decode] [--decode_layers=N] "
               "[--decode_ctx=N] [--decode_batches=1,32] [--decode_steps=N] "
               "[--backend=cuda|cpu] [--small]\n",
               arg);
  return 2;
}

}  // namespace
}  // namespace latentkv::bench

int main(int argc, char** argv) {
  namespace lb = latentkv::bench;
  lb::GpuBench bench;
  lb::GpuBenchOptions& o = bench.options;
  const char* env_out = std::getenv("OUT");
  std::string out_dir = env_out != nullptr ? env_out : ".";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    const std::string key = a.substr(0, eq);
    const std::string val = eq == std::string::npos ? "" : a.substr(eq + 1);
    std::vector<int> ints;
    if (key == "--small") {
      o.small = true;
    } else if (key == "--backend" && !val.empty()) {
      o.backend = val;
    } else if (key == "--out_dir" && !val.empty()) {
      out_dir = val;
    } else if (key == "--sections" && !val.empty()) {
      o.sections = val;
    } else if (key == "--decode_batches" && lb::ParseInts(val, &ints)) {
      o.decode_batches = ints;
    } else if ((key == "--decode_layers" || key == "--decode_ctx" ||
                key == "--decode_steps") &&
               lb::ParseInts(val, &ints) && ints.size() == 1) {
      (key == "--decode_layers" ? o.decode_layers
       : key == "--decode_ctx"  ? o.decode_ctx
                                : o.decode_steps) = ints[0];
    } else {
      return lb::Usage(argv[i]);
    }
  }
  if (o.small && o.decode_layers == 32) o.decode_layers = 2;
  const std::string json_path = out_dir + "/gpu_bench.json";
  const std::string md_path = out_dir + "/gpu_bench.md";
  bench.save = [&] {
    std::ofstream(json_path) << bench.results.dump(2) << "\n";
    std::ofstream(md_path) << lb::Markdown(bench.results);
  };
  bench.results["backend"] = o.backend;
  bench.results["small"] = o.small;

#if LATENTKV_WITH_CUDA
  if (o.backend == "cuda") {
    auto info = latentkv::kernels::cuda::QueryDevice(0);
    if (!info.ok()) {
      bench.Error("QueryDevice", info.status());
      return 1;
    }
    bench.free_bytes = info->free_bytes;
    bench.results["device"] = {{"name", info->name},
                               {"sm_count", info->sm_count},
                               {"cc", std::to_string(info->cc_major) + "." +
                                          std::to_string(info->cc_minor)},
                               {"total_gb", info->total_bytes / 1e9},
                               {"free_gb", info->free_bytes / 1e9},
                               {"l2_mb", info->l2_bytes / 1e6}};
    auto bw =
        latentkv::kernels::cuda::MeasureCopyBandwidth(0, int64_t{1} << 30, 20);
    if (!bw.ok()) {
      bench.Error("MeasureCopyBandwidth", bw.status());
      return 1;
    }
    bench.hbm_bytes_per_s = *bw;
  }
#endif
  if (bench.hbm_bytes_per_s == 0) {  // the CPU (smoke runs)
    bench.hbm_bytes_per_s =
        latentkv::kernels::MeasureReadBandwidth(int64_t{256} << 20, 2);
    bench.free_bytes = int64_t{2} << 30;
    bench.results["device"] = {{"name", "host cpu (smoke run)"}};
  }
  bench.results["hbm_copy_gbs"] = bench.hbm_bytes_per_s / 1e9;
  std::printf("device %s, copy bandwidth %.0f GB/s\n",
              bench.results["device"].value("name", "?").c_str(),
              bench.hbm_bytes_per_s / 1e9);
  bench.save();

  struct Section {
    const char* name;
    absl::Status (*run)(lb::GpuBench&);
  };
  for (const Section& s : {Section{"capacity", lb::RunCapacity},
                           Section{"attention", lb::RunAttention},
                           Section{"decode", lb::RunDecode}}) {
    if (o.sections.find(s.name) == std::string::npos) continue;
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status st = s.run(bench);
    if (!st.ok()) bench.Error(s.name, st);
    std::printf(
        "section %s: %.1f s\n", s.name,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count());
    std::fflush(stdout);
  }
  bench.save();
  std::printf("\n%s", lb::Markdown(bench.results).c_str());
  std::printf("results: %s %s\n", json_path.c_str(), md_path.c_str());
  return bench.results.contains("errors") ? 1 : 0;
}
