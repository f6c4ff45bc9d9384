#include "kvstore/layout.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace latentkv::kvstore {
namespace {

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid layout: ", what));
}

template <typename T>
absl::Status Mismatch(absl::string_view field, const T& got, const T& want) {
  return absl::FailedPreconditionError(absl::StrCat(
      "layout mismatch: ", field, " is ", got, ", store holds ", want));
}

absl::Status CheckDims(absl::string_view name, const std::vector<uint32_t>& got,
                       const std::vector<uint32_t>& want) {
  if (got.size() != want.size()) {
    return Mismatch(absl::StrCat(name, ".size"), got.size(), want.size());
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return Mismatch(absl::StrCat(name, "[", i, "]"), got[i], want[i]);
    }
  }
  return absl::OkStatus();
}

// `dims` with the empty list spelled out as num_layers zeros.
std::vector<uint32_t> PerLayer(const std::vector<uint32_t>& dims,
                               uint32_t num_layers) {
  return dims.empty() ? std::vector<uint32_t>(num_layers, 0) : dims;
}

}  // namespace

absl::Status ValidateLayout(const KvLayout& l) {
  if (l.num_layers == 0) return Invalid("num_layers must be >= 1");
  if (l.num_kv_heads == 0) return Invalid("num_kv_heads must be >= 1");
  if (l.d_qk.size() != l.num_layers) {
    return Invalid(absl::StrCat("d_qk has ", l.d_qk.size(), " entries, ",
                                l.num_layers, " layers"));
  }
  if (l.d_vo.size() != l.num_layers) {
    return Invalid(absl::StrCat("d_vo has ", l.d_vo.size(), " entries, ",
                                l.num_layers, " layers"));
  }
  for (uint32_t i = 0; i < l.num_layers; ++i) {
    if (l.d_qk[i] == 0) return Invalid(absl::StrCat("d_qk[", i, "] is 0"));
    if (l.d_vo[i] == 0) return Invalid(absl::StrCat("d_vo[", i, "] is 0"));
  }
  if (!l.nope_dims.empty()) {
    if (l.nope_dims.size() != l.num_layers) {
      return Invalid(absl::StrCat("nope_dims has ", l.nope_dims.size(),
                                  " entries, ", l.num_layers, " layers"));
    }
    for (uint32_t i = 0; i < l.num_layers; ++i) {
      if (l.nope_dims[i] > l.d_qk[i]) {
        return Invalid(absl::StrCat("nope_dims[", i, "] ", l.nope_dims[i],
                                    " > d_qk ", l.d_qk[i]));
      }
    }
  }
  if (l.dtype.empty()) return Invalid("dtype is empty");
  if (l.block_tokens == 0) return Invalid("block_tokens must be >= 1");
  if (l.codec.empty()) return Invalid("codec is empty");
  if (l.tp_size == 0) return Invalid("tp_size must be >= 1");
  if (l.tp_rank >= l.tp_size) {
    return Invalid(
        absl::StrCat("tp_rank ", l.tp_rank, " >= tp_size ", l.tp_size));
  }
  return absl::OkStatus();
}

absl::Status CheckSameLayout(const KvLayout& want, const KvLayout& got) {
  if (got.model_id != want.model_id) {
    return Mismatch("model_id", absl::StrCat("\"", got.model_id, "\""),
                    absl::StrCat("\"", want.model_id, "\""));
  }
  if (got.num_layers != want.num_layers) {
    return Mismatch("num_layers", got.num_layers, want.num_layers);
  }
  if (got.num_kv_heads != want.num_kv_heads) {
    return Mismatch("num_kv_heads", got.num_kv_heads, want.num_kv_heads);
  }
  if (auto s = CheckDims("d_qk", got.d_qk, want.d_qk); !s.ok()) return s;
  if (auto s = CheckDims("d_vo", got.d_vo, want.d_vo); !s.ok()) return s;
  if (auto s = CheckDims("nope_dims", PerLayer(got.nope_dims, got.num_layers),
                         PerLayer(want.nope_dims, want.num_layers));
      !s.ok()) {
    return s;
  }
  if (got.dtype != want.dtype) {
    return Mismatch("dtype", absl::StrCat("\"", got.dtype, "\""),
                    absl::StrCat("\"", want.dtype, "\""));
  }
  if (got.block_tokens != want.block_tokens) {
    return Mismatch("block_tokens", got.block_tokens, want.block_tokens);
  }
  if (got.codec != want.codec) {
    return Mismatch("codec", absl::StrCat("\"", got.codec, "\""),
                    absl::StrCat("\"", want.codec, "\""));
  }
  if (got.tp_size != want.tp_size) {
    return Mismatch("tp_size", got.tp_size, want.tp_size);
  }
  if (got.tp_rank != want.tp_rank) {
    return Mismatch("tp_rank", got.tp_rank, want.tp_rank);
  }
  return absl::OkStatus();
}

std::string LayoutDebugString(const KvLayout& l) {
  return absl::StrCat(
      "model_id=", l.model_id, " layers=", l.num_layers,
      " kv_heads=", l.num_kv_heads, " d_qk=[", absl::StrJoin(l.d_qk, ","),
      "] d_vo=[", absl::StrJoin(l.d_vo, ","), "]",
      l.nope_dims.empty()
          ? ""
          : absl::StrCat(" nope_dims=[", absl::StrJoin(l.nope_dims, ","), "]"),
      " dtype=", l.dtype, " block_tokens=", l.block_tokens, " codec=", l.codec,
      " tp=", l.tp_rank, "/", l.tp_size);
}

}  // namespace latentkv::kvstore
