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
#include "common/auth/cluster_tls.h"
#include "common/auth/tls.h"
#include "common/dtype.h"
#include "common/signals.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/proto_convert.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "model/gguf_loader.h"
#include "tools/cli/commands.h"
#include "tools/cli/supervisor.h"
#include "worker/engine/model_runner.h"
#include "worker/server/prefix_cache.h"

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

// The kvstore's layout, fixed at its start (--layout, one-line text format)
// to what this cluster's workers use, instead of whatever the first Put
// names.
absl::StatusOr<std::string> StoreLayoutText(const ServeOptions& o) {
  auto config = model::LoadModelConfig(o.model_dir);
  if (!config.ok()) return config.status();
  const std::optional<DType> dtype = ParseDType(o.kv_dtype);
  if (!dtype || !IsKvDType(*dtype)) {
    return absl::InvalidArgumentError("unknown KV dtype " + o.kv_dtype);
  }
  worker::PrefixCacheOptions po;
  po.model_id = worker::StoreModelId(o.model_dir);
  po.dtype = *dtype;
  latentkv::v1::KvLayout layout;
  kvstore::ToProto(worker::StoreLayout(po, worker::KvShapesOf(*config)),
                   &layout);
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  std::string text;
  printer.PrintToString(layout, &text);
  return text;
}

}  // namespace

int Serve(const ServeOptions& o) {
  if (o.model_dir.empty()) {
    std::fprintf(stderr, "--model DIR is required\n");
    return 2;
  }
  const int groups = NumGroups(o);
  std::vector<std::string> devices;  // per worker process, group-major
  for (int k = 0; k < GroupFirstProcess(o, groups); ++k) {
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
  // The cluster's credentials: a secret every internal service wants and a
  // throwaway CA's member certificate for mutual TLS; nothing outside the
  // cluster has either.
  auto credentials =
      WriteClusterCredentials(run_dir.string(), absl::Hours(24 * 3650));
  if (!credentials.ok()) {
    std::fprintf(stderr, "latentkv serve: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 1;
  }
  const std::string& secret_file = credentials->secret_file;
  const auth::TlsFiles* cluster_tls = &credentials->tls;
  const std::string internal_file =
      (run_dir / "coordinator-internal.addr").string();
  const std::string coord_file = (run_dir / "coordinator.addr").string();
  // Metrics ports: the coordinator, then each group's rank 0, then the store.
  auto metrics_port = [&](int index) {
    return absl::StrCat("--metrics_port=",
                        o.metrics_port > 0 ? o.metrics_port + index : 0);
  };
  // What every child gets: the cluster's credentials, and to die with serve.
  auto child = [&](std::vector<std::string> args) {
    for (std::string flag :
         {"--cluster_secret_file=" + secret_file,
          "--cluster_ca_file=" + cluster_tls->ca_file,
          "--cluster_cert_file=" + cluster_tls->cert_file,
          "--cluster_key_file=" + cluster_tls->key_file,
          absl::StrCat("--exit_with_parent_pid=", getpid())}) {
      args.push_back(std::move(flag));
    }
    return args;
  };
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
            child({(bin / "latentkv-coordinator").string(),
                   "--model=" + o.model_dir, "--host=" + o.host,
                   absl::StrCat("--port=", o.port), "--port_file=" + coord_file,
                   "--internal_port_file=" + internal_file,
                   absl::StrCat("--http_port=", o.http_port), metrics_port(0),
                   "--routing=" + o.routing,
                   absl::StrCat("--kv_overlap_weight=", o.kv_overlap_weight),
                   "--served_model_name=" + o.served_model_name,
                   "--tool_call_parser=" + o.tool_call_parser,
                   "--api_key_file=" + o.api_key_file,
                   "--tls_cert=" + o.tls_cert, "--tls_key=" + o.tls_key})};
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
  // Workers register on the coordinator's internal port (written first).
  const std::string internal_address =
      WaitForFile(internal_file, alive(coord), 5);
  if (internal_address.empty()) return fail("the coordinator did not start");
  std::string store_address;
  if (o.kvstore) {
    auto layout = StoreLayoutText(o);
    if (!layout.ok()) {
      std::fprintf(stderr, "latentkv serve: kvstore layout: %s\n",
                   std::string(layout.status().message()).c_str());
      return fail("cannot start the kvstore");
    }
    // Restarts keep the first incarnation's port: workers know the address.
    const std::string store_file = (run_dir / "kvstore.addr").string();
    // The supervisor keeps this and calls it again on every restart, after
    // this block: the block's locals are captured by value.
    const int store = sup.Add(
        "the kvstore",
        [&, store_file, layout = *layout](int incarnation) {
          std::string port = "0";
          if (incarnation > 0)
            port = store_address.substr(store_address.rfind(':') + 1);
          return std::vector<std::vector<std::string>>{
              child({(bin / "latentkv-kvstore").string(), "--host=" + o.host,
                     "--port=" + port, "--port_file=" + store_file,
                     absl::StrCat("--capacity_mb=", o.kvstore_mb),
                     "--layout=" + layout, metrics_port(1 + groups)})};
        },
        /*critical=*/false);
    store_address = WaitForFile(store_file, alive(store), 60);
    if (store_address.empty()) return fail("the kvstore did not start");
  }
  // Each worker group is a tensor-parallel group of GroupTp processes: rank
  // 0 serves and registers; the others follow it (Gloo or NCCL rendezvous in
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
          const int tp = GroupTp(o, i);
          if (tp > 1) fs::create_directories(rendezvous);
          std::vector<std::vector<std::string>> ranks;
          for (int r = 0; r < tp; ++r) {
            std::vector<std::string> args = {
                (bin / "latentkv-worker").string(),
                "--model=" + o.model_dir,
                "--host=" + o.host,
                "--port=0",
                absl::StrCat("--worker_id=", role, "-", i),
                "--role=" + role,
                "--device=" + devices[GroupFirstProcess(o, i) + r]};
            args = child(std::move(args));
            if (r == 0) {
              args.push_back("--coordinator=" + internal_address);
              args.push_back(metrics_port(1 + i));
            }
            if (tp > 1) {
              args.push_back(absl::StrCat("--tp_size=", tp));
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
  auth::ClientTls probe_tls;
  if (!o.tls_cert.empty()) {
    // Trust what the coordinator presents: its CA, or the chain itself.
    probe_tls.enabled = true;
    probe_tls.ca_file = o.tls_ca.empty() ? o.tls_cert : o.tls_ca;
    auto chain = auth::ReadPemFile(o.tls_cert);
    const std::vector<std::string> names =
        chain.ok() ? auth::CertDnsNames(*chain) : std::vector<std::string>();
    if (!names.empty()) probe_tls.server_name = names[0];
  }
  auto channel = auth::NewClientChannel(address, probe_tls);
  if (!channel.ok()) {
    std::fprintf(stderr, "latentkv serve: --tls-ca: %s\n",
                 std::string(channel.status().message()).c_str());
    return fail("cannot probe the coordinator");
  }
  auto stub = latentkv::v1::Generation::NewStub(*channel);
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
    std::fprintf(stderr, "latentkv serve: OpenAI HTTP API on %s://%s:%d/v1\n",
                 o.tls_cert.empty() ? "http" : "https", o.host.c_str(),
                 o.http_port);
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
