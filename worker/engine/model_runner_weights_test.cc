// Weight dtypes a backend has no kernels for (Backend::SupportsWeights):
// the runner converts those matrices (and the embedding table) to f32 at
// load, notes it once on stderr, and its logits still match the float64
// reference; on the CPU backend the same k-quant weights stay quantized.
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/reference_forward_for_tests.h"

namespace latentkv::worker {
namespace {

// A device stand-in: the CPU backend's ops on memory the runner must treat
// as not host-addressable (weights are uploaded with CopyIn), with no kernels
// for the k-quants; records the dtypes MatMul and Embed were handed.
class NoKQuantBackend final : public kernels::Backend {
 public:
  std::string_view name() const override { return "no-kquant"; }
  bool host_addressable() const override { return false; }
  bool SupportsWeights(DType d) const override { return !IsKQuant(d); }
  void* Allocate(size_t bytes) override { return cpu_->Allocate(bytes); }
  void Free(void* p) override { cpu_->Free(p); }
  void CopyIn(void* d, const void* s, size_t n) override {
    cpu_->CopyIn(d, s, n);
  }
  void CopyOut(void* d, const void* s, size_t n) override {
    cpu_->CopyOut(d, s, n);
  }
  void Fill(void* d, uint8_t v, size_t n) override { cpu_->Fill(d, v, n); }
  absl::Status Synchronize() override {
    ++syncs;
    return cpu_->Synchronize();
  }
  std::unique_ptr<kernels::Event> RecordEvent() override {
    return cpu_->RecordEvent();
  }
  void MatMul(const float* x, int64_t n, const kernels::WeightView& w,
              float* y) override {
    if (IsKQuant(w.dtype)) ++unsupported_seen;
    cpu_->MatMul(x, n, w, y);
  }
  void MatMulGroup(const float* x, int64_t n, const kernels::WeightView* ws,
                   float* const* ys, int count) override {
    for (int i = 0; i < count; ++i) {
      if (IsKQuant(ws[i].dtype)) ++unsupported_seen;
    }
    cpu_->MatMulGroup(x, n, ws, ys, count);
  }
  void RmsNorm(const float* x, const float* w, int64_t n, int64_t dim,
               float eps, float* y) override {
    cpu_->RmsNorm(x, w, n, dim, eps, y);
  }
  void MapHeads(const float* x, int64_t n, int64_t heads, int64_t din,
                const float* maps, int64_t dout, float* y) override {
    cpu_->MapHeads(x, n, heads, din, maps, dout, y);
  }
  void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d, int64_t r,
                 const int32_t* pos, const float* inv) override {
    cpu_->ApplyRope(x, n, heads, d, r, pos, inv);
  }
  void SwiGlu(const float* g, const float* u, int64_t n, float* o) override {
    cpu_->SwiGlu(g, u, n, o);
  }
  void GeluTanhGlu(const float* g, const float* u, int64_t n,
                   float* o) override {
    cpu_->GeluTanhGlu(g, u, n, o);
  }
  void AddInPlace(float* y, const float* x, int64_t n) override {
    cpu_->AddInPlace(y, x, n);
  }
  void Scale(float* x, int64_t n, float s) override { cpu_->Scale(x, n, s); }
  void AddRowBias(float* y, const float* b, int64_t n, int64_t dim) override {
    cpu_->AddRowBias(y, b, n, dim);
  }
  void Embed(const kernels::WeightView& t, const int32_t* tokens, int64_t n,
             float* out) override {
    if (IsKQuant(t.dtype)) ++unsupported_seen;
    cpu_->Embed(t, tokens, n, out);
  }
  void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t n,
                  float* out) override {
    cpu_->GatherRows(x, dim, rows, n, out);
  }
  void ArgmaxRows(const float* x, int64_t rows, int64_t cols,
                  int32_t* out) override {
    cpu_->ArgmaxRows(x, rows, cols, out);
  }
  void PagedAttention(const kernels::PagedAttentionArgs& a) override {
    cpu_->PagedAttention(a);
  }
  void WriteKv(const float* k, const float* v, const int32_t* pos, int64_t n,
               const int64_t* slot, const kernels::KvPoolView& p) override {
    cpu_->WriteKv(k, v, pos, n, slot, p);
  }
  void MoveKvSlots(const kernels::KvPoolView& p, const int64_t* src,
                   const int64_t* dst, int64_t n) override {
    cpu_->MoveKvSlots(p, src, dst, n);
  }
  void GatherKvRows(const kernels::KvPoolView& p, const int64_t* slots,
                    int64_t n, void* rows) override {
    cpu_->GatherKvRows(p, slots, n, rows);
  }
  void ScatterKvRows(const kernels::KvPoolView& p, const int64_t* slots,
                     int64_t n, const void* rows) override {
    cpu_->ScatterKvRows(p, slots, n, rows);
  }
  void WindowScores(const kernels::KvPoolView& p, int32_t head,
                    const int64_t* slots, int64_t n, const float* q,
                    const int32_t* q_pos, int64_t n_w, int32_t group,
                    float scale, float* scores, int32_t* k_pos) override {
    cpu_->WindowScores(p, head, slots, n, q, q_pos, n_w, group, scale, scores,
                       k_pos);
  }

  int unsupported_seen = 0;
  int syncs = 0;

 private:
  std::unique_ptr<kernels::Backend> cpu_ = kernels::MakeCpuBackend();
};

