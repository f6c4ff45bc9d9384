// gpu_bench's decode section: ModelRunner::Forward decode steps of a
// synthetic Llama-3-8B-shaped model against the memory roofline (see
// gpu_bench.cc).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/gpu_bench.h"
#include "common/dtype.h"
#include "model/weights.h"
#include "worker/engine/model_runner.h"

namespace latentkv::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The tensors LoadModel would give for a model directory written by
// model::WriteSyntheticModel(c, dir, bf16) and loaded with matrix_dtype
// bf16, built in memory: matrices uniform with std 0.02 (bf16), norms 1
// (f32), the config's RoPE tables. Filled on every core.
std::shared_ptr<const model::ModelWeights> SyntheticWeights(
    const model::ModelConfig& c) {
  auto w = std::make_shared<model::ModelWeights>();
  w->config = c;
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<model::Tensor*> matrices;
  auto matrix = [&](model::Tensor& t, int64_t rows, int64_t cols) {
    t.dtype = DType::kBF16;
    t.shape = {rows, cols};
    t.owned.resize(static_cast<size_t>(rows * cols * 2));
    t.data = t.owned.data();
    matrices.push_back(&t);
  };
  auto norm = [&](model::Tensor& t) {
    t.dtype = DType::kF32;
    t.shape = {h};
    t.owned.resize(static_cast<size_t>(h * 4));
    std::fill_n(reinterpret_cast<float*>(t.owned.data()), h, 1.0f);
    t.data = t.owned.data();
  };
  matrix(w->embed_tokens, c.vocab_size, h);
  w->layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    model::LayerWeights& lw = w->layers[l];
    const int64_t dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
    norm(lw.attn_norm);
    matrix(lw.q_proj, c.num_heads * dqk, h);
    matrix(lw.k_proj, c.num_kv_heads * dqk, h);
    matrix(lw.v_proj, c.num_kv_heads * dvo, h);
    matrix(lw.o_proj, h, c.num_heads * dvo);
    norm(lw.ffn_norm);
    matrix(lw.gate_proj, inter, h);
    matrix(lw.up_proj, inter, h);
    matrix(lw.down_proj, h, inter);
    lw.rope_inv_freq = model::DefaultRopeInvFreq(c, l);
  }
  norm(w->final_norm);
  matrix(w->lm_head, c.vocab_size, h);

  // Blocks of 1M values handed out to the threads.
  constexpr int64_t kBlock = int64_t{1} << 20;
  std::vector<std::pair<uint16_t*, int64_t>> blocks;  // start, count
  for (model::Tensor* t : matrices) {
    auto* p = reinterpret_cast<uint16_t*>(t->owned.data());
    const int64_t n = t->shape[0] * t->shape[1];
    for (int64_t i = 0; i < n; i += kBlock)
      blocks.push_back({p + i, std::min(kBlock, n - i)});
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t b; (b = next.fetch_add(1)) < blocks.size();) {
      uint64_t x = (b + 1) * 0x9E3779B97F4A7C15ull;
      for (int64_t i = 0; i < blocks[b].second; ++i) {
        x += 0x9E3779B97F4A7C15ull;  // splitmix64
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        // Uniform on [-a, a) with a = 0.02 * sqrt(3): std 0.02.
        const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
        blocks[b].first[i] = F32ToBf16((2.0f * u - 1.0f) * 0.034641f);
      }
    }
  };
  std::vector<std::thread> threads;
  const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  return w;
}

