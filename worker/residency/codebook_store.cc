#include "worker/residency/codebook_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/codebook/codebook.h"

namespace latentkv::worker {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t RecordsPerPage(const KvCache& c, int32_t layer) {
  const LayerKvShape& s = c.shape(layer);
  return int64_t{c.page_size()} * (s.d_qk + s.d_vo + 1) / 5;
}

// Pool slot (page * page_size + offset) of codeword i, K or V.
int64_t CodewordSlot(const SequenceKv::AuxPages& a, int64_t i, int64_t ps) {
  return int64_t{a.codewords[i / ps]} * ps + i % ps;
}

// Address of 4-byte word w of `page`: K region, then V region, then the
// position region.
void* Word(const KvCache& c, const HostKvPool& hp, int32_t layer, int32_t page,
           int64_t w) {
  const LayerKvShape& s = c.shape(layer);
  const int64_t ps = c.page_size();
  const int64_t kw = ps * s.d_qk, vw = ps * s.d_vo;
  if (w < kw) return hp.k + int64_t{page} * kw + w;
  if (w < kw + vw) return hp.v + int64_t{page} * vw + (w - kw);
  return hp.pos + int64_t{page} * ps + (w - kw - vw);
}

// Assigns each of n rows x [n, d] to a codeword, appending new codewords to
// `fresh` (unit rows) after the `existing` ones [n_existing, d]: the prompt
// (cluster) goes through greedy highest-degree clustering, other tokens join
// their most similar codeword when cos > theta.
void Assign(const float* x, int64_t n, int32_t d, float theta, bool cluster,
            const float* existing, int32_t n_existing,
            std::vector<float>* fresh, std::vector<int32_t>* index,
            std::vector<float>* mag) {
  index->resize(n);
  mag->resize(n);
  if (cluster && n_existing == 0) {
    Codebook cb = Codebook::Build(x, n, d, theta, index, mag);
    fresh->assign(cb.codewords().begin(), cb.codewords().end());
    return;
  }
  std::vector<float> u(d);
  for (int64_t t = 0; t < n; ++t) {
    const float* r = x + t * d;
    double norm = 0;
    for (int32_t i = 0; i < d; ++i) norm += double{r[i]} * r[i];
    const float m = static_cast<float>(std::sqrt(norm));
    (*mag)[t] = m;
    const int32_t n_fresh = static_cast<int32_t>(fresh->size() / d);
    if (m == 0.0f && n_existing + n_fresh > 0) {
      (*index)[t] = 0;  // any codeword reconstructs zero
      continue;
    }
    for (int32_t i = 0; i < d; ++i) u[i] = m > 0 ? r[i] / m : (i == 0);
    float best = -2.0f;
    int32_t best_i = -1;
    for (int32_t c = 0; c < n_existing + n_fresh; ++c) {
      const float* cw = c < n_existing
                            ? existing + int64_t{c} * d
                            : fresh->data() + int64_t{c - n_existing} * d;
      float dot = 0;
      for (int32_t i = 0; i < d; ++i) dot += u[i] * cw[i];
      if (dot > best) {
        best = dot;
        best_i = c;
      }
    }
    if (best_i >= 0 && best > theta) {
      (*index)[t] = best_i;
    } else {
      (*index)[t] = n_existing + n_fresh;
      fresh->insert(fresh->end(), u.begin(), u.end());
    }
  }
}

}  // namespace

CodebookStore::Record CodebookStore::ReadRecord(const KvCache& c,
                                                const HostKvPool& hp,
                                                const AuxPages& a,
                                                int32_t layer,
                                                int64_t j) const {
  const int64_t per = RecordsPerPage(c, layer);
  const int32_t page = a.records[j / per];
  const int64_t w0 = 5 * (j % per);
  Record r;
  std::memcpy(&r.pos, Word(c, hp, layer, page, w0), 4);
  std::memcpy(&r.k_index, Word(c, hp, layer, page, w0 + 1), 4);
  std::memcpy(&r.k_mag, Word(c, hp, layer, page, w0 + 2), 4);
  std::memcpy(&r.v_index, Word(c, hp, layer, page, w0 + 3), 4);
  std::memcpy(&r.v_mag, Word(c, hp, layer, page, w0 + 4), 4);
  return r;
}

