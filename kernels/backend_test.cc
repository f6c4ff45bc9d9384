// The backend seam: selection by name and the CPU backend's ops.
#include "kernels/backend.h"

#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

TEST(BackendTest, CreateByName) {
  auto cpu = CreateBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");

  auto cuda = CreateBackend("cuda");
  EXPECT_TRUE(absl::IsUnavailable(cuda.status())) << cuda.status();
  EXPECT_NE(cuda.status().message().find("LATENTKV_WITH_CUDA"),
            std::string::npos);

  EXPECT_TRUE(absl::IsInvalidArgument(CreateBackend("foo").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(CreateBackend("").status()));
}

TEST(BackendTest, MemoryRoundTrip) {
  auto b = MakeCpuBackend();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{100}, size_t{1} << 20}) {
    void* p = b->Allocate(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    std::vector<uint8_t> in(bytes), out(bytes, 0);
    std::iota(in.begin(), in.end(), uint8_t{3});
    b->CopyIn(p, in.data(), bytes);
    b->Synchronize();
    b->CopyOut(out.data(), p, bytes);
    EXPECT_EQ(in, out);
    b->Free(p);
  }
}

TEST(BackendTest, OpsEqualReferenceOps) {
  auto b = MakeCpuBackend();
  const int64_t n = 3, rows = 33, cols = 40;
  const std::vector<float> x = Random(n * cols, 1);
  const std::vector<float> w = Random(rows * cols, 2);
  std::vector<uint16_t> wb(w.size());
  ConvertFromF32(w.data(), w.size(), DType::kBF16, wb.data());
  for (const WeightView view :
       {WeightView{w.data(), DType::kF32, rows, cols},
        WeightView{wb.data(), DType::kBF16, rows, cols}}) {
    std::vector<float> y1(n * rows), y2(n * rows);
    b->MatMul(x.data(), n, view, y1.data());
    MatMul(x.data(), n, view, y2.data());
    EXPECT_EQ(y1, y2);
  }

  const std::vector<float> nw = Random(cols, 3);
  std::vector<float> r1(n * cols), r2(n * cols);
  b->RmsNorm(x.data(), nw.data(), n, cols, 1e-6f, r1.data());
  RmsNorm(x.data(), nw.data(), n, cols, 1e-6f, r2.data());
  EXPECT_EQ(r1, r2);

  std::vector<float> inv(4);
  RopeInvFreqFrequencyAware(8, 10000.0, inv.data());
  const int32_t pos[3] = {0, 4, 9};
  std::vector<float> q1 = Random(n * 5 * 8, 4), q2 = q1;
  b->ApplyRope(q1.data(), n, 5, 8, pos, inv.data());
  ApplyRope(q2.data(), n, 5, 8, pos, inv.data());
  EXPECT_EQ(q1, q2);

  std::vector<float> s1(x.size()), s2(x.size());
  b->SwiGlu(x.data(), w.data(), x.size(), s1.data());
  SwiGlu(x.data(), w.data(), x.size(), s2.data());
  EXPECT_EQ(s1, s2);

  std::vector<float> a1 = x, a2 = x;
  b->AddInPlace(a1.data(), w.data(), a1.size());
  AddInPlace(a2.data(), w.data(), a2.size());
  EXPECT_EQ(a1, a2);

  const int32_t tokens[2] = {5, 32};
  std::vector<float> e1(2 * cols), e2(2 * cols);
  b->Embed(WeightView{wb.data(), DType::kBF16, rows, cols}, tokens, 2,
           e1.data());
  Embed(WeightView{wb.data(), DType::kBF16, rows, cols}, tokens, 2, e2.data());
  EXPECT_EQ(e1, e2);

  // WriteKv + PagedAttention through the backend vs. directly.
  const int32_t kv = 1, dqk = 4, dvo = 3, ps = 4, toks = 6;
  const std::vector<float> k = Random(toks * dqk, 5), v = Random(toks * dvo, 6);
  std::vector<int32_t> tpos(toks);
  std::iota(tpos.begin(), tpos.end(), 0);
  const std::vector<int64_t> slot = {4, 5, 6, 7, 0, 1};  // pages 1 then 0
  std::vector<float> kp1(8 * dqk), vp1(8 * dvo), kp2(8 * dqk), vp2(8 * dvo);
  std::vector<int32_t> pp1(8), pp2(8);
  b->WriteKv(k.data(), v.data(), tpos.data(), toks, kv, dqk, dvo, slot.data(),
             kp1.data(), vp1.data(), pp1.data());
  WriteKv(k.data(), v.data(), tpos.data(), toks, kv, dqk, dvo, slot.data(),
          kp2.data(), vp2.data(), pp2.data());
  EXPECT_EQ(kp1, kp2);
  EXPECT_EQ(vp1, vp2);
  EXPECT_EQ(pp1, pp2);
  const int32_t q_indptr[2] = {0, 2}, q_pos[2] = {3, 5};
  const int32_t kv_indptr[2] = {0, 2}, kv_indices[2] = {1, 0}, last[1] = {2};
  const std::vector<float> q = Random(2 * 2 * dqk, 7);
  std::vector<float> o1(2 * 2 * dvo), o2(2 * 2 * dvo);
  PagedAttentionArgs args;
  args.num_seqs = 1;
  args.n_heads = 2;
  args.n_kv_heads = kv;
  args.d_qk = dqk;
  args.d_vo = dvo;
  args.page_size = ps;
  args.scale = 0.5f;
  args.q_indptr = q_indptr;
  args.q = q.data();
  args.q_pos = q_pos;
  args.kv_indptr = kv_indptr;
  args.kv_indices = kv_indices;
  args.kv_last_page_len = last;
  args.k_pool = kp1.data();
  args.v_pool = vp1.data();
  args.pos_pool = pp1.data();
  args.out = o1.data();
  b->PagedAttention(args);
  args.out = o2.data();
  PagedAttention(args);
  EXPECT_EQ(o1, o2);
}

}  // namespace
}  // namespace latentkv::kernels
