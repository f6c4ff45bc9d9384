// Rank-to-rank prefill -> decode transfer over gRPC: the KvSource service
// every rank of a prefill group serves from its KvParking
// (worker/engine/kv_parking.h), and the puller each rank of a decode group
// uses to take its KV heads straight from the prefill ranks that hold them
// (RankKvPuller, worker/engine/rank_kv_store.h). A decode rank's heads may
// come from several prefill ranks (and a prefill rank's heads go to
// several decode ranks): each source is asked for the overlap of its heads
// with the puller's, the parts are checked like a Worker.Prefill stream
// (PrefillAssembler) and joined in head order. Every KV head crosses the
// network once, from the rank that computed it to the rank that uses it.
// Thread-safety: the service is called from gRPC threads; the puller is
// thread-safe.
#ifndef LATENTKV_WORKER_SERVER_KV_SOURCE_H_
#define LATENTKV_WORKER_SERVER_KV_SOURCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/kv_parking.h"
#include "worker/engine/rank_kv_store.h"

namespace latentkv::worker {

// Streams `kv`'s layers as Worker.Prefill layer messages (rows, codebook
// blobs, query window). False when the client went away.
bool WriteKvLayers(const KvSnapshot& kv,
                   grpc::ServerWriter<latentkv::v1::PrefillResponse>* writer);

struct KvSourceOptions {
  // How long a Pull waits for its transfer to be parked (the prefill
  // group's other ranks park a step after the leader answers); default 10 s.
  absl::Duration wait = absl::Seconds(10);
  int32_t tp_size = 1;  // this group's, for the layout of what is sent
};

class KvSourceService final : public latentkv::v1::KvSource::Service {
 public:
  // `parking` must outlive the service.
  KvSourceService(KvParking* parking, const KvSourceOptions& options)
      : parking_(parking), options_(options) {}
  grpc::Status Pull(
      grpc::ServerContext* ctx, const latentkv::v1::PullKvRequest* req,
      grpc::ServerWriter<latentkv::v1::PrefillResponse>* writer) override;

 private:
  KvParking* parking_;
  KvSourceOptions options_;
};

struct KvPullerOptions {
  // This rank's global KV heads [head_begin, head_end) of its group's
  // `group_shapes`, held in `dtype`.
  int32_t head_begin = 0;
  int32_t head_end = 0;
  std::vector<LayerKvShape> group_shapes;
  DType dtype = DType::kF32;
  int32_t q_per_kv = 1;
  // Deadline of the whole pull (all sources); default 30 s.
  absl::Duration timeout = absl::Seconds(30);
};

class GrpcKvPuller final : public RankKvPuller {
 public:
  explicit GrpcKvPuller(const KvPullerOptions& options) : options_(options) {}
  // RankKvPuller. InvalidArgument when the sources do not cover this rank's
  // heads exactly once (overlapping, missing or out of range, or without an
  // address: a hostile or confused peer); a source's RPC status;
  // PrefillAssembler's checks of what it sent.
  absl::StatusOr<KvSnapshot> Pull(const KvPull& pull, int64_t* bytes) override;

 private:
  const KvPullerOptions options_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_KV_SOURCE_H_
