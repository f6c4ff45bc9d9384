#include "kvstore/kvstore_service.h"

#include <algorithm>
#include <vector>

#include "common/auth/cluster_secret.h"
#include "kvstore/proto_convert.h"

namespace latentkv::kvstore {

namespace pb = ::latentkv::v1;

grpc::Status KvStoreService::Put(grpc::ServerContext* ctx,
                                 const pb::PutRequest* req,
                                 pb::PutResponse* resp) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  InFlight in_flight(in_flight_);
  std::vector<Block> blocks;
  blocks.reserve(req->blocks_size());
  for (const pb::KvBlock& b : req->blocks()) blocks.push_back(FromProto(b));
  auto r = store_->Put(FromProto(req->layout()), std::move(blocks));
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_stored(r->stored);
  resp->set_duplicates(r->duplicates);
  resp->set_pending(r->pending);
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Lookup(grpc::ServerContext* ctx,
                                    const pb::LookupRequest* req,
                                    pb::LookupResponse* resp) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  InFlight in_flight(in_flight_);
  auto r = store_->Lookup(
      FromProto(req->layout()),
      {req->keys().data(), static_cast<size_t>(req->keys().size())});
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_num_hits(r->num_hits);
  resp->set_bytes(static_cast<uint64_t>(r->bytes));
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Get(grpc::ServerContext* ctx,
                                 const pb::GetRequest* req,
                                 grpc::ServerWriter<pb::GetResponse>* writer) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  InFlight in_flight(in_flight_);
  auto blocks =
      store_->Get(FromProto(req->layout()),
                  {req->keys().data(), static_cast<size_t>(req->keys().size())},
                  req->head_begin(), req->head_end());
  if (!blocks.ok()) return ToGrpcStatus(blocks.status());
  for (const auto& b : *blocks) {
    pb::GetResponse msg;
    ToProto(*b, msg.mutable_block());
    if (!writer->Write(msg)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Subscribe(
    grpc::ServerContext* ctx, const pb::SubscribeRequest* req,
    grpc::ServerWriter<pb::KvEvent>* writer) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  InFlight in_flight(in_flight_);
  uint64_t after = req->from_seq();
  const size_t batch = std::max<size_t>(1, options_.subscribe_batch);
  while (!ctx->IsCancelled()) {
    auto events = store_->WaitForEvents(after, req->epoch(), batch,
                                        absl::Now() + options_.subscribe_poll);
    if (!events.ok()) return ToGrpcStatus(events.status());
    for (const Event& e : *events) {
      pb::KvEvent msg;
      ToProto(e, &msg);
      if (!writer->Write(msg)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      }
      after = e.seq;
    }
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "subscription cancelled");
}

grpc::Status KvStoreService::Snapshot(grpc::ServerContext* ctx,
                                      const pb::SnapshotRequest* req,
                                      pb::SnapshotResponse* resp) {
  if (grpc::Status st = auth::CheckClusterSecret(*ctx); !st.ok()) return st;
  InFlight in_flight(in_flight_);
  ToProto(store_->Snapshot(), resp);
  return grpc::Status::OK;
}

}  // namespace latentkv::kvstore
