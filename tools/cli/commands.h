// The subcommands of the `latentkv` CLI. main.cc parses the flags and calls
// these with filled Options structs; each returns the process exit code.
#ifndef LATENTKV_TOOLS_CLI_COMMANDS_H_
#define LATENTKV_TOOLS_CLI_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth/tls.h"
#include "tools/bench/serve_bench.h"
#include "worker/residency/policy.h"

namespace latentkv::cli {

// Options of the engine a command runs in-process (generate --model, eval).
struct LocalEngineOptions {
  std::string model_dir;
  std::string device = "cpu";
  // auto | f32 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q2_K .. q6_K
  std::string weights_dtype = "auto";
  // f32 | q8: the CPU's activations against quantized weights
  // (kernels::ActivationQuant).
  std::string cpu_activations = "f32";
  int64_t cpu_q8_min_inputs = 2;  // with q8: BackendOptions'

  int64_t kv_memory_mb = 256;
  int32_t page_size = 16;
  std::string kv_dtype = "f32";        // f32 | bf16 | f16 | fp8_e4m3
  worker::ResidencyOptions residency;  // the --kv_* flags
};

struct SamplingFlags {
  int32_t max_tokens = 256;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
};

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int32_t port = 8000;    // coordinator's public gRPC port (0: any)
  std::string port_file;  // write host:port here once ready
  int32_t workers = 1;    // worker groups
  int32_t tp = 1;         // tensor-parallel ranks (processes) per group
  // Prefill/decode disaggregation: this many prefill-role and decode-role
  // groups in addition to `workers` mixed ones (workers may then be 0).
  int32_t prefill_workers = 0;
  int32_t decode_workers = 0;
  // Tensor-parallel ranks of each prefill / decode group (0: tp). Groups of
  // different sizes exchange KV as the group's whole (re-sharded by KV-head
  // range on arrival).
  int32_t prefill_tp = 0;
  int32_t decode_tp = 0;
  // Start latentkv-kvstore and let every worker use it as a shared prefix
  // cache (any TP sizes); its capacity in MiB.
  bool kvstore = false;
  int32_t kvstore_mb = 1024;
  // The coordinator's OpenAI-compatible HTTP API port (0: off).
  int32_t http_port = 0;
  // Prometheus /metrics (0: off): the coordinator on metrics_port, worker
  // group i's rank 0 on metrics_port + 1 + i, the kvstore after them.
  int32_t metrics_port = 0;
  // The coordinator's routing: "kv" (prefix each worker caches vs its load)
  // or "load" (least loaded), and kv routing's weight of the prefill tokens a
  // worker would compute against its in-flight prompt tokens (>= 0).
  std::string routing = "kv";
  double kv_overlap_weight = 1.0;
  // The model id of ListModels and the OpenAI API ("": the model directory
  // or file name without .gguf).
  std::string served_model_name;
  // How replies write tool calls: "auto" (from the chat template),
  // "hermes" or "llama3_json" (coordinator/http/tool_types.h).
  std::string tool_call_parser = "auto";
  // The workers' compute backend: "cpu", "cuda" or "cuda:N". With CUDA the
  // worker processes are spread over `gpus` GPUs (WorkerDevice).
  std::string device = "cpu";
  int32_t gpus = 1;
  // The coordinator's API key file (common/auth/api_keys.h); serve's own
  // readiness probe presents its first key. Empty: no authentication.
  std::string api_key_file;
  // TLS on the coordinator's public gRPC and HTTP ports (PEM chain and key;
  // both or neither), and the CA serve's own readiness probe trusts for it
  // (default: the chain itself, as for a self-signed certificate).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  // The workers' KV dtype name (what the kvstore's layout is fixed to).
  std::string kv_dtype = "f32";
  std::string bin_dir;  // where latentkv-coordinator/-worker live
  std::vector<std::string> worker_args;  // extra flags for each worker
};

// Worker groups in order: `workers` mixed, then `prefill_workers` prefill,
// then `decode_workers` decode ones.
int32_t NumGroups(const ServeOptions& o);
// Ranks of group `group` (prefill_tp / decode_tp for those roles when set,
// else tp), and the index of its rank 0 among all worker processes
// (group-major).
int32_t GroupTp(const ServeOptions& o, int32_t group);
int32_t GroupFirstProcess(const ServeOptions& o, int32_t group);

// The --device of worker process `index` (group-major: group g's rank r is
// GroupFirstProcess(g) + r): "cpu" as given; "cuda"/"cuda:N" becomes
// cuda:(N + index) % gpus, so a tensor-parallel group's ranks sit on
// distinct GPUs when its size <= gpus. InvalidArgument for a malformed
// device, gpus < 1, or a CUDA group larger than gpus (NCCL needs one GPU per
// rank).
absl::StatusOr<std::string> WorkerDevice(const ServeOptions& o, int index);

struct GenerateOptions {
  std::string server;  // host:port; empty: run the model in-process
  LocalEngineOptions local;
  std::string prompt;
  SamplingFlags sampling;
  double timeout_s = 0;  // gRPC deadline (0: none)
  std::string api_key;   // sent as "authorization: Bearer <key>" if set
  auth::ClientTls tls;   // TLS to the server (common/auth/tls.h)
};

