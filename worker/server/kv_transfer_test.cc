// CallPrefill against a real gRPC server playing a prefill worker: well
// formed rows arrive as sent; a hostile or corrupt peer's NaN or infinite
// values are DataLoss (the caller then prefills locally), never imported.
#include "worker/server/kv_transfer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "latentkv/v1/worker.grpc.pb.h"

namespace latentkv::worker {
namespace {

namespace pb = ::latentkv::v1;

const std::vector<LayerKvShape> kShapes = {{2, 4, 3}, {2, 4, 3}};

// Streams the layout of `shapes` (kShapes' byte sizes), then for each layer
// two heads of `rows` rows whose values are 0.5, except value `poison_at` of
// layer 1 head 0 row 0.
class FakePrefill final : public pb::Worker::Service {
 public:
  FakePrefill(float poison, std::vector<LayerKvShape> shapes)
      : poison_(poison), shapes_(std::move(shapes)) {}
  grpc::Status Prefill(grpc::ServerContext*, const pb::PrefillRequest*,
                       grpc::ServerWriter<pb::PrefillResponse>* w) override {
    pb::PrefillResponse first;
    *first.mutable_layout() = TransferLayout(shapes_, DType::kF32, 1);
    first.set_first_token(7);
    w->Write(first);
    for (uint32_t l = 0; l < kShapes.size(); ++l) {
      pb::PrefillResponse m;
      m.set_layer(l);
      for (int h = 0; h < 2; ++h) {
        std::string rows;
        for (int32_t r = 0; r < 3; ++r) {
          rows.append(reinterpret_cast<const char*>(&r), 4);
          for (int j = 0; j < 7; ++j) {
            const float v =
                (l == 1 && h == 0 && r == 0 && j == 5) ? poison_ : 0.5f;
            rows.append(reinterpret_cast<const char*>(&v), 4);
          }
        }
        m.add_head_rows(rows);
      }
      w->Write(m);
    }
    return grpc::Status::OK;
  }

 private:
  float poison_;
  std::vector<LayerKvShape> shapes_;
};

absl::StatusOr<RemotePrefill> CallFake(
    float poison, const std::vector<LayerKvShape>& theirs = kShapes,
    const std::vector<LayerKvShape>& ours = kShapes) {
  FakePrefill service(poison, theirs);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  pb::PrefillRequest req;
  req.add_prompt_token_ids(1);
  auto r = CallPrefill("127.0.0.1:" + std::to_string(port), req,
                       TransferLayout(ours, DType::kF32, 1), absl::Seconds(10));
  server->Shutdown();
  return r;
}

TEST(KvTransferTest, WellFormedRowsArriveAsSent) {
  auto r = CallFake(0.5f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_token, 7);
  ASSERT_NE(r->kv, nullptr);
  EXPECT_EQ(r->kv->rows[1][0].size(), 3u * 32);
  float v;
  std::memcpy(&v, r->kv->rows[1][0].data() + 4 + 5 * 4, 4);
  EXPECT_EQ(v, 0.5f);
}

// Partial rotary: keys whose last nope_dims channels carry no RoPE. Equal
// splits transfer (and the snapshot keeps the split); a peer whose keys were
// rotated under another split is refused before any row is read.
TEST(KvTransferTest, PositionFreeKeyDimsMustAgree) {
  const std::vector<LayerKvShape> partial = {{2, 4, 3, 0}, {2, 4, 3, 2}};
  auto same = CallFake(0.5f, partial, partial);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->kv->shapes[1].nope_dims, 2);
  EXPECT_EQ(same->kv->shapes[0].nope_dims, 0);
  for (const auto& [theirs, ours] :
       {std::pair{kShapes, partial}, std::pair{partial, kShapes}}) {
    auto r = CallFake(0.5f, theirs, ours);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
    EXPECT_NE(r.status().message().find("nope_dims) of layer 1"),
              std::string::npos)
        << r.status();
  }
}

TEST(KvTransferTest, NonFiniteRowsFromAPeerAreDataLoss) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    auto r = CallFake(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::IsDataLoss(r.status())) << r.status();
    EXPECT_NE(r.status().message().find("layer 1 head 0 row 0"),
              std::string::npos)
        << r.status();
  }
}

}  // namespace
}  // namespace latentkv::worker
