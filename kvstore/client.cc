#include "kvstore/client.h"

#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "kvstore/proto_convert.h"

namespace latentkv::kvstore {

namespace pb = ::latentkv::v1;

EventReader::EventReader(
    std::unique_ptr<grpc::ClientContext> ctx,
    std::unique_ptr<grpc::ClientReader<pb::KvEvent>> reader)
    : ctx_(std::move(ctx)), reader_(std::move(reader)) {}

EventReader::~EventReader() {
  if (!finished_) {
    ctx_->TryCancel();
    Finish().IgnoreError();
  }
}

bool EventReader::Next(Event* event) {
  if (finished_) return false;
  pb::KvEvent msg;
  if (!reader_->Read(&msg)) return false;
  *event = FromProto(msg);
  return true;
}

void EventReader::Cancel() { ctx_->TryCancel(); }

absl::Status EventReader::Finish() {
  if (!finished_) {
    pb::KvEvent drain;
    while (reader_->Read(&drain)) {
    }
    status_ = FromGrpcStatus(reader_->Finish());
    finished_ = true;
  }
  return status_;
}

KvStoreClient::KvStoreClient(std::shared_ptr<grpc::Channel> channel,
                             const KvStoreClientOptions& options)
    : stub_(pb::KvStore::NewStub(std::move(channel))), options_(options) {}

std::unique_ptr<KvStoreClient> KvStoreClient::Connect(
    const std::string& address, const KvStoreClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_bytes);
  return std::make_unique<KvStoreClient>(
      auth::NewInternalChannel(address, args), options);
}

void KvStoreClient::SetDeadline(grpc::ClientContext* ctx) const {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  auth::AttachClusterSecret(ctx);
}

absl::StatusOr<PutResult> KvStoreClient::Put(const KvLayout& layout,
                                             absl::Span<const Block> blocks) {
  pb::PutRequest req;
  ToProto(layout, req.mutable_layout());
  req.mutable_blocks()->Reserve(static_cast<int>(blocks.size()));
  for (const Block& b : blocks) ToProto(b, req.add_blocks());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  pb::PutResponse resp;
  if (auto s = stub_->Put(&ctx, req, &resp); !s.ok()) return FromGrpcStatus(s);
  PutResult r;
  r.stored = static_cast<int>(resp.stored());
  r.duplicates = static_cast<int>(resp.duplicates());
  r.pending = static_cast<int>(resp.pending());
  return r;
}

absl::StatusOr<LookupResult> KvStoreClient::Lookup(
    const KvLayout& layout, absl::Span<const BlockKey> keys) {
  pb::LookupRequest req;
  ToProto(layout, req.mutable_layout());
  req.mutable_keys()->Assign(keys.begin(), keys.end());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  pb::LookupResponse resp;
  if (auto s = stub_->Lookup(&ctx, req, &resp); !s.ok()) {
    return FromGrpcStatus(s);
  }
  LookupResult r;
  r.num_hits = static_cast<int>(resp.num_hits());
  r.bytes = static_cast<int64_t>(resp.bytes());
  return r;
}

absl::StatusOr<std::vector<Block>> KvStoreClient::Get(
    const KvLayout& layout, absl::Span<const BlockKey> keys,
    uint32_t head_begin, uint32_t head_end) {
  pb::GetRequest req;
  ToProto(layout, req.mutable_layout());
  req.mutable_keys()->Assign(keys.begin(), keys.end());
  req.set_head_begin(head_begin);
  req.set_head_end(head_end);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto reader = stub_->Get(&ctx, req);
  std::vector<Block> out;
  pb::GetResponse msg;
  while (reader->Read(&msg)) out.push_back(FromProto(msg.block()));
  if (auto s = reader->Finish(); !s.ok()) return FromGrpcStatus(s);
  return out;
}

absl::StatusOr<StoreSnapshot> KvStoreClient::Snapshot() {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  pb::SnapshotResponse resp;
  if (auto s = stub_->Snapshot(&ctx, {}, &resp); !s.ok()) {
    return FromGrpcStatus(s);
  }
  return FromProto(resp);
}

std::unique_ptr<EventReader> KvStoreClient::Subscribe(uint64_t from_seq,
                                                      uint64_t epoch) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  auth::AttachClusterSecret(ctx.get());
  pb::SubscribeRequest req;
  req.set_from_seq(from_seq);
  req.set_epoch(epoch);
  auto reader = stub_->Subscribe(ctx.get(), req);
  return std::make_unique<EventReader>(std::move(ctx), std::move(reader));
}

}  // namespace latentkv::kvstore