struct EvalOptions {
  LocalEngineOptions local;
  std::string text_path;
  std::string mode = "lines";  // lines | stream
  int32_t window = 0;          // 0: the model's context
  int32_t max_lines = 0;       // 0: all
  int32_t skip_lines = 0;      // table mode: documents skipped first
  // Table mode (when non-empty): one "label:key=val,..." per configuration,
  // the first being the reference; see tools/cli/eval_table.cc.
  std::vector<std::string> configs;
  double prefix_fraction = 0.5;  // table mode: prompt share of a document
};

struct ConvertOptions {
  std::string from;  // "llama2c"
  std::string checkpoint;
  std::string tokenizer;
  std::string out;
  std::string dtype = "f32";
  std::string synthetic;  // a shape name: stories110m | llama3-8b | ...
  uint64_t seed = 1;
  // Conversions of an existing model directory (--model):
  std::string model_dir;
  std::string kv_latent;            // "d_qk=A,d_vo=B": KV-Latent
  std::string init = "calibrated";  // KV-Latent init: strided | calibrated
  bool refit = true;                // KV-Latent calibrated: refit W_o
  std::string pairs = "auto";       // KV-Latent calibrated: pair criterion
  // KV-Latent calibrated: per-layer rank allocation weight, or "off".
  std::string allocate = "relative";
  bool joint_heads = false;      // KV-Latent calibrated: one cross-head latent
  bool allocate_joint = false;   // KV-Latent: rank allocation, cross-head
  int32_t joint_group = 0;       // KV-Latent: source KV heads per latent
  int64_t distill_tokens = 0;    // KV-Latent: distillation tokens/layer
  double distill_minutes = 0;    // KV-Latent: distillation wall minutes
  int32_t distill_lines = 1000;  // KV-Latent: distillation text lines
  double distill_lr = 2e-4;      // KV-Latent: distillation Adam peak lr
  bool sequential = false;       // KV-Latent: error-carrying refit/distill
  double drift = 0.0;            // KV-Latent sequential: drift weight
  std::string sequential_target = "source";  // KV-Latent sequential target
  int32_t kv_heads = 0;       // > 0: MHA->GQA to this many KV heads
  std::string calib_text;     // calibration text (calibrated, GQA)
  int32_t calib_lines = 200;  // its first non-empty lines (0: all)
};

// `latentkv bench serve`: the load generator (tools/bench/serve_bench.h).
struct BenchServeOptions {
  std::string subcommand;  // "serve" (the only one)
  // One target (--server, --kv-cache-mode default|full|compressed) or 2+
  // "label=HOST:PORT[,kv_cache_mode=MODE]" (--compare).
  std::string server;
  std::string kv_cache_mode = "default";
  std::vector<std::string> compare;
  double request_rate = bench::kInf;  // used when sweep_rates is empty
  std::string sweep_rates;            // "1,2,4,inf": one phase per rate
  std::string goodput;                // "ttft:MS,tpot:MS,e2e:MS"
  std::string output;                 // JSON result file ("": none)
  bool plot = false;  // also OUTPUT.png via plot_bench.py beside the binary
  // Everything else (workload, concurrency, limits, client); its targets,
  // rates and slo are filled from the fields above.
  bench::ServeBenchOptions bench;
};

// `latentkv cluster-credentials`: a cluster's credentials for a deployment
// (Kubernetes: the Secret latentkv-cluster, deploy/README.md).
struct ClusterCredentialsOptions {
  std::string out_dir;  // created if missing; the four files must not exist
  int32_t days = 365;   // validity of the CA and member certificate, >= 1
};

// `latentkv health`: one grpc.health.v1 Check, exit 0 when SERVING (1
// otherwise, 2 for bad flags). What Kubernetes exec probes run against the
// mutual-TLS internal ports, which its built-in gRPC probe cannot speak.
struct HealthOptions {
  std::string server;      // host:port
  std::string service;     // "" (overall), "liveness" or "readiness"
  double timeout_s = 2;    // deadline of the call, > 0
  auth::TlsFiles cluster;  // an internal port: the member credentials
  std::string cluster_tls_name = "latentkv-cluster";
  auth::ClientTls tls;  // a public port: TLS (when no cluster files)
};

// The files of WriteClusterCredentials, named as the Secret's keys.
struct ClusterCredentialFiles {
  std::string secret_file;  // DIR/secret: --cluster_secret_file
  auth::TlsFiles tls;       // DIR/tls.crt, DIR/tls.key, DIR/ca.crt
};
// Writes a fresh cluster secret and a throwaway CA's member certificate
// (subjectAltName latentkv-cluster, 127.0.0.1, ::1) into `dir`, all mode
// 0600. The CA key is never written: no further member can be issued.
// AlreadyExists (nothing written) when any of the files exists.
absl::StatusOr<ClusterCredentialFiles> WriteClusterCredentials(
    const std::string& dir, absl::Duration validity);

int Serve(const ServeOptions& options);
int ClusterCredentials(const ClusterCredentialsOptions& options);
int Health(const HealthOptions& options);
int BenchServe(const BenchServeOptions& options);
int Generate(const GenerateOptions& options);
int Eval(const EvalOptions& options);
int EvalTable(const EvalOptions& options);
int Convert(const ConvertOptions& options);
// Prints the model's config, per-layer KV shapes and bytes per token in
// `kv_dtype` (f32 | bf16 | f16 | fp8_e4m3), and the residency plan.
int Inspect(const std::string& model_dir, const std::string& weights_dtype,
            const std::string& kv_dtype,
            const worker::ResidencyOptions& residency);

}  // namespace latentkv::cli

#endif  // LATENTKV_TOOLS_CLI_COMMANDS_H_