void CodebookStore::WriteRecord(KvCache& c, const HostKvPool& hp, AuxPages& a,
                                int32_t layer, int64_t j, const Record& r) {
  const int64_t per = RecordsPerPage(c, layer);
  const int32_t page = a.records[j / per];
  const int64_t w0 = 5 * (j % per);
  std::memcpy(Word(c, hp, layer, page, w0), &r.pos, 4);
  std::memcpy(Word(c, hp, layer, page, w0 + 1), &r.k_index, 4);
  std::memcpy(Word(c, hp, layer, page, w0 + 2), &r.k_mag, 4);
  std::memcpy(Word(c, hp, layer, page, w0 + 3), &r.v_index, 4);
  std::memcpy(Word(c, hp, layer, page, w0 + 4), &r.v_mag, 4);
}

bool CodebookStore::Resize(KvCache& c, AuxPages& a, int32_t layer,
                           int32_t codewords, int64_t records) {
  const int64_t want_cw = CeilDiv(codewords, c.page_size());
  const int64_t want_rec = CeilDiv(records, RecordsPerPage(c, layer));
  BlockAllocator& alloc = c.allocator(layer);
  const int64_t more =
      std::max<int64_t>(0, want_cw - static_cast<int64_t>(a.codewords.size())) +
      std::max<int64_t>(0, want_rec - static_cast<int64_t>(a.records.size()));
  if (more > alloc.num_free()) return false;
  auto fit = [&](std::vector<int32_t>& pages, int64_t want) {
    while (static_cast<int64_t>(pages.size()) < want) {
      pages.push_back(*alloc.Allocate());
    }
    while (static_cast<int64_t>(pages.size()) > want) {
      alloc.Unref(pages.back());
      pages.pop_back();
    }
  };
  fit(a.codewords, want_cw);
  fit(a.records, want_rec);
  return true;
}

absl::Status CodebookStore::Add(KvCache& c, const HostKvPool& hp, AuxPages& a,
                                int32_t layer, const float* k_pre,
                                const float* v, const int32_t* pos, int64_t n,
                                float theta_k, float theta_v, bool cluster) {
  if (n <= 0) return absl::OkStatus();
  const LayerKvShape& s = c.shape(layer);
  const int64_t ps = c.page_size();
  // Existing codewords, gathered from the pages.
  std::vector<float> old_k(int64_t{n_k_} * s.d_qk),
      old_v(int64_t{n_v_} * s.d_vo);
  for (int32_t i = 0; i < std::max(n_k_, n_v_); ++i) {
    const int64_t flat = CodewordSlot(a, i, ps);
    if (i < n_k_) {
      std::copy_n(hp.k + flat * s.d_qk, s.d_qk,
                  old_k.data() + int64_t{i} * s.d_qk);
    }
    if (i < n_v_) {
      std::copy_n(hp.v + flat * s.d_vo, s.d_vo,
                  old_v.data() + int64_t{i} * s.d_vo);
    }
  }
  std::vector<float> new_k, new_v, k_mag, v_mag;
  std::vector<int32_t> k_idx, v_idx;
  const bool first = cluster && a.tokens == 0;
  Assign(k_pre, n, s.d_qk, theta_k, first, old_k.data(), n_k_, &new_k, &k_idx,
         &k_mag);
  Assign(v, n, s.d_vo, theta_v, first, old_v.data(), n_v_, &new_v, &v_idx,
         &v_mag);
  const int32_t add_k = static_cast<int32_t>(new_k.size() / s.d_qk);
  const int32_t add_v = static_cast<int32_t>(new_v.size() / s.d_vo);
  const int32_t cw = std::max(n_k_ + add_k, n_v_ + add_v);
  if (!Resize(c, a, layer, cw, a.tokens + n)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no free pages in layer ", layer, " for codebook entries"));
  }
  for (int32_t i = 0; i < add_k; ++i) {
    const int32_t slot = n_k_ + i;
    const int64_t flat = CodewordSlot(a, slot, ps);
    std::copy_n(new_k.data() + int64_t{i} * s.d_qk, s.d_qk,
                hp.k + flat * s.d_qk);
  }
  for (int32_t i = 0; i < add_v; ++i) {
    const int32_t slot = n_v_ + i;
    const int64_t flat = CodewordSlot(a, slot, ps);
    std::copy_n(new_v.data() + int64_t{i} * s.d_vo, s.d_vo,
                hp.v + flat * s.d_vo);
  }
  n_k_ += add_k;
  n_v_ += add_v;
  for (int64_t t = 0; t < n; ++t) {
    WriteRecord(c, hp, a, layer, a.tokens + t,
                {pos[t], k_idx[t], k_mag[t], v_idx[t], v_mag[t]});
  }
  a.tokens += n;
  return absl::OkStatus();
}

