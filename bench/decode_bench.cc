// Decode throughput of the engine (scheduler + model runner + sampler on the
// engine thread) for 1/4/16/64 concurrent streams, on stories260K and on a
// synthetic model with the stories110M shape, f32 and bf16 weights, next to
// the memory-bandwidth roofline measured in the same run. Quantized weights
// (q8_0, q4_0, q4_1 quantized at load, LoadOptions::matrix_dtype) on the
// 110M shape and on a synthetic SmolLM2-135M shape (hidden 576, FFN 1536,
// 30 layers, 9 heads, 3 KV heads, vocab 49152), 1 and 64 streams. The 110M
// cases run twice: with the weights packed as served
// (EngineOptions::pack_weights) and with the loaded row-major matrices
// ("/rowmajor"), the baseline.
//
// Roofline for one stream: read bandwidth / (weight bytes + KV bytes read per
// token). Counters: tok_s (aggregate decode tokens/s), roofline_tok_s,
// frac_roofline (= tok_s / roofline_tok_s, one stream), speedup_vs_1 (vs
// the 1-stream run of the same model and dtype in this process), vs_f32 /
// vs_bf16 (tok/s against the f32 / bf16 run of the same model and streams in
// this process, when it ran before), bytes_per_token (weight + KV bytes read
// per decode step / streams).
//
// Usage: decode_bench [--shared DIR] [benchmark flags]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "benchmark/benchmark.h"
#include "kernels/ops.h"
#include "model/convert.h"
#include "model/weights.h"
#include "worker/engine/engine.h"

namespace lk = latentkv;

namespace {

std::string g_shared = LATENTKV_SHARED_DIR;
double g_bandwidth = 0;                      // bytes/s, 2 threads
std::map<std::string, double> g_one_stream;  // model/dtype -> tok/s
std::map<std::string, double> g_tok_s;       // model/dtype/streams -> tok/s

std::string TempDir() {
  std::string t = "/tmp/latentkv-bench-XXXXXX";
  if (mkdtemp(t.data()) == nullptr) std::abort();
  return t;
}

const std::string& ModelDir(const std::string& name) {
  static std::map<std::string, std::string> dirs;
  auto it = dirs.find(name);
  if (it != dirs.end()) return it->second;
  const std::string dir = TempDir() + "/" + name;
  absl::Status st;
  if (name == "stories260K") {
    const std::string m = g_shared + "/models/stories260K";
    st = lk::model::ConvertLlama2c(m + "/stories260K.bin", m + "/tok512.bin",
                                   dir);
  } else if (name == "smollm2-135M") {
    const auto c =
        lk::model::ModelConfig::Llama(576, 1536, 30, 9, 3, 49152, 2048);
    st = lk::model::WriteSyntheticModel(c, dir, lk::DType::kF32, 1);
  } else {
    const auto c =
        lk::model::ModelConfig::Llama(768, 2048, 12, 12, 12, 32000, 1024);
    st = lk::model::WriteSyntheticModel(c, dir, lk::DType::kF32, 1);
  }
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    std::abort();
  }
  return dirs[name] = dir;
}

int64_t MatrixBytes(const lk::model::ModelWeights& w) {
  int64_t n = 0;
  auto add = [&](const lk::model::Tensor& t) {
    n += t.shape[0] * lk::DTypeRowBytes(t.dtype, t.shape.back());
  };
  for (const auto& l : w.layers) {
    for (const auto* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj,
                          &l.gate_proj, &l.up_proj, &l.down_proj}) {
      add(*t);
    }
  }
  add(w.lm_head);  // the embedding row read per token is negligible
  return n;
}

