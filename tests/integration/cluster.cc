#include "tests/integration/cluster.h"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "latentkv/v1/kvstore.grpc.pb.h"

namespace latentkv::testing {

namespace pb = ::latentkv::v1;

Cluster::Cluster(const ClusterOptions& o) : dir_(MakeTempDir()) {
  std::vector<std::string> cargs = {
      BinDir() + "/latentkv-coordinator",
      "--model=" + o.model_dir,
      "--port=0",
      "--port_file=" + dir_ + "/coordinator.addr",
      "--internal_port_file=" + dir_ + "/coordinator-internal.addr",
      "--heartbeat_ms=200",
      "--worker_timeout_ms=1500"};
  if (o.http) {
    http_port_ = PickFreePort();
    cargs.push_back("--http_port=" + std::to_string(http_port_));
  }
  if (o.metrics) {
    coordinator_metrics_port_ = PickFreePort();
    cargs.push_back("--metrics_port=" +
                    std::to_string(coordinator_metrics_port_));
  }
  if (!o.api_key.empty()) {
    const std::string key_file = dir_ + "/api_keys";
    std::ofstream(key_file) << "# test key\n" << o.api_key << "\n";
    cargs.push_back("--api_key_file=" + key_file);
  }
  cargs.insert(cargs.end(), o.coordinator_args.begin(),
               o.coordinator_args.end());
  coordinator_ = std::make_unique<Process>(cargs, dir_ + "/coordinator.log");
  address_ = WaitForLine(dir_ + "/coordinator.addr", 30);
  internal_address_ = WaitForLine(dir_ + "/coordinator-internal.addr", 5);
  if (address_.empty()) {
    std::fprintf(stderr, "coordinator did not start:\n%s\n", Logs().c_str());
    std::abort();
  }
  for (int i = 0; i < o.workers; ++i) {
    const std::string f = dir_ + "/worker" + std::to_string(i) + ".addr";
    std::vector<std::string> wargs = {BinDir() + "/latentkv-worker",
                                      "--model=" + o.model_dir,
                                      "--port=0",
                                      "--port_file=" + f,
                                      "--coordinator=" + internal_address_,
                                      "--worker_id=w" + std::to_string(i)};
    wargs.insert(wargs.end(), o.worker_args.begin(), o.worker_args.end());
    worker_metrics_ports_.push_back(o.metrics ? PickFreePort() : 0);
    if (o.metrics) {
      wargs.push_back("--metrics_port=" +
                      std::to_string(worker_metrics_ports_.back()));
    }
    if (i < static_cast<int>(o.per_worker_args.size())) {
      wargs.insert(wargs.end(), o.per_worker_args[i].begin(),
                   o.per_worker_args[i].end());
    }
    const std::string rdv = dir_ + "/tp" + std::to_string(i);
    const int tp = i < static_cast<int>(o.per_worker_tp.size())
                       ? o.per_worker_tp[i]
                       : o.tp;
    auto rank_args = [&](int r) {
      std::vector<std::string> a = wargs;
      a.push_back("--tp_size=" + std::to_string(tp));
      a.push_back("--tp_rank=" + std::to_string(r));
      a.push_back("--tp_rendezvous=" + rdv);
      a.push_back("--tp_group=g" + std::to_string(i));
      a.push_back("--tp_timeout_s=5");
      return a;
    };
    workers_.push_back(std::make_unique<Process>(
        tp > 1 ? rank_args(0) : wargs,
        dir_ + "/worker" + std::to_string(i) + ".log"));
    follower_first_.push_back(static_cast<int>(followers_.size()));
    for (int r = 1; r < tp; ++r) {
      std::vector<std::string> a = rank_args(r);
      // Followers serve grpc.health.v1 only.
      a[3] = "--port_file=" + dir_ + "/worker" + std::to_string(i) + "-rank" +
             std::to_string(r) + ".addr";
      followers_.push_back(std::make_unique<Process>(
          a, dir_ + "/worker" + std::to_string(i) + "-rank" +
                 std::to_string(r) + ".log"));
    }
    worker_addrs_.push_back(WaitForLine(f, 60));
  }
  stub_ = pb::Generation::NewStub(
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    if (!o.api_key.empty()) {
      ctx.AddMetadata("authorization", "Bearer " + o.api_key);
    }
    pb::ListModelsResponse resp;
    if (stub_->ListModels(&ctx, {}, &resp).ok() &&
        resp.models(0).num_workers() == static_cast<uint32_t>(o.workers)) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "workers did not register:\n%s\n", Logs().c_str());
  std::abort();
}

Cluster::~Cluster() {
  stub_.reset();  // gRPC servers shut down slowly (~5 s) with idle clients
  for (auto& w : workers_) w->Stop(SIGTERM, 20);
  for (auto& f : followers_) f->Stop(SIGTERM, 20);
  coordinator_->Stop(SIGTERM, 20);
}

std::unique_ptr<pb::Worker::Stub> Cluster::WorkerStub(int i) const {
  return pb::Worker::NewStub(grpc::CreateChannel(
      worker_addrs_[i], grpc::InsecureChannelCredentials()));
}

Cluster* SharedClusterTest::cluster_ = nullptr;

void SharedClusterTest::SetUpTestSuite() {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  cluster_ = new Cluster(o);
}

void SharedClusterTest::TearDownTestSuite() {
  delete cluster_;
  cluster_ = nullptr;
}

latentkv::v1::WorkerStats Cluster::WorkerStats(int i) const {
  auto stub = WorkerStub(i);
  grpc::ClientContext ctx;
  pb::WorkerStats s;
  EXPECT_TRUE(stub->GetStats(&ctx, pb::GetStatsRequest(), &s).ok());
  return s;
}

std::string Cluster::follower_address(int i, int r) const {
  return WaitForLine(dir_ + "/worker" + std::to_string(i) + "-rank" +
                         std::to_string(r) + ".addr",
                     30);
}

std::string Cluster::Logs() const {
  std::string out;
  for (const char* name :
       {"coordinator.log", "worker0.log", "worker0-rank1.log", "worker1.log",
        "worker1-rank1.log"}) {
    std::ifstream in(dir_ + "/" + name);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    out += std::string("--- ") + name + "\n" + ss.str();
  }
  return out;
}

StreamResult Generate(pb::Generation::Stub& stub,
                      const pb::GenerateRequest& req, double timeout_s,
                      std::atomic<int64_t>* progress) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(int64_t(timeout_s * 1000)));
  auto reader = stub.Generate(&ctx, req);
  StreamResult r;
  pb::GenerateResponse resp;
  while (reader->Read(&resp)) {
    ++r.messages;
    r.tokens.insert(r.tokens.end(), resp.token_ids().begin(),
                    resp.token_ids().end());
    if (progress != nullptr) progress->fetch_add(resp.token_ids_size());
    r.text += resp.text();
    if (resp.finish_reason() != pb::FINISH_REASON_UNSPECIFIED)
      r.finish = resp.finish_reason();
  }
  r.status = reader->Finish();
  return r;
}