void CodebookStore::Reconstruct(const KvCache& c, const HostKvPool& hp,
                                const AuxPages& a, int32_t layer, float* k_pre,
                                float* v, int32_t* pos) const {
  const LayerKvShape& s = c.shape(layer);
  const int64_t ps = c.page_size();
  for (int64_t j = 0; j < a.tokens; ++j) {
    const Record r = ReadRecord(c, hp, a, layer, j);
    const int64_t kf = CodewordSlot(a, r.k_index, ps);
    const int64_t vf = CodewordSlot(a, r.v_index, ps);
    const float* kc = hp.k + kf * s.d_qk;
    const float* vc = hp.v + vf * s.d_vo;
    for (int32_t i = 0; i < s.d_qk; ++i)
      k_pre[j * s.d_qk + i] = r.k_mag * kc[i];
    for (int32_t i = 0; i < s.d_vo; ++i) v[j * s.d_vo + i] = r.v_mag * vc[i];
    pos[j] = r.pos;
  }
}

void CodebookStore::Retain(KvCache& c, const HostKvPool& hp, AuxPages& a,
                           int32_t layer, const std::vector<int64_t>& keep) {
  const LayerKvShape& s = c.shape(layer);
  const int64_t ps = c.page_size();
  std::vector<Record> kept;
  kept.reserve(keep.size());
  for (int64_t j : keep) kept.push_back(ReadRecord(c, hp, a, layer, j));
  // Renumber the codewords still used, in order, moving their rows forward.
  std::vector<int32_t> k_map(n_k_, -1), v_map(n_v_, -1);
  for (const Record& r : kept) {
    k_map[r.k_index] = 0;
    v_map[r.v_index] = 0;
  }
  auto compact = [&](std::vector<int32_t>& map, float* pool, int32_t d) {
    int32_t next = 0;
    for (int32_t i = 0; i < static_cast<int32_t>(map.size()); ++i) {
      if (map[i] < 0) continue;
      if (next != i) {
        const int64_t src = CodewordSlot(a, i, ps);
        const int64_t dst = CodewordSlot(a, next, ps);
        std::copy_n(pool + src * d, d, pool + dst * d);
      }
      map[i] = next++;
    }
    return next;
  };
  n_k_ = compact(k_map, hp.k, s.d_qk);
  n_v_ = compact(v_map, hp.v, s.d_vo);
  for (size_t j = 0; j < kept.size(); ++j) {
    Record r = kept[j];
    r.k_index = k_map[r.k_index];
    r.v_index = v_map[r.v_index];
    WriteRecord(c, hp, a, layer, static_cast<int64_t>(j), r);
  }
  a.tokens = static_cast<int64_t>(kept.size());
  Resize(c, a, layer, std::max(n_k_, n_v_), a.tokens);  // only shrinks
}

std::string CodebookStore::Export(const KvCache& c, const HostKvPool& hp,
                                  const AuxPages& a, int32_t layer) const {
  if (a.tokens == 0) return "";
  const LayerKvShape& s = c.shape(layer);
  const int64_t ps = c.page_size();
  std::string out;
  out.reserve(KvSnapshot::kCodebookHeaderBytes +
              4 * (int64_t{n_k_} * s.d_qk + int64_t{n_v_} * s.d_vo) +
              KvSnapshot::kCodebookRecordBytes * a.tokens);
  auto put = [&out](const void* p, size_t n) {
    out.append(static_cast<const char*>(p), n);
  };
  put(&n_k_, 4);
  put(&n_v_, 4);
  put(&a.tokens, 8);
  for (int32_t i = 0; i < n_k_; ++i) {
    const int64_t flat = CodewordSlot(a, i, ps);
    put(hp.k + flat * s.d_qk, 4 * size_t(s.d_qk));
  }
  for (int32_t i = 0; i < n_v_; ++i) {
    const int64_t flat = CodewordSlot(a, i, ps);
    put(hp.v + flat * s.d_vo, 4 * size_t(s.d_vo));
  }
  for (int64_t j = 0; j < a.tokens; ++j) {
    const Record r = ReadRecord(c, hp, a, layer, j);
    put(&r.pos, 4);
    put(&r.k_index, 4);
    put(&r.k_mag, 4);
    put(&r.v_index, 4);
    put(&r.v_mag, 4);
  }
  return out;
}

