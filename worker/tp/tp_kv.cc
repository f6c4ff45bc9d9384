#include "worker/tp/tp_kv.h"

#include "absl/strings/str_cat.h"
#include "latentkv/v1/worker.pb.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

std::string SerializeTpKv(const KvSnapshot& part) {
  pb::TpKv msg;
  msg.set_dtype(std::string(DTypeName(part.dtype)));
  for (const LayerKvShape& s : part.shapes) {
    msg.add_n_kv_heads(s.n_kv_heads);
    msg.add_d_qk(s.d_qk);
    msg.add_d_vo(s.d_vo);
  }
  for (size_t l = 0; l < part.rows.size(); ++l) {
    pb::TpKvLayer* layer = msg.add_layers();
    for (const std::string& r : part.rows[l]) layer->add_head_rows(r);
    if (!part.codebooks.empty()) {
      for (const std::string& b : part.codebooks[l]) {
        layer->add_head_codebooks(b);
      }
    }
    if (!part.windows.empty()) layer->set_window(part.windows[l]);
  }
  return msg.SerializeAsString();
}

std::string SerializeTpKvError(const std::string& error) {
  pb::TpKv msg;
  msg.set_error(error.empty() ? "unknown error" : error);
  return msg.SerializeAsString();
}

absl::StatusOr<KvSnapshot> ParseTpKv(const std::string& bytes,
                                     const std::vector<LayerKvShape>& shapes,
                                     DType dtype) {
  pb::TpKv msg;
  if (!msg.ParseFromString(bytes)) {
    return absl::DataLossError("a rank's KV part does not parse");
  }
  if (!msg.error().empty()) return absl::InternalError(msg.error());
  bool same = msg.dtype() == DTypeName(dtype) &&
              msg.n_kv_heads_size() == static_cast<int>(shapes.size()) &&
              msg.d_qk_size() == msg.n_kv_heads_size() &&
              msg.d_vo_size() == msg.n_kv_heads_size();
  for (size_t l = 0; same && l < shapes.size(); ++l) {
    const int i = static_cast<int>(l);
    same = msg.n_kv_heads(i) == static_cast<uint32_t>(shapes[l].n_kv_heads) &&
           msg.d_qk(i) == static_cast<uint32_t>(shapes[l].d_qk) &&
           msg.d_vo(i) == static_cast<uint32_t>(shapes[l].d_vo);
  }
  if (!same) {
    return absl::FailedPreconditionError(absl::StrCat(
        "KV layout disagreement between the ranks of a group: a part in ",
        msg.dtype(), " over ", msg.n_kv_heads_size(), " layers, expected ",
        std::string(DTypeName(dtype)), " over ", shapes.size(),
        " layers of the same heads and dims"));
  }
  if (msg.layers_size() != static_cast<int>(shapes.size())) {
    return absl::DataLossError(absl::StrCat("a rank's KV part has ",
                                            msg.layers_size(), " layers, not ",
                                            shapes.size()));
  }
  KvSnapshot s;
  s.shapes = shapes;
  s.dtype = dtype;
  s.rows.resize(shapes.size());
  bool codebooks = false, windows = false;
  for (const pb::TpKvLayer& l : msg.layers()) {
    codebooks = codebooks || l.head_codebooks_size() > 0;
    windows = windows || !l.window().empty();
  }
  if (codebooks) s.codebooks.resize(shapes.size());
  if (windows) s.windows.resize(shapes.size());
  for (size_t l = 0; l < shapes.size(); ++l) {
    pb::TpKvLayer* layer = msg.mutable_layers(static_cast<int>(l));
    const int heads = shapes[l].n_kv_heads;
    if (layer->head_rows_size() != heads ||
        (layer->head_codebooks_size() != 0 &&
         layer->head_codebooks_size() != heads)) {
      return absl::DataLossError(absl::StrCat(
          "a rank's KV part has the wrong head count in layer ", l));
    }
    for (std::string& r : *layer->mutable_head_rows()) {
      s.rows[l].push_back(std::move(r));
    }
    if (codebooks) {
      s.codebooks[l].resize(heads);
      for (int h = 0; h < layer->head_codebooks_size(); ++h) {
        s.codebooks[l][h] = std::move(*layer->mutable_head_codebooks(h));
      }
    }
    if (windows) s.windows[l] = std::move(*layer->mutable_window());
  }
  return s;
}

void PullToProto(const KvPull& in, pb::KvPullSpec* out) {
  out->set_transfer_id(in.transfer_id);
  for (const KvPullSource& src : in.sources) {
    pb::KvSourceRank* r = out->add_sources();
    r->set_address(src.address);
    r->set_head_begin(static_cast<uint32_t>(src.head_begin));
    r->set_head_end(static_cast<uint32_t>(src.head_end));
  }
}

KvPull PullFromProto(const pb::KvPullSpec& in) {
  KvPull out;
  out.transfer_id = in.transfer_id();
  for (const pb::KvSourceRank& r : in.sources()) {
    // Bounded by the caller's checks of the ranges (kv_source.h).
    out.sources.push_back({r.address(), static_cast<int32_t>(r.head_begin()),
                           static_cast<int32_t>(r.head_end())});
  }
  return out;
}

}  // namespace latentkv::worker