// A random model whose every width is whole k-quant super-blocks (hidden
// 256, MLP 512, 4 heads of 64), loaded with its matrices quantized to
// `dtype`, and the same weights dequantized to f32 (the reference's input).
struct Models {
  std::shared_ptr<const model::ModelWeights> quantized, dequantized;
};

model::Tensor Dequantized(const model::Tensor& t) {
  model::Tensor out;
  out.dtype = DType::kF32;
  out.shape = t.shape;
  if (t.data == nullptr) return out;
  out.owned.resize(t.numel() * sizeof(float));
  ConvertToF32(t.data, t.dtype, t.numel(),
               reinterpret_cast<float*>(out.owned.data()));
  out.data = out.owned.data();
  return out;
}

Models MakeModels(DType dtype) {
  model::ModelConfig c;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.vocab_size = 64;
  c.max_position_embeddings = 64;
  c.qk_head_dim = {64, 64};
  c.vo_head_dim = {64, 64};
  std::string dir = "/tmp/latentkv-runner-weights-XXXXXX";
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  EXPECT_TRUE(model::WriteSyntheticModel(c, dir, DType::kF32, 3).ok());
  model::LoadOptions o;
  o.matrix_dtype = dtype;
  auto q = model::LoadModel(dir, o);
  EXPECT_TRUE(q.ok()) << q.status();
  auto f = std::make_shared<model::ModelWeights>();
  const model::ModelWeights& m = **q;
  f->config = m.config;
  f->embed_tokens = Dequantized(m.embed_tokens);
  f->lm_head = Dequantized(m.lm_head);
  f->final_norm = Dequantized(m.final_norm);
  for (const model::LayerWeights& l : m.layers) {
    model::LayerWeights d = l;  // norms, RoPE table: f32 already
    for (auto [from, to] : {std::pair{&l.q_proj, &d.q_proj},
                            {&l.k_proj, &d.k_proj},
                            {&l.v_proj, &d.v_proj},
                            {&l.o_proj, &d.o_proj},
                            {&l.gate_proj, &d.gate_proj},
                            {&l.up_proj, &d.up_proj},
                            {&l.down_proj, &d.down_proj}}) {
      *to = Dequantized(*from);
    }
    for (model::Tensor* t : {&d.attn_norm, &d.ffn_norm}) *t = Dequantized(*t);
    f->layers.push_back(std::move(d));
  }
  std::filesystem::remove_all(dir);
  return {std::shared_ptr<const model::ModelWeights>(std::move(*q)), f};
}

// Greatest |logit - reference| over the largest |reference| of every row of
// a 13-token prefill.
double PrefillError(const Models& m, kernels::Backend* backend) {
  ModelRunner runner(m.quantized, backend);
  EXPECT_TRUE(runner.init_status().ok()) << runner.init_status();
  KvCacheOptions o;
  o.page_size = 4;
  o.max_bytes = 4 << 20;
  KvStorage kv = std::move(*CreateKvStorage(runner, backend, o));
  std::vector<int32_t> tokens(13);
  std::mt19937 rng(5);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 64);
  SequenceKv seq;
  seq.Init(*kv.cache);
  EXPECT_TRUE(seq.Reserve(*kv.cache, 13).ok());
  ForwardChunk ch{&seq, tokens.data(), 13, 0, ForwardChunk::Logits::kAll};
  std::vector<float> logits;
  EXPECT_TRUE(runner.Forward({ch}, *kv.cache, *kv.pools, &logits).ok());
  seq.Release(*kv.cache);
  const std::vector<double> ref = ReferenceLogits(*m.dequantized, tokens);
  double err = 0;
  for (int r = 0; r < 13; ++r) {
    double e = 0, big = 0;
    for (int v = 0; v < 64; ++v) {
      e = std::max(e, std::fabs(logits[r * 64 + v] - ref[r * 64 + v]));
      big = std::max(big, std::fabs(ref[r * 64 + v]));
    }
    err = std::max(err, e / big);
  }
  return err;
}

TEST(ModelRunnerWeightsTest, CpuMultipliesKQuantsAsStored) {
  for (DType d : {DType::kQ4_K, DType::kQ6_K, DType::kQ5_0}) {
    SCOPED_TRACE(std::string(DTypeName(d)));
    const Models m = MakeModels(d);
    EXPECT_EQ(m.quantized->layers[0].down_proj.dtype, d);
    std::unique_ptr<kernels::Backend> cpu = kernels::MakeCpuBackend();
    EXPECT_LT(PrefillError(m, cpu.get()), 1e-4);
  }
}

TEST(ModelRunnerWeightsTest, UnsupportedDTypesAreConvertedToF32AtLoad) {
  const Models m = MakeModels(DType::kQ4_K);
  NoKQuantBackend backend;
  ::testing::internal::CaptureStderr();
  const double err = PrefillError(m, &backend);
  const std::string note = ::testing::internal::GetCapturedStderr();
  EXPECT_LT(err, 1e-4);
  EXPECT_EQ(backend.unsupported_seen, 0);
  EXPECT_GT(backend.syncs, 0);  // uploads finished before buffers went
  // One note: 2 layers x 7 matrices, the LM head and the table.
  EXPECT_NE(note.find("no-kquant backend has no kernels for q4_K weights: "
                      "16 matrices converted to f32"),
            std::string::npos)
      << note;
  EXPECT_EQ(note.find("latentkv:"), note.rfind("latentkv:")) << note;
}

}  // namespace
}  // namespace latentkv::worker
