// Runs the Llama-family forward pass over a batch of sequence chunks against
// the paged latent KV cache, on a kernels::Backend.
//
// Per layer l (hidden H, heads nh, kv heads nkv, latent dims dqk(l), dvo(l)):
//   h = RmsNorm(x); q = h Wq^T [T, nh*dqk]; k = h Wk^T [T, nkv*dqk];
//   v = h Wv^T [T, nkv*dvo]; RoPE(q, k) with the layer's inv_freq table;
//   K/V written to the chunk's slots; attention over each sequence's pages
//   (scale 1/sqrt(dqk)) -> [T, nh*dvo]; x += o Wo^T;
//   x += Wdown (silu(RmsNorm(x) Wgate^T) * (RmsNorm(x) Wup^T)).
// Logits come from the final RmsNorm and the LM head, for the rows asked.
//
// Per step: the host builds a StepPlan (step_plan.h: tokens, positions,
// every layer's slots and page tables, the logit rows) and uploads it once;
// every op then runs on the backend against it. Weights live in backend
// memory (the loaded tensors when the backend is host-addressable, else a
// copy uploaded once here; quantized blocks as stored, packed panels where
// the backend prefers them, f32 conversions of the matrices whose dtype the
// backend has no kernels for (Backend::SupportsWeights: the CUDA backend and
// the q5 / k-quant dtypes), noted once on stderr); activations live in a
// backend workspace grown
// to the largest batch; only the logit rows come back to the host. Host
// work between layers is limited to residency policies (their window
// queries are copied out on a device backend) and codebook layers (host
// only).
// Thread-safety: one caller at a time (the engine thread).
#ifndef LATENTKV_WORKER_ENGINE_MODEL_RUNNER_H_
#define LATENTKV_WORKER_ENGINE_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/weights.h"
#include "worker/cache/kv_cache.h"
#include "worker/comm/communicator.h"
#include "worker/engine/step_plan.h"
#include "worker/kv/kv_pools.h"
#include "worker/residency/sequence_residency.h"

namespace latentkv::worker {

using ::latentkv::comm::Communicator;

// KV shape of every layer of `config` as its pools hold it:
// {num_kv_heads, qk_head_dim[l], vo_head_dim[l]} (a tensor-parallel shard's
// config already has its share of the heads).
std::vector<LayerKvShape> KvShapesOf(const model::ModelConfig& config);

class ModelRunner {
 public:
  // The runner shares the weights; `backend` must outlive it. With a
  // communicator of size > 1 the weights are this rank's tensor-parallel
  // shard (model/shard.h) and the partial outputs of o_proj and down_proj
  // are all-reduced over `comm` (not owned; every rank runs the same
  // Forward calls in the same order).
  // With `pack_weights`, when the backend prefers panels
  // (Backend::PrefersPanels), the runner packs a copy of every layer matrix
  // and of the LM head once, here, and multiplies those: the weights' bytes
  // again in backend memory (the loaded tensors stay as they are;
  // memory-mapped ones are page cache).
  ModelRunner(std::shared_ptr<const model::ModelWeights> weights,
              kernels::Backend* backend, Communicator* comm = nullptr,
              bool pack_weights = true);
  ~ModelRunner();
  // OK unless uploading the weights to the backend failed (then every
  // Forward returns this error too).
  const absl::Status& init_status() const { return init_status_; }
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  const model::ModelConfig& config() const { return weights_->config; }
  // KV shapes of every layer, for building the KvCache.
  std::vector<LayerKvShape> KvShapes() const;

  // fp8 KV scales from the weights: for KV head h of layer l, a bound on
  // |k| and |v| over every possible input, over 448 (fp8's largest finite).
  // The attention input is RmsNorm(x) * g, whose f32 norm is at most
  // sqrt(hidden), so |k_j| <= sqrt(hidden) * ||W_k[j] * g||_2 (Cauchy-
  // Schwarz); RoPE rotates channel pairs (j, j + d/2), so a roped key's
  // channel is bounded by the pair's bounds' root sum of squares. Static
  // (no calibration data), never saturates, equal on every process that
  // loads the same weights (so fp8 rows move between them as they are).
  // A loose bound costs little: e4m3 keeps 3 mantissa bits over the 15
  // binades below its maximum.
  KvScales Fp8KvScales() const;

  // Runs the chunks as one batch. `logits` receives the requested rows in
  // chunk order, [rows, vocab]. With `argmax`, it also receives every
  // row's greedy token [rows] (kernels/ops.h ArgmaxRows, computed on the
  // backend), and the rows of `greedy` chunks are not copied into `logits`
  // (left as they were: a device backend moves 4 bytes per greedy row
  // instead of the vocabulary's floats). The chunks' tokens must lie in
  // [0, vocab) (checked: InvalidArgument) and positions below the context.
  // K/V go to `pools` (the pools of `cache`'s pages). With `hidden`, it
  // receives every row of the `hidden` chunks, in chunk order, after the
  // final RMSNorm: [rows, hidden_size].
  absl::Status Forward(const std::vector<ForwardChunk>& chunks, KvCache& cache,
                       KvPools& pools, std::vector<float>* logits,
                       std::vector<int32_t>* argmax = nullptr,
                       std::vector<float>* hidden = nullptr);

