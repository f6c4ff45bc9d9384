// The cluster credential over real processes: with --cluster_secret_file
// the coordinator's Control service, the workers' Worker service and the
// kvstore refuse calls without it (forged registrations, direct worker
// calls, reading the store), the cluster itself works (its workers present
// it), and a live worker id cannot be taken over even with it.
#include <fstream>
#include <string>
#include <vector>

#include "common/auth/cluster_secret.h"
#include "gtest/gtest.h"
#include "latentkv/v1/kvstore.grpc.pb.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

class InternalAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir());
    secret_file_ = new std::string(*dir_ + "/cluster.secret");
    ASSERT_TRUE(auth::WriteNewClusterSecret(*secret_file_).ok());
    std::string line;
    std::getline(std::ifstream(*secret_file_), line);
    secret_ = new std::string(line);
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.coordinator_args = {"--cluster_secret_file=" + *secret_file_};
    o.worker_args = {"--cluster_secret_file=" + *secret_file_};
    cluster_ = new Cluster(o);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete secret_;
    delete secret_file_;
    delete dir_;
  }
  // A context carrying `secret` ("" : none).
  static void With(grpc::ClientContext* ctx, const std::string& secret) {
    if (!secret.empty()) ctx->AddMetadata(auth::kClusterSecretMetadata, secret);
  }
  static inline std::string* dir_ = nullptr;
  static inline std::string* secret_file_ = nullptr;
  static inline std::string* secret_ = nullptr;
  static inline Cluster* cluster_ = nullptr;
};

const char kWrong[] = "0000000000000000000000000000000000000000000000000000";

TEST_F(InternalAuthTest, ForgedRegistrationsAreRefused) {
  auto control = pb::Control::NewStub(grpc::CreateChannel(
      cluster_->internal_address(), grpc::InsecureChannelCredentials()));
  pb::RegisterRequest req;
  req.set_worker_id("attacker-0");
  req.set_address("127.0.0.1:9");
  req.set_model_id("stories260K");
  req.set_vocab_size(512);
  for (const std::string& s : {std::string(), std::string(kWrong)}) {
    grpc::ClientContext ctx;
    With(&ctx, s);
    pb::RegisterResponse resp;
    EXPECT_EQ(control->Register(&ctx, req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext sctx;
    With(&sctx, s);
    pb::ServingStats stats;
    EXPECT_EQ(control->GetServingStats(&sctx, {}, &stats).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Even with the credential, the live worker's id stays where it is.
  req.set_worker_id(
      "w0");  // the cluster's worker (tests/integration/cluster.cc)
  grpc::ClientContext ctx;
  With(&ctx, *secret_);
  pb::RegisterResponse resp;
  const grpc::Status st = control->Register(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << st.error_message();
  // Generation still reaches the real worker.
  grpc::ClientContext gctx;
  pb::GenerateRequest greq;
  greq.set_prompt("Once upon a time");
  greq.mutable_sampling()->set_max_tokens(4);
  auto reader = cluster_->stub().Generate(&gctx, greq);
  pb::GenerateResponse gresp;
  int n = 0;
  while (reader->Read(&gresp)) n += gresp.token_ids_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_GT(n, 0);
}

TEST_F(InternalAuthTest, WorkersRefuseDirectCallsWithoutTheCredential) {
  auto worker = cluster_->WorkerStub(0);
  pb::WorkerGenerateRequest req;
  req.set_request_id("direct");
  req.add_prompt_token_ids(1);
  req.mutable_sampling()->set_max_tokens(2);
  for (const std::string& s : {std::string(), std::string(kWrong)}) {
    grpc::ClientContext ctx;
    With(&ctx, s);
    auto reader = worker->Generate(&ctx, req);
    pb::WorkerGenerateResponse resp;
    while (reader->Read(&resp)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext pctx;
    With(&pctx, s);
    pb::PrefillRequest preq;
    preq.add_prompt_token_ids(1);
    auto preader = worker->Prefill(&pctx, preq);
    pb::PrefillResponse presp;
    while (preader->Read(&presp)) {
    }
    EXPECT_EQ(preader->Finish().error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext ctx;
  With(&ctx, *secret_);
  pb::WorkerStats stats;
  EXPECT_TRUE(worker->GetStats(&ctx, {}, &stats).ok());
}

TEST_F(InternalAuthTest, TheStoreRefusesReadsAndWritesWithoutTheCredential) {
  Process store({BinDir() + "/latentkv-kvstore", "--port=0",
                 "--port_file=" + *dir_ + "/kvstore.addr",
                 "--cluster_secret_file=" + *secret_file_},
                *dir_ + "/kvstore.log");
  const std::string addr = WaitForLine(*dir_ + "/kvstore.addr", 30);
  ASSERT_FALSE(addr.empty());
  auto kv = pb::KvStore::NewStub(
      grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  for (const std::string& s : {std::string(), std::string(kWrong)}) {
    grpc::ClientContext ctx;
    With(&ctx, s);
    pb::SnapshotResponse snap;
    EXPECT_EQ(kv->Snapshot(&ctx, {}, &snap).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext pctx;
    With(&pctx, s);
    pb::PutRequest put;
    pb::PutResponse presp;
    EXPECT_EQ(kv->Put(&pctx, put, &presp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext ctx;
  With(&ctx, *secret_);
  pb::SnapshotResponse snap;
  EXPECT_TRUE(kv->Snapshot(&ctx, {}, &snap).ok());
}

}  // namespace
}  // namespace latentkv::testing
