#include "worker/server/kv_transfer.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/proto_convert.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "worker/server/prefix_cache.h"
#include "worker/tp/tp_kv.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

std::vector<LayerKvShape> GroupKvShapes(std::vector<LayerKvShape> rank_shapes,
                                        int tp_size) {
  for (LayerKvShape& s : rank_shapes) s.n_kv_heads *= tp_size;
  return rank_shapes;
}

pb::KvLayout TransferLayout(const std::vector<LayerKvShape>& shapes,
                            DType dtype, int tp_size) {
  pb::KvLayout l;
  kvstore::ToProto(ShapesLayout(shapes), &l);
  l.set_dtype(std::string(DTypeName(dtype)));
  l.set_codec(kRowsCodec);
  l.set_tp_size(tp_size);
  return l;
}

absl::Status DrainPrefillStream(
    grpc::ClientContext& ctx, grpc::ClientReader<pb::PrefillResponse>& reader,
    PrefillAssembler& assembler, const std::string& who,
    const std::function<void(const pb::PrefillResponse&)>& peek) {
  pb::PrefillResponse msg;
  absl::Status bad;
  while (reader.Read(&msg)) {
    if (peek) peek(msg);
    bad = assembler.Add(msg);
    if (!bad.ok()) {
      ctx.TryCancel();
      break;
    }
  }
  const grpc::Status st = reader.Finish();
  if (!bad.ok()) return bad;
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        absl::StrCat(who, ": ", st.error_message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<RemotePrefill> CallPrefill(const std::string& address,
                                          const pb::PrefillRequest& request,
                                          const pb::KvLayout& ours,
                                          absl::Duration timeout) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  auto stub = pb::Worker::NewStub(auth::NewInternalChannel(address, args));
  grpc::ClientContext ctx;
  auth::AttachClusterSecret(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(timeout));
  auto reader = stub->Prefill(&ctx, request);
  PrefillAssembler assembler(ours);
  KvPull pull;
  absl::Status drained =
      DrainPrefillStream(ctx, *reader, assembler, "prefill worker " + address,
                         [&](const pb::PrefillResponse& msg) {
                           if (msg.has_pull() && pull.transfer_id.empty()) {
                             pull = PullFromProto(msg.pull());
                             for (KvPullSource& src : pull.sources) {
                               if (src.address.empty()) src.address = address;
                             }
                           }
                         });
  if (!drained.ok()) return drained;
  RemotePrefill out;
  if (!pull.transfer_id.empty()) {
    out.pull = std::move(pull);
  } else {
    auto kv = assembler.Finish();
    if (!kv.ok()) {
      return absl::Status(kv.status().code(),
                          absl::StrCat("prefill worker ", address, ": ",
                                       kv.status().message()));
    }
    out.kv = *std::move(kv);
  }
  out.first_token = assembler.first_token();
  if (request.sampling().has_logprobs() && out.first_token >= 0) {
    out.first_logprobs = LogprobsFromProto(assembler.first_logprobs());
  }
  if (assembler.finish_reason() == pb::FINISH_REASON_STOP) {
    out.finish = FinishReason::kStop;
  } else if (assembler.finish_reason() == pb::FINISH_REASON_LENGTH) {
    out.finish = FinishReason::kLength;
  }
  return out;
}

void LogprobsToProto(const TokenLogprobs& in,
                     latentkv::v1::TokenLogprobs* out) {
  out->set_logprob(in.logprob);
  for (const auto& [id, lp] : in.top) {
    latentkv::v1::TopLogprob* t = out->add_top();
    t->set_token_id(id);
    t->set_logprob(lp);
  }
}

TokenLogprobs LogprobsFromProto(const latentkv::v1::TokenLogprobs& in) {
  TokenLogprobs out;
  out.logprob = in.logprob();
  for (const latentkv::v1::TopLogprob& t : in.top()) {
    if (out.top.size() >= static_cast<size_t>(kMaxTopLogprobs)) break;
    out.top.emplace_back(t.token_id(), t.logprob());
  }
  return out;
}

}  // namespace latentkv::worker