absl::Status CodebookStore::Import(KvCache& c, const HostKvPool& hp,
                                   AuxPages& a, int32_t layer,
                                   const std::string& blob) {
  if (n_k_ != 0 || n_v_ != 0 || a.tokens != 0 || !a.codewords.empty() ||
      !a.records.empty()) {
    return absl::FailedPreconditionError("codebook import into a used store");
  }
  const LayerKvShape& s = c.shape(layer);
  auto h = KvSnapshot::ParseCodebook(blob, s);
  if (!h.ok()) return absl::InvalidArgumentError(h.status().message());
  const char* p = blob.data() + KvSnapshot::kCodebookHeaderBytes;
  const float* k_cw = reinterpret_cast<const float*>(p);
  const int64_t k_vals = int64_t{h->n_k} * s.d_qk;
  const int64_t v_vals = int64_t{h->n_v} * s.d_vo;
  std::vector<float> cw(k_vals + v_vals);
  if (!cw.empty()) std::memcpy(cw.data(), k_cw, 4 * cw.size());
  for (float f : cw) {
    if (!std::isfinite(f)) {
      return absl::InvalidArgumentError("codebook blob: non-finite codeword");
    }
  }
  std::vector<Record> recs(h->records);
  p += 4 * cw.size();
  for (Record& r : recs) {
    std::memcpy(&r.pos, p, 4);
    std::memcpy(&r.k_index, p + 4, 4);
    std::memcpy(&r.k_mag, p + 8, 4);
    std::memcpy(&r.v_index, p + 12, 4);
    std::memcpy(&r.v_mag, p + 16, 4);
    p += KvSnapshot::kCodebookRecordBytes;
    if (r.pos < 0 || r.k_index < 0 || r.k_index >= h->n_k || r.v_index < 0 ||
        r.v_index >= h->n_v || !std::isfinite(r.k_mag) ||
        !std::isfinite(r.v_mag)) {
      return absl::InvalidArgumentError(
          absl::StrCat("codebook blob: record at position ", r.pos,
                       " is out of range (K index ", r.k_index, " of ", h->n_k,
                       ", V index ", r.v_index, " of ", h->n_v, ")"));
    }
  }
  if (!Resize(c, a, layer, std::max(h->n_k, h->n_v), h->records)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no free pages in layer ", layer, " for imported codebook entries"));
  }
  const int64_t ps = c.page_size();
  for (int32_t i = 0; i < h->n_k; ++i) {
    const int64_t flat = CodewordSlot(a, i, ps);
    std::copy_n(cw.data() + int64_t{i} * s.d_qk, s.d_qk, hp.k + flat * s.d_qk);
  }
  for (int32_t i = 0; i < h->n_v; ++i) {
    const int64_t flat = CodewordSlot(a, i, ps);
    std::copy_n(cw.data() + k_vals + int64_t{i} * s.d_vo, s.d_vo,
                hp.v + flat * s.d_vo);
  }
  for (int64_t j = 0; j < h->records; ++j)
    WriteRecord(c, hp, a, layer, j, recs[j]);
  n_k_ = h->n_k;
  n_v_ = h->n_v;
  a.tokens = h->records;
  return absl::OkStatus();
}

int64_t CodebookStore::data_bytes(const AuxPages& a, int32_t d_qk,
                                  int32_t d_vo) const {
  return a.tokens * 16 + (int64_t{n_k_} * d_qk + int64_t{n_v_} * d_vo) * 4;
}

}  // namespace latentkv::worker