// Decode rows of one model (full or latent 50% head dims).
absl::Status RunModel(GpuBench& bench, bool latent) {
  const GpuBenchOptions& o = bench.options;
  const bool small = o.small;
  const int layers = o.decode_layers;
  model::ModelConfig c = Llama3_8BShape(layers, latent ? 64 : 128);
  if (small) {
    c = model::ModelConfig::Llama(256, 512, layers, 8, 2, 512, 1024);
    c.qk_head_dim.assign(layers, latent ? 16 : 32);
    c.vo_head_dim = c.qk_head_dim;
  }
  absl::Status s = c.Validate();
  if (!s.ok()) return s;
  const int ctx = small ? std::min(o.decode_ctx, 64) : o.decode_ctx;
  const std::vector<int> batches =
      small ? std::vector<int>{1, 3} : o.decode_batches;
  const int steps = small ? 4 : o.decode_steps, warmup = 2;
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const std::string name =
      absl::StrCat(small ? "tiny" : "llama3-8b-shape", "/L", layers, "/",
                   latent ? "latent50" : "full", "/kv_bf16");

  Clock::time_point t0 = Clock::now();
  std::shared_ptr<const model::ModelWeights> weights = SyntheticWeights(c);
  std::printf("%s: weights built in %.1f s\n", name.c_str(), Seconds(t0));
  auto backend = bench.NewBackend();
  if (!backend.ok()) return backend.status();
  t0 = Clock::now();
  auto runner = std::make_unique<worker::ModelRunner>(weights, backend->get());
  if (!runner->init_status().ok()) return runner->init_status();
  s = (*backend)->Synchronize();
  if (!s.ok()) return s;
  std::printf("%s: weights uploaded in %.1f s\n", name.c_str(), Seconds(t0));

  // KV pages: every sequence's prompt plus all the decode steps (sequence
  // 0 runs in every batch size), plus one page per (layer, head).
  const int32_t page_size = 16;
  const int64_t max_len =
      ctx + static_cast<int64_t>(batches.size()) * (warmup + steps);
  int64_t per_page_all_layers = 0;  // one page per (layer, KV head)
  int64_t kv_token_bytes = 0;       // K + V + position, every layer and head
  for (int l = 0; l < layers; ++l) {
    const int64_t row =
        KvRowBytes(DType::kBF16, c.qk_head_dim[l], c.vo_head_dim[l]);
    per_page_all_layers += c.num_kv_heads * page_size * row;
    kv_token_bytes += c.num_kv_heads * row;
  }
  worker::KvCacheOptions ko;
  ko.page_size = page_size;
  ko.dtype = DType::kBF16;
  ko.max_bytes = max_batch * ((max_len + page_size - 1) / page_size + 1) *
                 per_page_all_layers;
  auto kv = worker::CreateKvStorage(*runner, backend->get(), ko);
  if (!kv.ok()) return kv.status();
  worker::KvCache& cache = *kv->cache;
  worker::KvPools& pools = *kv->pools;
  std::vector<worker::SequenceKv> seqs(max_batch);
  std::vector<int64_t> len(max_batch, 0);
  for (auto& sq : seqs) sq.Init(cache);
  auto release = [&] {
    for (auto& sq : seqs) sq.Release(cache);
  };

  // Prefill: one sequence per step, random tokens.
  std::vector<float> logits;
  const std::vector<float> r = RandomF32(int64_t{max_batch} * ctx, 7);
  std::vector<int32_t> prompt(r.size());
  for (size_t i = 0; i < r.size(); ++i)
    prompt[i] = static_cast<int32_t>((r[i] + 1.0f) * 0.5f * (c.vocab_size - 1));
  t0 = Clock::now();
  for (int b = 0; b < max_batch && s.ok(); ++b) {
    s = seqs[b].Reserve(cache, ctx);
    worker::ForwardChunk ch{&seqs[b], prompt.data() + int64_t{b} * ctx, ctx, 0,
                            worker::ForwardChunk::Logits::kNone};
    if (s.ok()) s = runner->Forward({ch}, cache, pools, &logits);
    len[b] = ctx;
  }
  if (!s.ok()) {
    release();
    return s;
  }
  const double prefill_tok_s = double(max_batch) * ctx / Seconds(t0);
  std::printf("%s: prefill %d x %d tokens at %.0f tok/s\n", name.c_str(),
              max_batch, ctx, prefill_tok_s);

  const int64_t weight_step_bytes =
      WeightBytes(c, DType::kBF16) -
      int64_t{c.vocab_size} * c.hidden_size * 2;  // the embedding table
  for (int batch : batches) {
    std::vector<double> step_ms;
    double kv_bytes = 0;  // summed over the timed steps
    for (int step = 0; step < warmup + steps && s.ok(); ++step) {
      std::vector<worker::ForwardChunk> chunks;
      std::vector<int32_t> tokens(batch);
      double step_kv = 0;
      for (int b = 0; b < batch && s.ok(); ++b) {
        s = seqs[b].Reserve(cache, 1);
        tokens[b] = prompt[(b * 131 + len[b]) % prompt.size()];
        chunks.push_back({&seqs[b], &tokens[b], 1, len[b],
                          worker::ForwardChunk::Logits::kLast});
        step_kv += double(len[b] + 1) * kv_token_bytes;
      }
      const Clock::time_point ts = Clock::now();
      if (s.ok()) s = runner->Forward(chunks, cache, pools, &logits);
      const double ms = Seconds(ts) * 1e3;
      for (int b = 0; b < batch; ++b) ++len[b];
      if (step >= warmup) {
        step_ms.push_back(ms);
        kv_bytes += step_kv;
      }
    }
    if (!s.ok()) break;
    std::sort(step_ms.begin(), step_ms.end());
    const double med_ms = step_ms[step_ms.size() / 2];
    const double kv_step = kv_bytes / steps;
    const double bytes =
        weight_step_bytes + kv_step + double(batch) * c.hidden_size * 2;
    const double roofline = batch * bench.hbm_bytes_per_s / bytes;
    const double tok_s = batch / (med_ms * 1e-3);
    nlohmann::json row = {
        {"model", name},
        {"batch", batch},
        {"ctx", kv_step / kv_token_bytes / batch},
        {"step_ms", med_ms},
        {"tok_s", tok_s},
        {"roofline_tok_s", roofline},
        {"pct_roofline", 100.0 * tok_s / roofline},
        {"weight_gb", weight_step_bytes / 1e9},
        {"kv_gb_per_step", kv_step / 1e9},
        {"prefill_tok_s", prefill_tok_s},
        {"logits_finite",
         std::all_of(logits.begin(), logits.end(),
                     [](float x) { return std::isfinite(x); })}};
    std::printf("%s batch %d: %.3f ms/step, %.1f tok/s, %.1f%% of roofline\n",
                name.c_str(), batch, med_ms, tok_s, 100.0 * tok_s / roofline);
    std::fflush(stdout);
    if (!row["logits_finite"].get<bool>()) {
      bench.Error(name, absl::InternalError("non-finite logits"));
    }
    bench.results["decode"].push_back(row);
    if (bench.save) bench.save();
  }
  release();
  return s;
}

}  // namespace

absl::Status RunDecode(GpuBench& bench) {
  for (bool latent : {false, true}) {
    absl::Status s = RunModel(bench, latent);
    if (!s.ok()) {
      bench.Error(latent ? "decode/latent50" : "decode/full", s);
    }
  }
  return absl::OkStatus();
}

}  // namespace latentkv::bench
