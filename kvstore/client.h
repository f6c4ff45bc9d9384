// KvStoreClient: a typed client of latentkv-kvstore for workers, the
// coordinator and routers. Converts between the core structs
// (block_store.h) and the wire, and turns gRPC status into absl::Status
// (same codes: FAILED_PRECONDITION for a layout mismatch, OUT_OF_RANGE for a
// subscription that must restart from a Snapshot, UNAVAILABLE when the
// store is down or shutting down, DEADLINE_EXCEEDED past `timeout`).
//
// Typical router use: s = Snapshot(); rebuild the index from s.blocks;
// reader = Subscribe(s.seq, s.epoch); apply events until Next() is false;
// on OUT_OF_RANGE or UNAVAILABLE, start over from Snapshot().
//
// Thread-safety: KvStoreClient is thread-safe (calls may run concurrently).
// An EventReader is used by one thread, except Cancel(), which any thread
// may call.
#ifndef LATENTKV_KVSTORE_CLIENT_H_
#define LATENTKV_KVSTORE_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/block_store.h"
#include "kvstore/layout.h"
#include "latentkv/v1/kvstore.grpc.pb.h"

namespace latentkv::kvstore {

struct KvStoreClientOptions {
  // Deadline of each Put, Lookup, Snapshot and of a whole Get; default 10 s.
  // Subscribe streams have none.
  absl::Duration timeout = absl::Seconds(10);
  // Largest message accepted from the store (a Get block, a Snapshot) when
  // Connect() makes the channel; default 256 MiB, as the server's limit.
  int max_receive_bytes = 256 << 20;
};

// A Subscribe stream. Events arrive in seq order without gaps.
class EventReader {
 public:
  EventReader(
      std::unique_ptr<grpc::ClientContext> ctx,
      std::unique_ptr<grpc::ClientReader<latentkv::v1::KvEvent>> reader);
  ~EventReader();
  EventReader(const EventReader&) = delete;
  EventReader& operator=(const EventReader&) = delete;

  // Blocks for the next event; false when the stream has ended (call
  // Finish()).
  bool Next(Event* event);
  // Ends the stream from any thread; Next() then returns false.
  void Cancel();
  // The stream's final status, after Next() returned false. CANCELLED after
  // Cancel().
  absl::Status Finish();

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReader<latentkv::v1::KvEvent>> reader_;
  bool finished_ = false;
  absl::Status status_;
};

class KvStoreClient {
 public:
  KvStoreClient(std::shared_ptr<grpc::Channel> channel,
                const KvStoreClientOptions& options);
  // An insecure channel to `address` (host:port).
  static std::unique_ptr<KvStoreClient> Connect(
      const std::string& address, const KvStoreClientOptions& options = {});

  // Stores `blocks` (parents first); see KvStore.Put in kvstore.proto.
  absl::StatusOr<PutResult> Put(const KvLayout& layout,
                                absl::Span<const Block> blocks);
  // The longest resident prefix of `keys` (e.g. PrefixKeys of a prompt).
  absl::StatusOr<LookupResult> Lookup(const KvLayout& layout,
                                      absl::Span<const BlockKey> keys);
  // The blocks of the longest resident prefix of `keys`, in order (possibly
  // fewer than Lookup said: blocks may be evicted in between); with a head
  // range other than 0..0, only those KV heads' payloads.
  absl::StatusOr<std::vector<Block>> Get(const KvLayout& layout,
                                         absl::Span<const BlockKey> keys,
                                         uint32_t head_begin = 0,
                                         uint32_t head_end = 0);
  // Every resident block, the seq it reflects and the store's epoch.
  absl::StatusOr<StoreSnapshot> Snapshot();
  // Events with seq > from_seq; epoch 0 accepts any incarnation.
  std::unique_ptr<EventReader> Subscribe(uint64_t from_seq, uint64_t epoch = 0);

 private:
  void SetDeadline(grpc::ClientContext* ctx) const;

  std::unique_ptr<latentkv::v1::KvStore::Stub> stub_;
  KvStoreClientOptions options_;
};

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_CLIENT_H_
