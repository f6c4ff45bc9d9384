#include "worker/server/kv_transfer.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/auth/cluster_secret.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/worker.grpc.pb.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

pb::KvLayout TransferLayout(const std::vector<LayerKvShape>& shapes,
                            DType dtype, int tp_size) {
  pb::KvLayout l;
  l.set_num_layers(static_cast<uint32_t>(shapes.size()));
  l.set_num_kv_heads(shapes.empty() ? 0 : shapes[0].n_kv_heads);
  for (const LayerKvShape& s : shapes) {
    l.add_d_qk(s.d_qk);
    l.add_d_vo(s.d_vo);
  }
  l.set_dtype(std::string(DTypeName(dtype)));
  l.set_codec(kRowsCodec);
  l.set_tp_size(tp_size);
  return l;
}

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
  if (theirs.dtype() != ours.dtype()) {
    return differ("dtype", theirs.dtype(), ours.dtype());
  }
  if (theirs.codec() != ours.codec()) {
    return differ("codec", theirs.codec(), ours.codec());
  }
  if (theirs.tp_size() != ours.tp_size()) {
    return differ("tp_size (re-sharding is not supported)", theirs.tp_size(),
                  ours.tp_size());
  }
  return absl::OkStatus();
}

absl::StatusOr<RemotePrefill> CallPrefill(const std::string& address,
                                          const pb::PrefillRequest& request,
                                          const pb::KvLayout& ours,
                                          absl::Duration timeout) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  auto stub = pb::Worker::NewStub(grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  auth::AttachClusterSecret(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(timeout));
  auto reader = stub->Prefill(&ctx, request);
  pb::PrefillResponse msg;
  RemotePrefill out;
  auto snap = std::make_shared<KvSnapshot>();
  bool first = true;
  int32_t layers_seen = 0;
  absl::Status bad;
  while (reader->Read(&msg)) {
    if (first) {
      first = false;
      bad = CheckLayout(msg.layout(), ours);
      if (!bad.ok()) {
        ctx.TryCancel();
        break;
      }
      out.first_token = msg.first_token();
      if (msg.finish_reason() == pb::FINISH_REASON_STOP) {
        out.finish = FinishReason::kStop;
      } else if (msg.finish_reason() == pb::FINISH_REASON_LENGTH) {
        out.finish = FinishReason::kLength;
      }
      snap->dtype = ParseDType(ours.dtype()).value_or(DType::kF32);
      for (int l = 0; l < ours.d_qk_size(); ++l) {
        snap->shapes.push_back({static_cast<int32_t>(ours.num_kv_heads()),
                                static_cast<int32_t>(ours.d_qk(l)),
                                static_cast<int32_t>(ours.d_vo(l))});
      }
      snap->rows.resize(snap->shapes.size());
      continue;
    }
    if (msg.layer() != static_cast<uint32_t>(layers_seen) ||
        msg.layer() >= snap->shapes.size() ||
        msg.head_rows_size() != static_cast<int>(ours.num_kv_heads())) {
      bad = absl::DataLossError(absl::StrCat(
          "KV transfer: unexpected message for layer ", msg.layer()));
      ctx.TryCancel();
      break;
    }
    const int64_t rb = snap->row_bytes(msg.layer());
    for (std::string& r : *msg.mutable_head_rows()) {
      if (static_cast<int64_t>(r.size()) % rb != 0) {
        bad = absl::DataLossError(
            absl::StrCat("KV transfer: layer ", msg.layer(), " rows of ",
                         r.size(), " bytes are not whole ", rb, "-byte rows"));
      }
      snap->rows[msg.layer()].push_back(std::move(r));
    }
    if (!msg.window().empty()) {
      snap->windows.resize(snap->shapes.size());
      snap->windows[msg.layer()] = std::move(*msg.mutable_window());
    }
    if (bad.ok() && msg.head_codebooks_size() > 0) {
      if (msg.head_codebooks_size() != static_cast<int>(ours.num_kv_heads())) {
        bad = absl::DataLossError(
            absl::StrCat("KV transfer: layer ", msg.layer(), " has ",
                         msg.head_codebooks_size(), " codebook heads"));
      } else {
        if (snap->codebooks.empty()) {
          snap->codebooks.resize(snap->shapes.size());
          for (size_t l = 0; l < snap->shapes.size(); ++l) {
            snap->codebooks[l].resize(snap->shapes[l].n_kv_heads);
          }
        }
        int32_t h = 0;
        for (std::string& b : *msg.mutable_head_codebooks()) {
          if (!b.empty()) {
            auto parsed =
                KvSnapshot::ParseCodebook(b, snap->shapes[msg.layer()]);
            if (!parsed.ok()) {
              bad = absl::DataLossError(
                  absl::StrCat("KV transfer: layer ", msg.layer(), " head ", h,
                               ": ", parsed.status().message()));
            }
          }
          snap->codebooks[msg.layer()][h++] = std::move(b);
        }
      }
    }
    if (!bad.ok()) {
      ctx.TryCancel();
      break;
    }
    ++layers_seen;
  }
  const grpc::Status st = reader->Finish();
  if (!bad.ok()) return bad;
  if (!st.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(st.error_code()),
        absl::StrCat("prefill worker ", address, ": ", st.error_message()));
  }
  if (first) return absl::DataLossError("KV transfer: empty stream");
  if (out.first_token < 0) return out;  // ended at the first token
  if (layers_seen != static_cast<int32_t>(snap->shapes.size())) {
    return absl::DataLossError(absl::StrCat("KV transfer: ", layers_seen,
                                            " of ", snap->shapes.size(),
                                            " layers arrived"));
  }
  if (absl::Status rows = snap->CheckRows(); !rows.ok()) {
    return absl::DataLossError(
        absl::StrCat("prefill worker ", address, ": ", rows.message()));
  }
  out.kv = std::move(snap);
  return out;
}

}  // namespace latentkv::worker
