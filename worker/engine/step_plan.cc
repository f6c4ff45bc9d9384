#include "worker/engine/step_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

absl::Status BuildStepPlan(const std::vector<ForwardChunk>& chunks,
                           const KvCache& cache, int32_t vocab, int64_t context,
                           StepPlan* plan) {
  int64_t T = 0;
  for (const ForwardChunk& ch : chunks) {
    for (int32_t i = 0; i < ch.len; ++i) {
      if (ch.tokens[i] < 0 || ch.tokens[i] >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", ch.tokens[i],
                         " outside the vocabulary [0, ", vocab, ")"));
      }
    }
    if (ch.start + ch.len > context) {
      return absl::InvalidArgumentError(
          absl::StrCat("positions up to ", ch.start + ch.len,
                       " exceed the context of ", context));
    }
    T += ch.len;
  }
  if (T == 0) return absl::InvalidArgumentError("empty batch");
  const int32_t S = static_cast<int32_t>(chunks.size());
  const int32_t L = cache.num_layers();
  const int32_t nkv = L > 0 ? cache.shape(0).n_kv_heads : 0;
  StepPlan& p = *plan;
  p.num_tokens = T;
  p.num_seqs = S;
  p.n_kv_heads = nkv;
  p.max_q_rows = 0;
  p.ints.clear();
  p.slots.assign(static_cast<size_t>(L) * T * nkv, 0);
  p.layers.assign(L, {});

  p.tokens = 0;
  p.positions = T;
  p.q_indptr = 2 * T;
  p.ints.resize(2 * T + S + 1);
  {
    int64_t r = 0;
    p.ints[p.q_indptr] = 0;
    for (int32_t s = 0; s < S; ++s) {
      const ForwardChunk& ch = chunks[s];
      for (int32_t i = 0; i < ch.len; ++i, ++r) {
        p.ints[p.tokens + r] = ch.tokens[i];
        p.ints[p.positions + r] = static_cast<int32_t>(ch.start + i);
      }
      p.ints[p.q_indptr + s + 1] = static_cast<int32_t>(r);
      p.max_q_rows = std::max(p.max_q_rows, ch.len);
    }
  }

  std::vector<int32_t> indptr, indices, last;
  for (int32_t l = 0; l < L; ++l) {
    StepPlan::Layer& pl = p.layers[l];
    pl.slots = int64_t{l} * T * nkv;
    indptr.assign(1, 0);
    indices.clear();
    last.clear();
    int64_t r = 0;
    for (const ForwardChunk& ch : chunks) {
      ch.kv->Append(cache, l, ch.len, p.slots.data() + pl.slots + r * nkv,
                    ch.start);
      if (ch.residency != nullptr && ch.residency->ReadsCodebook(*ch.kv, l)) {
        pl.any_codebook = true;
        for (int32_t h = 0; h < nkv; ++h) {
          indptr.push_back(static_cast<int32_t>(indices.size()));
          last.push_back(0);
        }
      } else {
        ch.kv->Describe(cache, l, &indptr, &indices, &last);
      }
      r += ch.len;
    }
    for (size_t i = 0; i + 1 < indptr.size(); ++i) {
      pl.max_pages = std::max(pl.max_pages, indptr[i + 1] - indptr[i]);
    }
    pl.kv_indptr = static_cast<int64_t>(p.ints.size());
    p.ints.insert(p.ints.end(), indptr.begin(), indptr.end());
    pl.kv_last = static_cast<int64_t>(p.ints.size());
    p.ints.insert(p.ints.end(), last.begin(), last.end());
    pl.kv_indices = static_cast<int64_t>(p.ints.size());
    p.ints.insert(p.ints.end(), indices.begin(), indices.end());
  }

  p.logit_row = static_cast<int64_t>(p.ints.size());
  p.logit_greedy.clear();
  int64_t r = 0;
  for (const ForwardChunk& ch : chunks) {
    if (ch.logits == ForwardChunk::Logits::kLast) {
      p.ints.push_back(static_cast<int32_t>(r + ch.len - 1));
      p.logit_greedy.push_back(ch.greedy);
    } else if (ch.logits == ForwardChunk::Logits::kAll) {
      for (int32_t i = 0; i < ch.len; ++i) {
        p.ints.push_back(static_cast<int32_t>(r + i));
        p.logit_greedy.push_back(ch.greedy);
      }
    }
    r += ch.len;
  }
  p.logit_rows = static_cast<int64_t>(p.ints.size()) - p.logit_row;
  return absl::OkStatus();
}

}  // namespace latentkv::worker
