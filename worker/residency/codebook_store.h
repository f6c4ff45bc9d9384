// Codebook-compressed tokens of one (sequence, layer, KV head) -- SpindleKV's
// shallow layers -- stored in pages of that layer's pool, so the KV memory
// bound covers them and freed pages serve other sequences. Host-only: the
// store reads and writes the pool through HostKvPool pointers, so codebook
// layers need the cpu backend and f32 KV (the engine refuses them
// otherwise).
//
// Layout (page_size ps, dims d_qk / d_vo of the layer):
//  - codeword pages: slot i holds K codeword i (unit norm, pre-RoPE) in its K
//    row and V codeword i in its V row; the list covers max(n_k, n_v) slots.
//  - record pages: token j's record is 5 four-byte words (position, k index,
//    k magnitude, v index, v magnitude) at word 5 * (j % R) of record page
//    j / R, words numbered over the page's K region, then its V region, then
//    its position region: R = floor(ps * (d_qk + d_vo + 1) / 5) records per
//    page (stories260K, d = 8, ps = 16: 54 records where 16 tokens fit).
// A token is reconstructed as k = |k| * K_codeword[k index] (then roped at its
// position by the caller) and v = |v| * V_codeword[v index].
//
// Invariants: every record's indices are < the codeword counts; the aux
// pages are exactly ceil(records / R) record pages and ceil(max(n_k, n_v) /
// ps) codeword pages. Thread-safety: not thread-safe (engine thread).
#ifndef LATENTKV_WORKER_RESIDENCY_CODEBOOK_STORE_H_
#define LATENTKV_WORKER_RESIDENCY_CODEBOOK_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/cache/kv_cache.h"
#include "worker/kv/kv_pools.h"

namespace latentkv::worker {

// The store keeps the codeword counts; the pages and the record count live in
// the sequence's SequenceKv::AuxPages of (layer, head), so releasing the
// sequence releases them (then the store must be discarded or reset).
class CodebookStore {
 public:
  using AuxPages = SequenceKv::AuxPages;

  // Adds n tokens: k_pre [n, d_qk] pre-RoPE keys, v [n, d_vo], pos [n]. With
  // `cluster` and an empty store (the prompt), they are clustered greedily
  // (worker/codebook); otherwise each joins its most similar codeword when
  // cos > theta, else becomes a new one. ResourceExhausted, with nothing
  // changed, when the layer's allocator cannot supply the pages.
  absl::Status Add(KvCache& cache, const HostKvPool& hp, AuxPages& a,
                   int32_t layer, const float* k_pre, const float* v,
                   const int32_t* pos, int64_t n, float theta_k, float theta_v,
                   bool cluster);
  // All tokens reconstructed: k_pre [size, d_qk] (not roped), v [size, d_vo],
  // pos [size].
  void Reconstruct(const KvCache& cache, const HostKvPool& hp,
                   const AuxPages& a, int32_t layer, float* k_pre, float* v,
                   int32_t* pos) const;
  // Keeps the records `keep` (strictly ascending indices < size()), drops
  // codewords no kept record uses, and returns the pages no longer needed.
  void Retain(KvCache& cache, const HostKvPool& hp, AuxPages& a, int32_t layer,
              const std::vector<int64_t>& keep);

  // The store as a KvSnapshot codebook blob (worker/cache/kv_snapshot.h);
  // "" when it holds no tokens.
  std::string Export(const KvCache& cache, const HostKvPool& hp,
                     const AuxPages& a, int32_t layer) const;
  // Loads a blob into this empty store (no codewords, `a` without tokens or
  // pages). InvalidArgument for a malformed blob (sizes, an index past the
  // codeword counts, a negative position, a non-finite value);
  // ResourceExhausted when the layer's allocator cannot supply the pages.
  // Nothing changes on error.
  absl::Status Import(KvCache& cache, const HostKvPool& hp, AuxPages& a,
                      int32_t layer, const std::string& blob);

  int32_t num_k_codewords() const { return n_k_; }
  int32_t num_v_codewords() const { return n_v_; }
  // Bytes of codeword and record data (what the pages hold, unrounded).
  int64_t data_bytes(const AuxPages& a, int32_t d_qk, int32_t d_vo) const;

 private:
  struct Record {
    int32_t pos = 0;
    int32_t k_index = 0;
    float k_mag = 0;
    int32_t v_index = 0;
    float v_mag = 0;
  };
  Record ReadRecord(const KvCache& cache, const HostKvPool& hp,
                    const AuxPages& a, int32_t layer, int64_t j) const;
  void WriteRecord(KvCache& cache, const HostKvPool& hp, AuxPages& a,
                   int32_t layer, int64_t j, const Record& r);
  // Grows (or shrinks) the page lists to hold the given counts; false (and
  // nothing changed) when the allocator runs short.
  bool Resize(KvCache& cache, AuxPages& a, int32_t layer, int32_t codewords,
              int64_t records);

  int32_t n_k_ = 0;
  int32_t n_v_ = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_RESIDENCY_CODEBOOK_STORE_H_
