#include "worker/server/prefill_assembler.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

absl::Status CheckLayout(const pb::KvLayout& theirs, const pb::KvLayout& ours) {
  auto differ = [](const std::string& field, const auto& a, const auto& b) {
    return absl::FailedPreconditionError(
        absl::StrCat("KV layout mismatch: ", field, " is ", a,
                     " on the prefill worker, ", b, " here"));
  };
  if (theirs.num_layers() != ours.num_layers()) {
    return differ("num_layers", theirs.num_layers(), ours.num_layers());
  }
  if (theirs.num_kv_heads() != ours.num_kv_heads()) {
    return differ("num_kv_heads", theirs.num_kv_heads(), ours.num_kv_heads());
  }
  if (theirs.d_qk_size() != ours.d_qk_size() ||
      theirs.d_vo_size() != ours.d_vo_size()) {
    return differ("per-layer dims", theirs.d_qk_size(), ours.d_qk_size());
  }
  for (int l = 0; l < ours.d_qk_size(); ++l) {
    if (theirs.d_qk(l) != ours.d_qk(l)) {
      return differ(absl::StrCat("d_qk of layer ", l), theirs.d_qk(l),
                    ours.d_qk(l));
    }
    if (theirs.d_vo(l) != ours.d_vo(l)) {
      return differ(absl::StrCat("d_vo of layer ", l), theirs.d_vo(l),
                    ours.d_vo(l));
    }
  }
  // Partial rotary: an absent list means every key channel is rotary.
  for (int l = 0; l < ours.d_qk_size(); ++l) {
    const uint32_t a = l < theirs.nope_dims_size() ? theirs.nope_dims(l) : 0;
    const uint32_t b = l < ours.nope_dims_size() ? ours.nope_dims(l) : 0;
    if (a != b) {
      return differ(
          absl::StrCat("position-free key dims (nope_dims) of layer ", l), a,
          b);
    }
  }
  if (theirs.dtype() != ours.dtype()) {
    return differ("dtype", theirs.dtype(), ours.dtype());
  }
  if (theirs.codec() != ours.codec()) {
    return differ("codec", theirs.codec(), ours.codec());
  }
  return absl::OkStatus();
}

PrefillAssembler::PrefillAssembler(const pb::KvLayout& ours) : ours_(ours) {}

absl::Status PrefillAssembler::Add(pb::PrefillResponse& msg) {
  if (!first_) return AddLayer(msg);
  first_ = false;
  if (absl::Status s = CheckLayout(msg.layout(), ours_); !s.ok()) return s;
  first_token_ = msg.first_token();
  finish_ = msg.finish_reason();
  first_logprobs_ = msg.first_logprobs();
  snap_->dtype = ParseDType(ours_.dtype()).value_or(DType::kF32);
  for (int l = 0; l < ours_.d_qk_size(); ++l) {
    snap_->shapes.push_back(
        {static_cast<int32_t>(ours_.num_kv_heads()),
         static_cast<int32_t>(ours_.d_qk(l)),
         static_cast<int32_t>(ours_.d_vo(l)),
         static_cast<int32_t>(l < ours_.nope_dims_size() ? ours_.nope_dims(l)
                                                         : 0)});
  }
  snap_->rows.resize(snap_->shapes.size());
  return absl::OkStatus();
}

absl::Status PrefillAssembler::AddLayer(pb::PrefillResponse& msg) {
  const uint32_t layer = msg.layer();
  if (layer != static_cast<uint32_t>(layers_seen_) ||
      layer >= snap_->shapes.size() ||
      msg.head_rows_size() != static_cast<int>(ours_.num_kv_heads())) {
    return absl::DataLossError(
        absl::StrCat("KV transfer: unexpected message for layer ", layer));
  }
  const int64_t rb = snap_->row_bytes(layer);
  for (std::string& r : *msg.mutable_head_rows()) {
    if (static_cast<int64_t>(r.size()) % rb != 0) {
      return absl::DataLossError(
          absl::StrCat("KV transfer: layer ", layer, " rows of ", r.size(),
                       " bytes are not whole ", rb, "-byte rows"));
    }
    snap_->rows[layer].push_back(std::move(r));
  }
  if (!msg.window().empty()) {
    snap_->windows.resize(snap_->shapes.size());
    snap_->windows[layer] = std::move(*msg.mutable_window());
  }
  if (msg.head_codebooks_size() > 0) {
    if (msg.head_codebooks_size() != static_cast<int>(ours_.num_kv_heads())) {
      return absl::DataLossError(
          absl::StrCat("KV transfer: layer ", layer, " has ",
                       msg.head_codebooks_size(), " codebook heads"));
    }
    if (snap_->codebooks.empty()) {
      snap_->codebooks.resize(snap_->shapes.size());
      for (size_t l = 0; l < snap_->shapes.size(); ++l) {
        snap_->codebooks[l].resize(snap_->shapes[l].n_kv_heads);
      }
    }
    int32_t h = 0;
    for (std::string& b : *msg.mutable_head_codebooks()) {
      if (!b.empty()) {
        auto parsed = KvSnapshot::ParseCodebook(b, snap_->shapes[layer]);
        if (!parsed.ok()) {
          return absl::DataLossError(absl::StrCat("KV transfer: layer ", layer,
                                                  " head ", h, ": ",
                                                  parsed.status().message()));
        }
      }
      snap_->codebooks[layer][h++] = std::move(b);
    }
  }
  ++layers_seen_;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const KvSnapshot>> PrefillAssembler::Finish() {
  if (first_) return absl::DataLossError("KV transfer: empty stream");
  if (first_token_ < 0) return nullptr;  // ended at the first token
  if (layers_seen_ != static_cast<int32_t>(snap_->shapes.size())) {
    return absl::DataLossError(absl::StrCat("KV transfer: ", layers_seen_,
                                            " of ", snap_->shapes.size(),
                                            " layers arrived"));
  }
  if (absl::Status rows = snap_->CheckRows(); !rows.ok()) {
    return absl::DataLossError(rows.message());
  }
  return std::shared_ptr<const KvSnapshot>(std::move(snap_));
}

}  // namespace latentkv::worker