pb::GenerateRequest Greedy(const std::string& prompt, int max_tokens) {
  pb::GenerateRequest req;
  req.set_prompt(prompt);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_temperature(0);
  return req;
}

std::vector<StreamResult> LongStreams(Cluster& c, int tokens, Process* victim,
                                      int streaming) {
  const std::vector<std::string> prompts = {
      "Once upon a time", "The little dog", "Tom and Lily went",
      "One day, a bird",  "The sun was",    "There was a big tree"};
  std::vector<StreamResult> r(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      pb::GenerateRequest req = Greedy(prompts[i], tokens);
      req.mutable_sampling()->set_ignore_eos(true);
      r[i] = Generate(c.stub(), req);
    });
  }
  if (victim != nullptr) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      const pb::WorkerStats s = c.WorkerStats(streaming);
      if (s.running() > 0 && s.tokens_generated() >= 20) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_GT(c.WorkerStats(streaming).running(), 0u)
        << "worker " << streaming << " was not streaming";
    EXPECT_EQ(kill(victim->pid(), SIGKILL), 0);
  }
  for (auto& t : threads) t.join();
  return r;
}

std::string LongStoryLine() {
  std::ifstream in(std::string(LATENTKV_SHARED_DIR) +
                   "/text/tinystories_train_excerpt.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > 400) return line.substr(0, 400);
  }
  return "";
}

bool WaitForStoreToSettle(const std::string& address, int64_t min_blocks) {
  auto stub = latentkv::v1::KvStore::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  int64_t last = -1;
  int stable = 0;
  for (int i = 0; i < 200; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    latentkv::v1::SnapshotResponse snap;
    if (stub->Snapshot(&ctx, {}, &snap).ok()) {
      const int64_t n = snap.blocks_size();
      stable = n == last ? stable + 1 : 0;
      last = n;
      if (n >= min_blocks && stable >= 6) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace latentkv::testing