 private:
  // Grows the workspace to `rows` batch rows; ResourceExhausted when the
  // backend has no memory for it.
  absl::Status EnsureCapacity(int64_t rows);
  // Attention of the chunks that read codebooks in `layer`, over their
  // reconstructed tokens (AttentionScratch); writes their rows of attn_.
  // Host only (codebook layers need a host-addressable backend).
  absl::Status CodebookAttention(const std::vector<ForwardChunk>& chunks,
                                 const KvCache& cache, KvPools& pools,
                                 int32_t layer,
                                 const kernels::PagedAttentionArgs& main);
  // `layer`'s RoPE table in host memory (what residency policies read).
  kernels::RopeTable HostRope(int32_t layer) const {
    return {weights_->layers[layer].rope_inv_freq.data(),
            config().rope_dim(layer)};
  }
  // Hands each chunk with a residency policy its queries of `layer`.
  absl::Status RunResidency(const std::vector<ForwardChunk>& chunks,
                            KvCache& cache, KvPools& pools, int32_t layer);

  // The matrix of `t` as the backend multiplies it: a view of the tensor
  // (or of its uploaded copy), or, with `pack`, a packed copy (see the
  // constructor).
  kernels::WeightView Matrix(const model::Tensor& t, bool pack);
  // A view of `t` in a dtype the backend multiplies: `t` itself, or, when
  // Backend::SupportsWeights refuses its dtype, an f32 conversion held in
  // *f32 (counted for the one-line note the constructor prints).
  kernels::WeightView Readable(const model::Tensor& t, std::vector<float>* f32);
  // After a Readable conversion was uploaded or packed: keeps `f32` when the
  // backend reads host memory in place (converted_), else waits for the
  // upload and frees it.
  void KeepOrRelease(std::vector<float> f32);
  // `bytes` at `data` in backend memory: `data` itself on a host-addressable
  // backend, else a copy uploaded once (owned by uploads_).
  const void* Upload(const void* data, size_t bytes);

  std::shared_ptr<const model::ModelWeights> weights_;
  kernels::Backend* backend_;
  Communicator* comm_;  // null or size 1: no tensor parallelism
  absl::Status init_status_;
  // The matrices Forward multiplies, per layer, and the LM head.
  struct LayerMatrices {
    kernels::WeightView q, k, v, o, gate, up, down;
  };
  std::vector<LayerMatrices> matrices_;
  kernels::WeightView lm_head_, embed_;
  // Per layer: norm weights [hidden] and the RoPE table [rope_dims / 2], in
  // backend memory.
  struct LayerVectors {
    const float* attn_norm = nullptr;
    const float* ffn_norm = nullptr;
    const float* inv_freq = nullptr;
    // Null when the config's feature is off (model/config.h).
    const float* q_norm = nullptr;
    const float* k_norm = nullptr;
    // [heads * d_qk, qk_norm_dim]: the maps after the q/k norms.
    const float* q_latent = nullptr;
    const float* k_latent = nullptr;
    const float* post_attn_norm = nullptr;
    const float* post_ffn_norm = nullptr;
    const float* q_bias = nullptr;
    const float* k_bias = nullptr;
    const float* v_bias = nullptr;
  };
  std::vector<LayerVectors> vectors_;
  const float* final_norm_ = nullptr;
  std::vector<kernels::DeviceBuffer> uploads_;  // weights copies, panels
  // f32 conversions of matrices the backend has no kernels for, when it
  // reads them in place; what was converted (Readable).
  std::vector<std::vector<float>> converted_;
  std::set<std::string> converted_dtypes_;
  int converted_matrices_ = 0;
  int64_t converted_bytes_ = 0;
  // The step's plan (host) and its uploaded copy.
  StepPlan plan_;
  kernels::DeviceBuffer plan_ints_, plan_slots_;
  // Activation workspace, grown to the largest batch seen.
  int64_t capacity_rows_ = 0;
  kernels::DeviceBuffer x_, h_, q_, k_, v_, attn_, gate_, up_, logits_, argmax_;
  // The q/k heads as projected and normed before their maps
  // (ModelConfig::qk_norm_dim); empty without maps.
  kernels::DeviceBuffer q_src_, k_src_;
  // Host copies of one chunk's queries for residency on a device backend.
  std::vector<float> host_q_;
  // Codebook attention scratch (host memory; see CodebookAttention).
  AttentionScratch scratch_;
  std::vector<float> cb_q_, cb_out_;
  std::vector<int32_t> cb_pos_, cb_q_indptr_, cb_kv_indptr_, cb_kv_indices_,
      cb_kv_last_;
};

// A KV cache for `runner`'s model: the page table with `options` and its
// pools in `backend` memory (fp8 scales from runner.Fp8KvScales() when the
// dtype is fp8).
struct KvStorage {
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<KvPools> pools;
};
absl::StatusOr<KvStorage> CreateKvStorage(const ModelRunner& runner,
                                          kernels::Backend* backend,
                                          const KvCacheOptions& options);

// The matrix view of a weight tensor.
kernels::WeightView View(const model::Tensor& t);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_MODEL_RUNNER_H_
