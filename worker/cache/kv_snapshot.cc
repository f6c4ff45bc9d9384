#include "worker/cache/kv_snapshot.h"

#include <cmath>
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

absl::Status KvSnapshot::CheckRows() const {
  const int64_t elem = DTypeSize(dtype);
  for (size_t l = 0; l < rows.size() && l < shapes.size(); ++l) {
    const int64_t rb = row_bytes(static_cast<int32_t>(l));
    const int64_t values = shapes[l].d_qk + shapes[l].d_vo;
    for (size_t h = 0; h < rows[l].size(); ++h) {
      const std::string& r = rows[l][h];
      if (static_cast<int64_t>(r.size()) % rb != 0) {
        return absl::DataLossError(
            absl::StrCat("KV rows of layer ", l, " head ", h, ": ", r.size(),
                         " bytes are not whole rows of ", rb));
      }
      for (int64_t i = 0; i * rb < static_cast<int64_t>(r.size()); ++i) {
        const char* v = r.data() + i * rb + 4;  // after the position
        for (int64_t j = 0; j < values; ++j) {
          bool finite = true;
          switch (dtype) {
            case DType::kF32: {
              float x;
              std::memcpy(&x, v + j * elem, 4);
              finite = std::isfinite(x);
              break;
            }
            case DType::kBF16:
            case DType::kF16: {
              uint16_t x;
              std::memcpy(&x, v + j * elem, 2);
              // All-ones exponent: inf or NaN.
              finite = dtype == DType::kBF16 ? (x & 0x7f80) != 0x7f80
                                             : (x & 0x7c00) != 0x7c00;
              break;
            }
            case DType::kF8E4M3:
              finite = (static_cast<uint8_t>(v[j]) & 0x7f) != 0x7f;
              break;
            default:
              break;
          }
          if (!finite) {
            return absl::DataLossError(absl::StrCat(
                "KV rows of layer ", l, " head ", h, " row ", i,
                ": a non-finite ", j < shapes[l].d_qk ? "K" : "V", " value"));
          }
        }
      }
    }
  }
  return absl::OkStatus();
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
