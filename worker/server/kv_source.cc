#include "worker/server/kv_source.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "worker/cache/kv_snapshot_heads.h"
#include "worker/server/kv_transfer.h"
#include "worker/server/prefill_assembler.h"

namespace latentkv::worker {

namespace pb = ::latentkv::v1;

bool WriteKvLayers(const KvSnapshot& kv,
                   grpc::ServerWriter<pb::PrefillResponse>* writer) {
  for (size_t l = 0; l < kv.rows.size(); ++l) {
    pb::PrefillResponse m;
    m.set_layer(static_cast<uint32_t>(l));
    for (const std::string& r : kv.rows[l]) m.add_head_rows(r);
    if (!kv.codebooks.empty()) {
      for (const std::string& b : kv.codebooks[l]) m.add_head_codebooks(b);
    }
    if (!kv.windows.empty()) m.set_window(kv.windows[l]);
    if (!writer->Write(m)) return false;
  }
  return true;
}

grpc::Status KvSourceService::Pull(
    grpc::ServerContext* ctx, const pb::PullKvRequest* req,
    grpc::ServerWriter<pb::PrefillResponse>* writer) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  if (req->head_begin() >= req->head_end() || req->head_end() > (1u << 20)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "head_begin must be < head_end");
  }
  absl::StatusOr<KvSnapshot> part = parking_->Take(
      req->transfer_id(), static_cast<int32_t>(req->head_begin()),
      static_cast<int32_t>(req->head_end()), options_.wait);
  if (!part.ok()) {
    return grpc::Status(static_cast<grpc::StatusCode>(part.status().code()),
                        std::string(part.status().message()));
  }
  if (part->has_codebooks() && !req->accepts_codebooks()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the parked KV holds codebook entries, which the "
                        "caller does not accept");
  }
  pb::PrefillResponse head;
  *head.mutable_layout() =
      TransferLayout(part->shapes, part->dtype, options_.tp_size);
  head.set_first_token(0);
  if (!writer->Write(head) || !WriteKvLayers(*part, writer)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
  }
  return grpc::Status::OK;
}

namespace {

// One source's heads [begin, end) of transfer `id`, checked against
// `shapes` (those heads' shapes) as a Worker.Prefill stream.
absl::StatusOr<KvSnapshot> PullPart(const std::string& address,
                                    const std::string& id, int32_t begin,
                                    int32_t end,
                                    const std::vector<LayerKvShape>& shapes,
                                    DType dtype, absl::Time deadline) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  auto stub = pb::KvSource::NewStub(auth::NewInternalChannel(address, args));
  grpc::ClientContext ctx;
  auth::AttachClusterSecret(&ctx);
  ctx.set_deadline(absl::ToChronoTime(deadline));
  pb::PullKvRequest req;
  req.set_transfer_id(id);
  req.set_head_begin(static_cast<uint32_t>(begin));
  req.set_head_end(static_cast<uint32_t>(end));
  req.set_accepts_codebooks(true);
  auto reader = stub->Pull(&ctx, req);
  // (CheckLayout ignores TP sizes: the sender's is its own business.)
  PrefillAssembler assembler(TransferLayout(shapes, dtype, 1));
  absl::Status drained = DrainPrefillStream(ctx, *reader, assembler,
                                            "KV source " + address, nullptr);
  if (!drained.ok()) return drained;
  auto kv = assembler.Finish();
  if (!kv.ok()) return kv.status();
  if (*kv == nullptr) {
    return absl::DataLossError(
        absl::StrCat("KV source ", address, " sent no layers"));
  }
  return KvSnapshot(**kv);
}

}  // namespace

absl::StatusOr<KvSnapshot> GrpcKvPuller::Pull(const KvPull& pull,
                                              int64_t* bytes) {
  *bytes = 0;
  const int32_t begin = options_.head_begin, end = options_.head_end;
  // Sources overlapping this rank's heads, in head order; together they
  // must cover [begin, end) exactly once.
  std::vector<KvPullSource> mine;
  for (const KvPullSource& s : pull.sources) {
    if (s.head_begin < 0 || s.head_begin >= s.head_end) {
      return absl::InvalidArgumentError("a KV source holds no heads");
    }
    if (s.head_end > begin && s.head_begin < end) mine.push_back(s);
  }
  std::sort(mine.begin(), mine.end(),
            [](const KvPullSource& a, const KvPullSource& b) {
              return a.head_begin < b.head_begin;
            });
  int32_t next = begin;
  for (const KvPullSource& s : mine) {
    if (s.address.empty() || std::max(s.head_begin, begin) != next) {
      return absl::InvalidArgumentError(
          absl::StrCat("the transfer's sources do not cover KV heads [", begin,
                       ", ", end, ") exactly once"));
    }
    next = std::min(s.head_end, end);
  }
  if (next != end) {
    return absl::InvalidArgumentError(
        absl::StrCat("the transfer's sources do not cover KV heads [", begin,
                     ", ", end, ")"));
  }
  const absl::Time deadline = absl::Now() + options_.timeout;
  std::vector<KvSnapshot> parts;
  for (const KvPullSource& s : mine) {
    const int32_t lo = std::max(s.head_begin, begin);
    const int32_t hi = std::min(s.head_end, end);
    std::vector<LayerKvShape> shapes = options_.group_shapes;
    for (LayerKvShape& sh : shapes) sh.n_kv_heads = hi - lo;
    auto part = PullPart(s.address, pull.transfer_id, lo, hi, shapes,
                         options_.dtype, deadline);
    if (!part.ok()) return part.status();
    *bytes += part->bytes();
    parts.push_back(*std::move(part));
  }
  if (parts.size() == 1) return std::move(parts[0]);
  return JoinHeads(parts, options_.q_per_kv);
}

}  // namespace latentkv::worker
