// `latentkv serve`: a whole cluster on this machine: one coordinator process
// and N worker processes on loopback, until SIGINT/SIGTERM, then a drain:
// the coordinator stops taking requests and finishes those in flight, then
// the workers stop.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/address_file.h"
#include "common/auth/cluster_secret.h"
#include "common/signals.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "tools/cli/commands.h"

extern char** environ;

namespace latentkv::cli {
namespace {

namespace fs = std::filesystem;

pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Children get default signal handling: unblock what this process blocks.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, &attr, argv.data(), environ) != 0) {
    pid = -1;
  }
  posix_spawnattr_destroy(&attr);
  return pid;
}

// Waits for `path` to appear (written by a child once it serves).
std::string WaitForFile(const std::string& path, pid_t child, int timeout_s) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) return line;
    int status;
    if (waitpid(child, &status, WNOHANG) == child) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "";
}

void StopChild(pid_t pid, int grace_s) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(grace_s);
  int status;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

}  // namespace

int Serve(const ServeOptions& o) {
  if (o.model_dir.empty()) {
    std::fprintf(stderr, "--model DIR is required\n");
    return 2;
  }
  const int groups = o.workers + o.prefill_workers + o.decode_workers;
  std::vector<std::string> devices;  // per worker process, group-major
  for (int k = 0; k < groups * o.tp; ++k) {
    absl::StatusOr<std::string> d = WorkerDevice(o, k);
    if (!d.ok()) {
      std::fprintf(stderr, "latentkv serve: %s\n",
                   std::string(d.status().message()).c_str());
      return 2;
    }
    devices.push_back(*std::move(d));
  }
  const fs::path bin = o.bin_dir.empty()
                           ? fs::read_symlink("/proc/self/exe").parent_path()
                           : fs::path(o.bin_dir);
  char tmpl[] = "/tmp/latentkv-serve-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const fs::path run_dir(tmpl);
  // The cluster's credential: every internal service of this cluster wants
  // it, and nothing outside the cluster has it.
  const std::string secret_file = (run_dir / "cluster.secret").string();
  if (absl::Status st = auth::WriteNewClusterSecret(secret_file); !st.ok()) {
    std::fprintf(stderr, "latentkv serve: %s\n",
                 std::string(st.message()).c_str());
    return 1;
  }
  const std::string secret_flag = "--cluster_secret_file=" + secret_file;
  const std::string coord_file = (run_dir / "coordinator.addr").string();
  // Metrics ports: the coordinator, then each group's rank 0, then the store.
  auto metrics_port = [&](int index) {
    return absl::StrCat("--metrics_port=",
                        o.metrics_port > 0 ? o.metrics_port + index : 0);
  };
  pid_t coord = Spawn(
      {(bin / "latentkv-coordinator").string(), "--model=" + o.model_dir,
       "--host=" + o.host, absl::StrCat("--port=", o.port),
       "--port_file=" + coord_file, absl::StrCat("--http_port=", o.http_port),
       metrics_port(0), "--routing=" + o.routing,
       absl::StrCat("--kv_overlap_weight=", o.kv_overlap_weight),
       "--served_model_name=" + o.served_model_name,
       "--api_key_file=" + o.api_key_file, secret_flag});
  const std::string address = WaitForFile(coord_file, coord, 60);
  if (address.empty()) {
    std::fprintf(stderr, "latentkv serve: the coordinator did not start\n");
    StopChild(coord, 1);
    return 1;
  }
  pid_t store = -1;
  std::string store_address;
  if (o.kvstore) {
    const std::string store_file = (run_dir / "kvstore.addr").string();
    store = Spawn({(bin / "latentkv-kvstore").string(), "--host=" + o.host,
                   "--port=0", "--port_file=" + store_file,
                   absl::StrCat("--capacity_mb=", o.kvstore_mb), secret_flag,
                   metrics_port(1 + groups)});
    store_address = WaitForFile(store_file, store, 60);
    if (store_address.empty()) {
      std::fprintf(stderr, "latentkv serve: the kvstore did not start\n");
      StopChild(store, 1);
      StopChild(coord, 1);
      return 1;
    }
  }
  // Each worker is a tensor-parallel group of o.tp processes: rank 0 serves
  // and registers; the others follow it (Gloo rendezvous in run_dir). Leaders
  // come first in `workers` so they drain before their followers stop.
  std::vector<pid_t> workers;
  for (int i = 0; i < groups; ++i) {
    const std::string role = i < o.workers                       ? "mixed"
                             : i < o.workers + o.prefill_workers ? "prefill"
                                                                 : "decode";
    const fs::path rendezvous = run_dir / absl::StrCat("tp-", i);
    if (o.tp > 1) fs::create_directories(rendezvous);
    for (int r = 0; r < o.tp; ++r) {
      std::vector<std::string> args = {
          (bin / "latentkv-worker").string(),
          "--model=" + o.model_dir,
          "--host=" + o.host,
          "--port=0",
          absl::StrCat("--worker_id=", role, "-", i),
          "--role=" + role,
          "--device=" + devices[i * o.tp + r],
          secret_flag};
      if (r == 0) {
        args.push_back("--coordinator=" + address);
        args.push_back(metrics_port(1 + i));
      }
      if (o.tp > 1) {
        args.push_back(absl::StrCat("--tp_size=", o.tp));
        args.push_back(absl::StrCat("--tp_rank=", r));
        args.push_back("--tp_rendezvous=" + rendezvous.string());
        args.push_back(absl::StrCat("--tp_group=group-", i));
      }
      if (!store_address.empty()) args.push_back("--kvstore=" + store_address);
      args.insert(args.end(), o.worker_args.begin(), o.worker_args.end());
      workers.push_back(Spawn(args));
    }
  }
  if (store > 0) workers.push_back(store);  // stopped after the workers
  // Ready when every worker has registered.
  const std::string probe_key =
      o.api_key_file.empty() ? "" : FirstApiKey(o.api_key_file);
  auto stub = latentkv::v1::Generation::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  bool ready = false;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!ready && std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    if (!probe_key.empty()) {
      ctx.AddMetadata("authorization", "Bearer " + probe_key);
    }
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(1));
    latentkv::v1::ListModelsResponse resp;
    if (stub->ListModels(&ctx, {}, &resp).ok() && resp.models_size() > 0 &&
        resp.models(0).num_workers() >= static_cast<uint32_t>(groups)) {
      ready = true;
      break;
    }
    for (pid_t w : workers) {
      int status;
      if (w <= 0 || waitpid(w, &status, WNOHANG) == w) {
        std::fprintf(stderr,
                     "latentkv serve: a worker exited during start-up\n");
        for (pid_t x : workers) StopChild(x, 1);
        StopChild(coord, 1);
        return 1;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!ready) {
    std::fprintf(stderr, "latentkv serve: workers did not register in time\n");
    for (pid_t w : workers) StopChild(w, 1);
    StopChild(coord, 1);
    return 1;
  }
  std::fprintf(stderr, "latentkv serve: %s with %d worker(s) on %s\n",
               o.model_dir.c_str(), o.workers, address.c_str());
  if (o.http_port > 0) {
    std::fprintf(stderr, "latentkv serve: OpenAI HTTP API on http://%s:%d/v1\n",
                 o.host.c_str(), o.http_port);
  }
  if (o.metrics_port > 0) {
    std::string ports =
        absl::StrCat(o.metrics_port, " (coordinator), ", o.metrics_port + 1,
                     "..", o.metrics_port + groups, " (workers)");
    if (o.kvstore) {
      absl::StrAppend(&ports, ", ", o.metrics_port + 1 + groups, " (kvstore)");
    }
    std::fprintf(stderr, "latentkv serve: metrics on ports %s\n",
                 ports.c_str());
  }
  WriteAddressFile(o.port_file, address);
  stub.reset();  // an open client channel would slow the coordinator's shutdown
  WaitForTerminationSignal();
  std::fprintf(stderr, "latentkv serve: draining\n");
  StopChild(coord, 35);  // finishes in-flight requests first
  for (pid_t w : workers) StopChild(w, 35);
  fs::remove_all(run_dir);
  std::fprintf(stderr, "latentkv serve: stopped\n");
  return 0;
}

}  // namespace latentkv::cli
