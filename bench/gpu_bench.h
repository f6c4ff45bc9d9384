// Shared pieces of bench/gpu_bench (see gpu_bench.cc for what it measures
// and how to run it): the run's context (backend factory, the HBM roofline,
// collected results) and the sections, one per file.
#ifndef LATENTKV_BENCH_GPU_BENCH_H_
#define LATENTKV_BENCH_GPU_BENCH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "nlohmann/json.hpp"

namespace latentkv::bench {

struct GpuBenchOptions {
  std::string backend = "cuda";  // "cpu" only for a smoke run of the logic
  bool small = false;            // tiny shapes (smoke run on a CPU)
  std::string sections = "capacity,attention,decode";
  int decode_layers = 32;  // layers of the Llama-3-8B-shaped decode model
  int decode_ctx = 1024;   // prompt tokens per sequence before decoding
  std::vector<int> decode_batches = {1, 32};
  int decode_steps = 24;  // timed decode steps per batch size
};

// State shared by the sections.
struct GpuBench {
  GpuBenchOptions options;
  // Device memory bandwidth in bytes/s counting bytes read plus written
  // (MeasureCopyBandwidth on CUDA; the CPU's read bandwidth on "cpu").
  double hbm_bytes_per_s = 0;
  int64_t free_bytes = 0;  // device memory free at the start
  nlohmann::json results = nlohmann::json::object();
  // Called after each case so that a killed run keeps what it measured.
  std::function<void()> save;

  // A fresh backend of options.backend (a sticky device error poisons a
  // backend, so a section makes a new one after a failed case).
  absl::StatusOr<std::unique_ptr<kernels::Backend>> NewBackend() const;
  // Appends an error line to results["errors"] and prints it.
  void Error(const std::string& what, const absl::Status& status);
};

// Median time of one call of `fn` in milliseconds: warm-up calls, then
// `reps` repetitions of enough calls to take about 25 ms each, each closed
// by Synchronize(); the first error of the queued work is returned.
absl::StatusOr<double> MedianCallMs(kernels::Backend& backend,
                                    const std::function<void()>& fn,
                                    int reps = 7);

// Random values uniform in [-1, 1) (never all zeros), from `seed`.
std::vector<float> RandomF32(int64_t n, uint64_t seed);

// The Llama-3-8B shape: hidden 4096, FFN 14336, 32 heads, 8 KV heads, vocab
// 128256, rope theta 500000, with `layers` layers and per-layer head dims
// `d_qk` = `d_vo` = `head_dim` (128: full; 64: KV-Latent 50%).
model::ModelConfig Llama3_8BShape(int layers, int head_dim);
// Bytes of the model's weights as the runner holds them: matrices in
// `matrix_dtype`, norms in f32.
int64_t WeightBytes(const model::ModelConfig& c, DType matrix_dtype);

// Sections. Each records its rows in bench.results and its failures with
// bench.Error; a returned error means the section could not run at all.
absl::Status RunCapacity(GpuBench& bench);
absl::Status RunAttention(GpuBench& bench);
absl::Status RunDecode(GpuBench& bench);

}  // namespace latentkv::bench

#endif  // LATENTKV_BENCH_GPU_BENCH_H_
