// The latentkv.v1.KvStore gRPC service over a BlockStore.
//
// Put copies each request's payload bytes once into immutable blocks; Get
// streams one block per message from shared, immutable blocks (no store lock
// held while writing). Subscribe holds one server thread per subscriber,
// polls for client cancellation every `subscribe_poll`, and ends with
// UNAVAILABLE once the store is Close()d, so a server shutdown never waits
// on a subscriber.
// in_flight() lets main() drain before Server::Shutdown: gRPC 1.51's
// Shutdown(deadline) waits the whole deadline while any client merely keeps
// a connection open, so main waits for in_flight() == 0 itself and then shuts
// down with an immediate deadline.
// Thread-safety: gRPC calls the service from many threads; BlockStore is
// thread-safe.
#ifndef LATENTKV_KVSTORE_KVSTORE_SERVICE_H_
#define LATENTKV_KVSTORE_KVSTORE_SERVICE_H_

#include <atomic>
#include <cstddef>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/block_store.h"
#include "latentkv/v1/kvstore.grpc.pb.h"

namespace latentkv::kvstore {

struct KvStoreServiceOptions {
  // How often a waiting Subscribe checks for client cancellation; default
  // 200 ms.
  absl::Duration subscribe_poll = absl::Milliseconds(200);
  // Events fetched from the store per wake-up; >= 1, default 256.
  size_t subscribe_batch = 256;
};

class KvStoreService final : public latentkv::v1::KvStore::Service {
 public:
  // `store` must outlive the service.
  KvStoreService(BlockStore* store, const KvStoreServiceOptions& options)
      : store_(store), options_(options) {}

  grpc::Status Put(grpc::ServerContext* ctx,
                   const latentkv::v1::PutRequest* req,
                   latentkv::v1::PutResponse* resp) override;
  grpc::Status Lookup(grpc::ServerContext* ctx,
                      const latentkv::v1::LookupRequest* req,
                      latentkv::v1::LookupResponse* resp) override;
  grpc::Status Get(
      grpc::ServerContext* ctx, const latentkv::v1::GetRequest* req,
      grpc::ServerWriter<latentkv::v1::GetResponse>* writer) override;
  grpc::Status Subscribe(
      grpc::ServerContext* ctx, const latentkv::v1::SubscribeRequest* req,
      grpc::ServerWriter<latentkv::v1::KvEvent>* writer) override;
  grpc::Status Snapshot(grpc::ServerContext* ctx,
                        const latentkv::v1::SnapshotRequest* req,
                        latentkv::v1::SnapshotResponse* resp) override;

  // Calls currently inside a handler.
  int in_flight() const { return in_flight_.load(); }

 private:
  // Counts a handler while it runs.
  class InFlight {
   public:
    explicit InFlight(std::atomic<int>& n) : n_(n) { ++n_; }
    ~InFlight() { --n_; }

   private:
    std::atomic<int>& n_;
  };

  BlockStore* store_;
  KvStoreServiceOptions options_;
  std::atomic<int> in_flight_{0};
};

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_KVSTORE_SERVICE_H_
