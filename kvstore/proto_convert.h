// Conversions between the kvstore core's plain structs (block_store.h,
// layout.h) and their latentkv.v1 wire forms, and between absl and gRPC
// status. Shared by the server and the client.
//
// Thread-safety: pure functions.
#ifndef LATENTKV_KVSTORE_PROTO_CONVERT_H_
#define LATENTKV_KVSTORE_PROTO_CONVERT_H_

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/block_store.h"
#include "kvstore/layout.h"
#include "latentkv/v1/kvstore.pb.h"

namespace latentkv::kvstore {

void ToProto(const KvLayout& in, latentkv::v1::KvLayout* out);
KvLayout FromProto(const latentkv::v1::KvLayout& in);

void ToProto(const Block& in, latentkv::v1::KvBlock* out);
Block FromProto(const latentkv::v1::KvBlock& in);

void ToProto(const Event& in, latentkv::v1::KvEvent* out);
// REMOVED reads as kRemoved, anything else as kStored.
Event FromProto(const latentkv::v1::KvEvent& in);

void ToProto(const StoreSnapshot& in, latentkv::v1::SnapshotResponse* out);
StoreSnapshot FromProto(const latentkv::v1::SnapshotResponse& in);

// Same code and message.
grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_PROTO_CONVERT_H_
