// `latentkv serve`: a whole cluster on this machine: one coordinator process
// and N worker processes on loopback (plus a kvstore), supervised
// (tools/cli/supervisor.h: a dead worker group or kvstore restarts with
// back-off, a dead coordinator shuts the cluster down, no child outlives
// serve) until SIGINT/SIGTERM, then a drain: the coordinator stops taking
// requests and finishes those in flight, then the workers stop.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/address_file.h"
#include "common/auth/api_keys.h"
#include "common/auth/cluster_secret.h"
#include "common/signals.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "tools/cli/commands.h"
#include "tools/cli/supervisor.h"

namespace latentkv::cli {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// Waits for `path` to appear (written by a child once it serves); "" when
// `alive` turns false or the time runs out.
std::string WaitForFile(const std::string& path,
                        const std::function<bool()>& alive, int timeout_s) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) return line;
    if (!alive()) return "";
    std::this_thread::sleep_for(milliseconds(20));
  }
  return "";
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
  const std::string parent_flag =
      absl::StrCat("--exit_with_parent_pid=", getpid());
  Supervisor sup;
  auto alive = [&sup](int unit) {
    return [&sup, unit] {
      sup.Poll(Supervisor::Clock::now());
      return !sup.pids(unit).empty() && sup.failed().empty();
    };
  };
  const int coord = sup.Add(
      "the coordinator",
      [&](int) {
        return std::vector<std::vector<std::string>>{
            {(bin / "latentkv-coordinator").string(), "--model=" + o.model_dir,
             "--host=" + o.host, absl::StrCat("--port=", o.port),
             "--port_file=" + coord_file,
             absl::StrCat("--http_port=", o.http_port), metrics_port(0),
             "--routing=" + o.routing,
             absl::StrCat("--kv_overlap_weight=", o.kv_overlap_weight),
             "--served_model_name=" + o.served_model_name,
             "--api_key_file=" + o.api_key_file, secret_flag, parent_flag}};
      },
      /*critical=*/true);
  const std::string address = WaitForFile(coord_file, alive(coord), 60);
  auto fail = [&](const char* what) {
    std::fprintf(stderr, "latentkv serve: %s\n", what);
    sup.StopAll(milliseconds(1000));
    fs::remove_all(run_dir);
    return 1;
  };
  if (address.empty()) return fail("the coordinator did not start");
  std::string store_address;
  if (o.kvstore) {
    // Restarts keep the first incarnation's port: workers know the address.
    const std::string store_file = (run_dir / "kvstore.addr").string();
    const int store = sup.Add(
        "the kvstore",
        [&](int incarnation) {
          std::string port = "0";
          if (incarnation > 0)
            port = store_address.substr(store_address.rfind(':') + 1);
          return std::vector<std::vector<std::string>>{
              {(bin / "latentkv-kvstore").string(), "--host=" + o.host,
               "--port=" + port, "--port_file=" + store_file,
               absl::StrCat("--capacity_mb=", o.kvstore_mb), secret_flag,
               parent_flag, metrics_port(1 + groups)}};
        },
        /*critical=*/false);
    store_address = WaitForFile(store_file, alive(store), 60);
    if (store_address.empty()) return fail("the kvstore did not start");
  }
  // Each worker group is a tensor-parallel group of o.tp processes: rank 0
  // serves and registers; the others follow it (Gloo or NCCL rendezvous in
  // run_dir, a fresh one per incarnation). The group restarts as a whole.
  std::vector<int> worker_units;
  for (int i = 0; i < groups; ++i) {
    const std::string role = i < o.workers                       ? "mixed"
                             : i < o.workers + o.prefill_workers ? "prefill"
                                                                 : "decode";
    worker_units.push_back(sup.Add(
        absl::StrCat("worker group ", role, "-", i),
        [&, i, role](int incarnation) {
          const fs::path rendezvous =
              run_dir / absl::StrCat("tp-", i, "-", incarnation);
          if (o.tp > 1) fs::create_directories(rendezvous);
          std::vector<std::vector<std::string>> ranks;
          for (int r = 0; r < o.tp; ++r) {
            std::vector<std::string> args = {
                (bin / "latentkv-worker").string(),
                "--model=" + o.model_dir,
                "--host=" + o.host,
                "--port=0",
                absl::StrCat("--worker_id=", role, "-", i),
                "--role=" + role,
                "--device=" + devices[i * o.tp + r],
                secret_flag,
                parent_flag};
            if (r == 0) {
              args.push_back("--coordinator=" + address);
              args.push_back(metrics_port(1 + i));
            }
            if (o.tp > 1) {
              args.push_back(absl::StrCat("--tp_size=", o.tp));
              args.push_back(absl::StrCat("--tp_rank=", r));
              args.push_back("--tp_rendezvous=" + rendezvous.string());
              args.push_back(
                  absl::StrCat("--tp_group=group-", i, "-", incarnation));
            }
            if (!store_address.empty()) {
              args.push_back("--kvstore=" + store_address);
            }
            args.insert(args.end(), o.worker_args.begin(), o.worker_args.end());
            ranks.push_back(std::move(args));
          }
          return ranks;
        },
        /*critical=*/false));
  }
  // Ready when every worker has registered; a child exiting meanwhile is a
  // failed start (nothing is retried before the cluster has come up once).
  const std::string probe_key =
      o.api_key_file.empty() ? "" : auth::FirstApiKey(o.api_key_file);
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
    if (!sup.Poll(Supervisor::Clock::now())) {
      return fail("the coordinator exited during start-up");
    }
    for (int u : worker_units) {
      if (sup.pids(u).empty()) return fail("a worker exited during start-up");
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  if (!ready) return fail("workers did not register in time");
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
  // Supervise until a signal: restart what dies, stop if the coordinator
  // does (a restart would lose its routing state: serve's own supervisor
  // restarts the whole cluster).
  while (WaitForTerminationSignalFor(200) == 0) {
    if (!sup.Poll(Supervisor::Clock::now())) {
      std::fprintf(stderr, "latentkv serve: %s exited: stopping\n",
                   sup.failed().c_str());
      sup.StopAll(milliseconds(35000));
      fs::remove_all(run_dir);
      return 1;
    }
  }
  std::fprintf(stderr, "latentkv serve: draining\n");
  sup.Stop(coord, milliseconds(35000));  // finishes in-flight requests first
  sup.StopAll(milliseconds(35000));
  fs::remove_all(run_dir);
  std::fprintf(stderr, "latentkv serve: stopped\n");
  return 0;
}

}  // namespace latentkv::cli