// kv_dtype / prompt_len: the KV cache's element type and the prompt length
// (long prompts make decode read a KV comparable to the weights).
void BM_Decode(benchmark::State& state, std::string model_name, lk::DType dtype,
               bool pack_weights, lk::DType kv_dtype = lk::DType::kF32,
               int prompt_len = 8) {
  const int streams = static_cast<int>(state.range(0));
  const int new_tokens = static_cast<int>(state.range(1));
  lk::model::LoadOptions lo;
  lo.matrix_dtype = dtype;
  auto w = lk::model::LoadModel(ModelDir(model_name), lo);
  if (!w.ok()) {
    state.SkipWithError(w.status().ToString().c_str());
    return;
  }
  std::shared_ptr<const lk::model::ModelWeights> weights(std::move(*w));
  const int64_t weight_bytes = MatrixBytes(*weights);
  lk::worker::EngineOptions eo;
  eo.kv.max_bytes = int64_t{1} << 30;
  eo.scheduler.max_running = 64;
  eo.pack_weights = pack_weights;
  eo.kv.dtype = kv_dtype;
  eo.scheduler.max_step_tokens = std::max(512, prompt_len + 1);
  auto engine =
      lk::worker::Engine::Create(weights, lk::kernels::MakeCpuBackend(), eo);
  if (!engine.ok()) {
    state.SkipWithError(engine.status().ToString().c_str());
    return;
  }
  int64_t total = 0;
  double seconds = 0;
  int run = 0;
  for (auto _ : state) {
    std::vector<std::promise<void>> done(streams);
    // Decode time runs from the last stream's first token (prefill done) to
    // the last stream's end; prefill is excluded.
    std::mutex mu;
    std::chrono::steady_clock::time_point first_token_done{};
    int firsts = 0;
    for (int s = 0; s < streams; ++s) {
      lk::worker::GenerationRequest r;
      r.id = std::to_string(run) + "-" + std::to_string(s);
      for (int i = 0; i < prompt_len; ++i)
        r.prompt.push_back(1 + (7 * s + i) % 300);
      r.max_new_tokens = new_tokens;
      r.ignore_eos = true;
      auto* p = &done[s];
      auto first = std::make_shared<bool>(true);
      auto sink = [p, first, &mu, &first_token_done,
                   &firsts](const lk::worker::GenerationEvent& e) {
        if (e.token >= 0 && *first) {
          *first = false;
          std::lock_guard<std::mutex> lock(mu);
          ++firsts;
          first_token_done = std::chrono::steady_clock::now();
        }
        if (e.finish != lk::worker::FinishReason::kNone || !e.status.ok()) {
          p->set_value();
        }
      };
      if (!(*engine)->Submit(std::move(r), sink).ok()) {
        state.SkipWithError("submit failed");
        return;
      }
    }
    for (auto& d : done) d.get_future().wait();
    // Decode time: from the last stream's first token (prefill done) to the
    // end; prefill is excluded.
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                             first_token_done)
                   .count();
    total += int64_t{streams} * (new_tokens - 1);
    ++run;
  }
  const double tok_s = total / seconds;
  const lk::model::ModelConfig& c = weights->config;
  // Average KV bytes read per generated token (context ~ prompt + half the
  // output).
  const double kv_bytes = c.KvValuesPerToken() *
                          static_cast<double>(lk::DTypeSize(kv_dtype)) *
                          (prompt_len + new_tokens / 2.0);
  // This shared VM's bandwidth drifts by +-25% within minutes: the roofline
  // takes the higher (stricter) of the start-of-run probe and one measured
  // right after this case.
  const double bandwidth = std::max(
      g_bandwidth, lk::kernels::MeasureReadBandwidth(int64_t{512} << 20, 2));
  const double roofline = bandwidth / (weight_bytes + kv_bytes);
  const std::string kv_tag = kv_dtype == lk::DType::kF32 && prompt_len == 8
                                 ? ""
                                 : "/kv_" +
                                       std::string(lk::DTypeName(kv_dtype)) +
                                       "/prompt" + std::to_string(prompt_len);
  const std::string key = model_name + std::string(lk::DTypeName(dtype)) +
                          (pack_weights ? "" : "/rowmajor") + kv_tag;
  if (streams == 1) g_one_stream[key] = tok_s;
  state.counters["tok_s"] = tok_s;
  const std::string base = model_name + "/" + std::to_string(streams) + "/";
  if (!kv_tag.empty()) {
    // Long-context cases compare with the f32 cache of the same run.
    const std::string f32_key = base + "kv_f32/" + std::to_string(prompt_len);
    if (kv_dtype == lk::DType::kF32) g_tok_s[f32_key] = tok_s;
    if (kv_dtype != lk::DType::kF32 && g_tok_s.count(f32_key)) {
      state.counters["vs_kv_f32"] = tok_s / g_tok_s[f32_key];
    }
  } else if (pack_weights) {
    g_tok_s[base + std::string(lk::DTypeName(dtype))] = tok_s;
  }
  for (lk::DType ref : {lk::DType::kF32, lk::DType::kBF16}) {
    const std::string k = base + std::string(lk::DTypeName(ref));
    if (kv_tag.empty() && pack_weights && dtype != ref && g_tok_s.count(k)) {
      state.counters[ref == lk::DType::kF32 ? "vs_f32" : "vs_bf16"] =
          tok_s / g_tok_s[k];
    }
  }
  state.counters["kv_bytes_per_token"] = kv_bytes;
  state.counters["bytes_per_token"] =
      (weight_bytes + kv_bytes * streams) / static_cast<double>(streams);
  state.counters["roofline_tok_s"] = roofline;
  if (streams == 1) state.counters["frac_roofline"] = tok_s / roofline;
  if (g_one_stream.count(key))
    state.counters["speedup_vs_1"] = tok_s / g_one_stream[key];
  state.counters["weight_MB"] = weight_bytes / 1e6;
  state.counters["bandwidth_GBs"] = bandwidth / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--shared=", 9) == 0) g_shared = argv[i] + 9;
  }
  g_bandwidth = lk::kernels::MeasureReadBandwidth(int64_t{512} << 20, 2);
  std::printf("measured read bandwidth (2 threads): %.1f GB/s\n",
              g_bandwidth / 1e9);
  for (const char* m : {"stories260K", "stories110M", "smollm2-135M"}) {
    for (lk::DType d : {lk::DType::kF32, lk::DType::kBF16, lk::DType::kQ8_0,
                        lk::DType::kQ4_0, lk::DType::kQ4_1}) {
      const bool small = std::string(m) == "stories260K";
      const bool smol = std::string(m) == "smollm2-135M";
      // Quantized matrices need widths that are multiples of 32 (not
      // stories260K's) and are never packed.
      const bool quant = lk::IsBlockQuantized(d);
      if (small && quant) continue;
      // The engine as served (weights packed where the backend prefers), then
      // for the 110M shape the loaded row-major matrices as the baseline
      // (EngineOptions::pack_weights = false).
      for (bool pack : {true, false}) {
        if ((small || smol || quant) && !pack) continue;
        const std::string name = std::string("Decode/") + m + "/" +
                                 std::string(lk::DTypeName(d)) +
                                 (pack ? "" : "/rowmajor");
        auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Decode, m, d,
                                               pack, lk::DType::kF32, 8);
        b->ArgNames({"streams", "new_tokens"})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        if (smol || quant) {
          for (int s : {1, 64}) b->Args({s, 48});
        } else {
          for (int s : {1, 4, 16, 64}) b->Args({s, small ? 256 : 48});
        }
        b->Iterations(small ? 3 : 1);
      }
    }
  }
  // Long context: 480-token prompts, 16 streams, every KV dtype (f32
  // first: the others report vs_kv_f32 against it).
  for (lk::DType kv : {lk::DType::kF32, lk::DType::kBF16, lk::DType::kF16,
                       lk::DType::kF8E4M3}) {
    const std::string name = "Decode/stories110M/f32/kv_" +
                             std::string(lk::DTypeName(kv)) + "/prompt480";
    benchmark::RegisterBenchmark(name.c_str(), BM_Decode, "stories110M",
                                 lk::DType::kF32, true, kv, 480)
        ->ArgNames({"streams", "new_tokens"})
        ->Args({16, 32})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
