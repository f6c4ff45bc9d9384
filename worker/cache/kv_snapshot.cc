#include "worker/cache/kv_snapshot.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

absl::StatusOr<KvSnapshot::CodebookHeader> KvSnapshot::ParseCodebook(
    const std::string& blob, const LayerKvShape& s) {
  CodebookHeader h;
  if (static_cast<int64_t>(blob.size()) < kCodebookHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("codebook blob of ", blob.size(), " bytes has no header"));
  }
  std::memcpy(&h.n_k, blob.data(), 4);
  std::memcpy(&h.n_v, blob.data() + 4, 4);
  std::memcpy(&h.records, blob.data() + 8, 8);
  // Bounded so the size arithmetic below cannot overflow.
  constexpr int64_t kMax = int64_t{1} << 31;
  if (h.n_k < 0 || h.n_v < 0 || h.records < 0 || h.records > kMax) {
    return absl::DataLossError("codebook blob has negative or huge counts");
  }
  const int64_t want = kCodebookHeaderBytes +
                       4 * (int64_t{h.n_k} * s.d_qk + int64_t{h.n_v} * s.d_vo) +
                       kCodebookRecordBytes * h.records;
  if (static_cast<int64_t>(blob.size()) != want) {
    return absl::DataLossError(
        absl::StrCat("codebook blob is ", blob.size(), " bytes; its header (",
                     h.n_k, " K codewords, ", h.n_v, " V codewords, ",
                     h.records, " records) needs ", want));
  }
  return h;
}

bool KvSnapshot::has_codebooks() const {
  for (const auto& layer : codebooks) {
    for (const std::string& b : layer) {
      if (!b.empty()) return true;
    }
  }
  return false;
}

bool KvSnapshot::has_residency_state() const {
  if (has_codebooks()) return true;
  for (const std::string& w : windows) {
    if (!w.empty()) return true;
  }
  return false;
}

int64_t KvSnapshot::tokens(int32_t layer, int32_t head) const {
  int64_t n = static_cast<int64_t>(rows[layer][head].size()) / row_bytes(layer);
  if (layer < static_cast<int32_t>(codebooks.size()) &&
      !codebooks[layer][head].empty()) {
    auto h = ParseCodebook(codebooks[layer][head], shapes[layer]);
    if (h.ok()) n += h->records;
  }
  return n;
}

int64_t KvSnapshot::bytes() const {
  int64_t total = 0;
  for (const auto* part : {&rows, &codebooks}) {
    for (const auto& layer : *part) {
      for (const std::string& r : layer) {
        total += static_cast<int64_t>(r.size());
      }
    }
  }
  for (const std::string& w : windows) total += static_cast<int64_t>(w.size());
  return total;
}

}  // namespace latentkv::worker
