// latentkv: the command-line entry point.
//
//   latentkv serve    --model DIR [--port P] [--workers N]
//                     [--routing kv|load] [--kv-overlap-weight W]
//   latentkv generate (--server HOST:PORT | --model DIR) --prompt S [sampling]
//   latentkv eval     --model DIR --text FILE [--mode lines|stream] [--window
//   N] latentkv convert  --from llama2c --checkpoint X.bin --tokenizer T.bin
//   latentkv convert  --from gguf --checkpoint X.gguf --out DIR [--dtype bf16]
//   --out DIR latentkv convert  --synthetic SHAPE --out DIR [--dtype bf16]
//   latentkv convert  --model DIR|FILE.gguf --out DIR --kv-latent d_qk=A,d_vo=B
//                     [--init strided|calibrated] [--calib-text FILE]
//                     (d_qk=A,d_vo=B,rope=R: partial rotary) [--refit=false]
//                     [--pairs auto|rotation|search|...]
//                     [--allocate off|residual|relative|absolute]
//                     [--joint_heads=false | --joint_group G]
//                     [--distill-tokens N | --distill-minutes M]
//                     [--sequential [--drift W]]
//   latentkv convert  --model DIR --out DIR --kv-heads N --calib-text FILE
//   latentkv inspect  DIR
//   latentkv cluster-credentials --out DIR [--days N]
//   latentkv health   --server HOST:PORT [--service liveness|readiness]
//                     [--cluster-ca-file F --cluster-cert-file F
//                      --cluster-key-file F | --tls-ca F]
//   latentkv bench serve --server HOST:PORT --num-requests N --concurrency C
//                        [--request-rate R | --sweep-rates 1,2,inf]
//                        [--compare label=HOST:PORT[,kv_cache_mode=M] ...]
//                        [--prefix-groups G --prefix-len L]
//                        --output FILE.json [--plot]
//
// Flags may be spelled with dashes or underscores (--max-tokens, --max_tokens).
// Every flag is defined here, once, with its default in the help text.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/auth/api_keys.h"
#include "common/flags_help.h"
#include "common/signals.h"
#include "tools/cli/commands.h"
#include "worker/residency/flags.h"

ABSL_FLAG(std::string, model, "", "Model directory");
ABSL_FLAG(std::string, server, "",
          "generate, bench serve: host:port of a latentkv server");
ABSL_FLAG(std::string, host, "127.0.0.1", "serve: address to listen on");
ABSL_FLAG(int, port, 8000, "serve: public gRPC port (0: any free port)");
ABSL_FLAG(std::string, port_file, "", "serve: write host:port here once ready");
ABSL_FLAG(int, workers, -1,
          "serve: mixed worker groups (-1: 1, or 0 with --prefill_workers / "
          "--decode_workers)");
ABSL_FLAG(int, tp, 1, "serve: tensor-parallel ranks (processes) per worker");
ABSL_FLAG(int, prefill_workers, 0,
          "serve: prefill-role worker groups (prompts' KV is computed there "
          "and streamed to decode workers)");
ABSL_FLAG(int, decode_workers, 0, "serve: decode-role worker groups");
ABSL_FLAG(int, prefill_tp, 0,
          "serve: tensor-parallel ranks per prefill group (0: --tp)");
ABSL_FLAG(int, decode_tp, 0,
          "serve: tensor-parallel ranks per decode group (0: --tp)");
ABSL_FLAG(bool, kvstore, false,
          "serve: start latentkv-kvstore as the workers' shared prefix cache "
          "(groups of any TP size share it)");
ABSL_FLAG(int, kvstore_mb, 1024, "serve: latentkv-kvstore capacity, MiB");
ABSL_FLAG(int, http_port, 0,
          "serve: OpenAI-compatible HTTP API port of the coordinator (0: off)");
ABSL_FLAG(int, metrics_port, 0,
          "serve: Prometheus /metrics of the coordinator on this port, worker "
          "group i on port+1+i, the kvstore after them (0: off)");
ABSL_FLAG(std::string, routing, "kv",
          "serve: coordinator routing, kv (the prompt prefix each worker "
          "caches vs its load) | load (least loaded)");
ABSL_FLAG(double, kv_overlap_weight, 1.0,
          "serve --routing kv: weight of the prefill tokens a worker would "
          "compute against the prompt tokens it has in flight (>= 0)");
ABSL_FLAG(std::string, served_model_name, "",
          "serve: model id of ListModels and the OpenAI API (default: the "
          "--model directory or file name without .gguf)");
ABSL_FLAG(std::string, tool_call_parser, "auto",
          "serve: how replies write tool calls: auto (from the chat "
          "template), hermes or llama3_json");
ABSL_FLAG(std::string, bin_dir, "",
          "serve: directory of latentkv-coordinator/-worker (default: beside "
          "latentkv)");
ABSL_FLAG(std::string, device, "cpu",
          "Compute backend: cpu | cuda | cuda:<ordinal> (cuda = cuda:0)");
ABSL_FLAG(std::string, api_key_file, "",
          "serve: the coordinator's API key file (one key per line; clients "
          "send \"Authorization: Bearer <key>\"); generate --server: present "
          "its first key");
ABSL_FLAG(std::string, api_key, "",
          "generate --server: the API key to present (else "
          "$LATENTKV_API_KEY, else --api_key_file's first key)");
ABSL_FLAG(std::string, tls_cert, "",
          "serve: TLS certificate chain (PEM) of the coordinator's public "
          "gRPC and HTTP ports, with --tls-key");
ABSL_FLAG(std::string, tls_key, "", "serve: the private key of --tls-cert");
ABSL_FLAG(std::string, tls_ca, "",
          "generate --server: connect with TLS, trusting this CA (PEM); "
          "serve: the CA of --tls-cert for serve's own probe (default: the "
          "chain itself, e.g. a self-signed certificate)");
ABSL_FLAG(bool, tls, false,
          "generate --server: connect with TLS (the system's CAs unless "
          "--tls-ca)");
ABSL_FLAG(std::string, tls_server_name, "",
          "generate --server with TLS: the name expected in the server's "
          "certificate (default: the host of --server)");
ABSL_FLAG(int, gpus, 1,
          "serve --device=cuda: GPUs to spread the worker processes over "
          "(process k of the group-major order gets cuda:k % gpus; a "
          "tensor-parallel group needs --tp <= --gpus)");
ABSL_FLAG(std::string, weights_dtype, "auto",
          "Weight matrices in memory: auto (f32 for safetensors models, as "
          "stored for GGUF) | f32 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | "
          "q2_K | q3_K | q4_K | q5_K | q6_K (the k-quants need widths that "
          "are multiples of 256)");
ABSL_FLAG(std::string, cpu_activations, "f32",
          "CPU products with quantized weights: f32 (exact: f32 activations "
          "against the dequantized weights) | q8 (activations quantized to "
          "int8 per block of 32, integer dot products; error bound in "
          "kernels/cpu/quant_q8.h, perplexity cost in docs/QUALITY.md)");
ABSL_FLAG(int, cpu_q8_min_inputs, 2,
          "--cpu_activations=q8: products with fewer inputs (tokens in the "
          "step) stay exact; 1 quantizes every product, decode included");
ABSL_FLAG(int, kv_memory_mb, 256, "KV cache memory bound per worker, MiB");
ABSL_FLAG(int, page_size, 16, "Token slots per KV page");
ABSL_FLAG(std::string, kv_dtype, "f32",
          "K/V element type in the cache: f32 | bf16 | f16 | fp8_e4m3 (fp8 "
          "with static per-(layer, KV head) scales bounded from the weights)");
ABSL_FLAG(int, max_batch, 64, "serve: sequences per engine step");
ABSL_FLAG(std::string, prompt, "", "generate: the prompt");
ABSL_FLAG(int, max_tokens, 256, "generate: maximum new tokens");
ABSL_FLAG(float, temperature, 0.0f,
          "generate: sampling temperature (0 = greedy)");
ABSL_FLAG(float, top_p, 1.0f, "generate: nucleus probability mass");
ABSL_FLAG(int, top_k, 0, "generate: keep the k most likely tokens (0 = all)");
ABSL_FLAG(uint64_t, seed, 0,
          "generate: sampling seed; bench serve: workload seed (prompts, "
          "lengths, arrival times)");
ABSL_FLAG(double, timeout, 0,
          "generate, bench serve: per-request deadline in seconds (0 = none); "
          "health: deadline of the check (0: 2 s)");
ABSL_FLAG(std::string, service, "",
          "health: the grpc.health.v1 service to check: \"\" (overall), "
          "liveness or readiness");
ABSL_FLAG(int, days, 365, "cluster-credentials: validity in days (>= 1)");
ABSL_FLAG(std::string, cluster_ca_file, "",
          "health: an internal (mutual TLS) port's cluster CA; with "
          "--cluster-cert-file and --cluster-key-file, the member "
          "credentials (cluster-credentials writes them)");
ABSL_FLAG(std::string, cluster_cert_file, "",
          "health: the member certificate to present");
ABSL_FLAG(std::string, cluster_key_file, "",
          "health: the key of --cluster-cert-file");
ABSL_FLAG(std::string, text, "", "eval: text file");
ABSL_FLAG(std::string, mode, "lines", "eval: lines | stream");
ABSL_FLAG(int, window, 0, "eval: context window (0 = the model's)");
ABSL_FLAG(int, max_lines, 0, "eval: documents to read (0 = all)");
ABSL_FLAG(int, skip_lines, 0,
          "eval --config: documents to skip first (held-out text)");
ABSL_FLAG(double, prefix_fraction, 0.5,
          "eval --config: share of each document used as the prompt");
ABSL_FLAG(std::string, from, "", "convert: source format (llama2c | gguf)");
ABSL_FLAG(std::string, checkpoint, "",
          "convert: the source checkpoint (llama2.c .bin, or a .gguf file or "
          "a directory holding one)");
ABSL_FLAG(std::string, tokenizer, "", "convert: llama2.c tokenizer.bin");
ABSL_FLAG(std::string, out, "",
          "convert: output model directory; cluster-credentials: output "
          "directory");
ABSL_FLAG(std::string, dtype, "f32", "convert: stored dtype f32 | bf16 | f16");
ABSL_FLAG(std::string, synthetic, "",
          "convert: random weights with a named shape (stories15m, stories42m, "
          "stories110m, llama3-1b)");
ABSL_FLAG(std::string, kv_latent, "",
          "convert --model DIR: KV-Latent head dims, d_qk=A,d_vo=B");
ABSL_FLAG(std::string, init, "calibrated",
          "convert --kv-latent: strided (the paper's init) | calibrated");
ABSL_FLAG(bool, refit, true,
          "convert --kv-latent calibrated: refit W_o by least squares on the "
          "calibration activations (false: the analytic absorption only)");
ABSL_FLAG(std::string, pairs, "auto",
          "convert --kv-latent calibrated: how rotary pairs are kept: auto "
          "(rotation with rope < d_qk, else search) | rotation | search | "
          "logit-variance | attention | magnitude");
ABSL_FLAG(std::string, allocate, "relative",
          "convert --kv-latent calibrated: per-layer rank allocation under the "
          "same KV bytes, weighting each layer's calibrated error by the "
          "residual stream (residual), its own output (relative) or not "
          "(absolute); off: every layer d_qk/d_vo. Default relative");
ABSL_FLAG(bool, joint_heads, true,
          "convert --kv-latent calibrated: one latent KV head per layer "
          "across the source's KV heads (the same bytes; num_kv_heads 1, so "
          "no tensor parallelism: --joint_heads=false for per-head latents)");
ABSL_FLAG(bool, allocate_joint, false,
          "convert --kv-latent with --joint_heads: per-layer rank allocation "
          "of the cross-head latents too, weighted as --allocate says (off by "
          "default: it helps stories260K, not SmolLM2)");
ABSL_FLAG(int, joint_group, 0,
          "convert --kv-latent with --joint_heads: source KV heads per "
          "cross-head latent (0: all, one latent KV head per layer; G: K/G "
          "latent heads, which tensor parallelism splits when --tp divides "
          "K/G)");
ABSL_FLAG(int64_t, distill_tokens, 0,
          "convert --kv-latent calibrated: local distillation, training "
          "tokens per layer (0: off unless --distill-minutes)");
ABSL_FLAG(double, distill_minutes, 0,
          "convert --kv-latent calibrated: local distillation, wall minutes "
          "for all layers (0: off unless --distill-tokens)");
ABSL_FLAG(int, distill_lines, 1000,
          "convert --kv-latent: distillation text, the calibration file's "
          "first non-empty lines");
ABSL_FLAG(double, distill_lr, 2e-4,
          "convert --kv-latent: distillation's peak Adam learning rate");
ABSL_FLAG(bool, sequential, false,
          "convert --kv-latent calibrated: refit (and distil) the layers in "
          "order on the converted model's own hidden states, so each corrects "
          "what the layers before it changed");
ABSL_FLAG(double, drift, 0.0,
          "convert --kv-latent --sequential: weight of the converted stream's "
          "difference from the source's in each layer's target (0: the source "
          "layer's output; 1: cancel the whole difference)");
ABSL_FLAG(std::string, sequential_target, "source",
          "convert --kv-latent --sequential: each layer's target, the source "
          "layer on the source's hidden states (source) or on the converted "
          "model's own (stream)");
ABSL_FLAG(std::string, calib_text, "",
          "convert --model DIR: calibration text, one document per line");
ABSL_FLAG(int, calib_lines, 200,
          "convert --model DIR: calibration lines from the start (0: all)");
ABSL_FLAG(int, kv_heads, 0,
          "convert --model DIR: MHA->GQA, the new number of KV heads");

// bench serve (the load generator); also --server, --seed, --temperature,
// --timeout and --compare (repeatable, collected by Normalise).
ABSL_FLAG(int64_t, num_requests, 100,
          "bench serve: requests per phase (0: until --duration-s)");
ABSL_FLAG(double, duration_s, 0,
          "bench serve: stop sending after this many seconds per phase (0: "
          "no limit)");
ABSL_FLAG(int, concurrency, 64, "bench serve: streams in flight at most");
ABSL_FLAG(double, request_rate, INFINITY,
          "bench serve: Poisson/gamma arrival rate, req/s (inf: all at once, "
          "bounded by --concurrency)");
ABSL_FLAG(double, burstiness, 1.0,
          "bench serve: gamma shape of inter-arrival times (1 = Poisson, < 1 "
          "burstier)");
ABSL_FLAG(std::string, sweep_rates, "",
          "bench serve: comma-separated rates, one phase each (e.g. "
          "1,2,4,inf)");
ABSL_FLAG(std::string, dataset, "",
          "bench serve: text file, one passage per line, for prompts (empty: "
          "random token ids)");
ABSL_FLAG(int, input_len, 128, "bench serve: prompt tokens (BOS included)");
ABSL_FLAG(int, output_len, 128, "bench serve: output tokens per request");
ABSL_FLAG(double, input_len_range, 0,
          "bench serve: prompt lengths uniform in len*[1-r, 1+r]");
ABSL_FLAG(double, output_len_range, 0,
          "bench serve: output lengths uniform in len*[1-r, 1+r]");
ABSL_FLAG(int, prefix_groups, 0,
          "bench serve: shared prefixes (system prompts, histories): each "
          "prompt is one of G seeded prefixes + its own --input-len suffix "
          "(0: off)");
ABSL_FLAG(int, prefix_len, 0,
          "bench serve --prefix-groups: tokens of each shared prefix (BOS "
          "included)");
ABSL_FLAG(bool, ignore_eos, true,
          "bench serve: generate past EOS so outputs have the asked length");
ABSL_FLAG(std::string, kv_cache_mode, "default",
          "bench serve --server: default | full | compressed");
ABSL_FLAG(std::string, goodput, "",
          "bench serve: SLOs for goodput, e.g. ttft:500,tpot:50 (ms; also "
          "e2e:MS)");
ABSL_FLAG(std::string, output, "", "bench serve: JSON result file");
ABSL_FLAG(bool, plot, false,
          "bench serve: also draw OUTPUT.png with plot_bench.py (matplotlib)");
ABSL_FLAG(bool, progress, true, "bench serve: live progress line on stderr");
ABSL_FLAG(int, channels, 1, "bench serve: HTTP/2 connections per target");
ABSL_FLAG(int, client_threads, 1,
          "bench serve: threads draining the client's completion queue");
ABSL_FLAG(bool, save_token_ids, false,
          "bench serve: keep each request's token ids in the JSON");

namespace lk = latentkv;

namespace {

// --foo-bar[=v] -> --foo_bar[=v]; collects --stop, --config and --compare
// values (repeatable, may contain commas) into `stops`, `configs` and
// `compares`.
std::vector<std::string> Normalise(int argc, char** argv,
                                   std::vector<std::string>* stops,
                                   std::vector<std::string>* configs,
                                   std::vector<std::string>* compares) {
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      const size_t eq = a.find('=');
      for (size_t j = 2; j < std::min(eq, a.size()); ++j) {
        if (a[j] == '-') a[j] = '_';
      }
      if (a == "--stop" && i + 1 < argc) {
        stops->push_back(argv[++i]);
        continue;
      }
      if (a.rfind("--stop=", 0) == 0) {
        stops->push_back(a.substr(7));
        continue;
      }
      if (a == "--config" && i + 1 < argc) {
        configs->push_back(argv[++i]);
        continue;
      }
      if (a.rfind("--config=", 0) == 0) {
        configs->push_back(a.substr(9));
        continue;
      }
      if (a == "--compare" && i + 1 < argc) {
        compares->push_back(argv[++i]);
        continue;
      }
      if (a.rfind("--compare=", 0) == 0) {
        compares->push_back(a.substr(10));
        continue;
      }
    }
    out.push_back(a);
  }
  return out;
}

lk::cli::LocalEngineOptions Local() {
  lk::cli::LocalEngineOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model);
  o.device = absl::GetFlag(FLAGS_device);
  o.weights_dtype = absl::GetFlag(FLAGS_weights_dtype);
  o.cpu_activations = absl::GetFlag(FLAGS_cpu_activations);
  o.cpu_q8_min_inputs = absl::GetFlag(FLAGS_cpu_q8_min_inputs);
  o.kv_memory_mb = absl::GetFlag(FLAGS_kv_memory_mb);
  o.page_size = absl::GetFlag(FLAGS_page_size);
  o.kv_dtype = absl::GetFlag(FLAGS_kv_dtype);
  auto residency = lk::worker::ResidencyOptionsFromFlags();
  if (!residency.ok()) {
    std::fprintf(stderr, "%s\n", residency.status().ToString().c_str());
    std::exit(2);
  }
  o.residency = *residency;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "latentkv <serve|generate|eval|convert|inspect|bench serve|health|"
      "cluster-credentials> [flags]; --help for flags");
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(
        stderr,
        "usage: latentkv <serve|generate|eval|convert|inspect|bench serve|"
        "health|cluster-credentials> [flags]\n");
    return 2;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> stops;
  std::vector<std::string> configs;
  std::vector<std::string> compares;
  std::vector<std::string> args =
      Normalise(argc, argv, &stops, &configs, &compares);
  args.erase(args.begin() + 1);  // the subcommand
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  if (cmd == "serve") lk::BlockTerminationSignals();
  lk::ConfigureFlagsHelp();
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());

  if (cmd == "serve") {
    lk::cli::ServeOptions o;
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.host = absl::GetFlag(FLAGS_host);
    o.port = absl::GetFlag(FLAGS_port);
    o.port_file = absl::GetFlag(FLAGS_port_file);
    o.workers = absl::GetFlag(FLAGS_workers);
    o.tp = absl::GetFlag(FLAGS_tp);
    o.prefill_tp = absl::GetFlag(FLAGS_prefill_tp);
    o.decode_tp = absl::GetFlag(FLAGS_decode_tp);
    o.prefill_workers = absl::GetFlag(FLAGS_prefill_workers);
    o.decode_workers = absl::GetFlag(FLAGS_decode_workers);
    o.kvstore = absl::GetFlag(FLAGS_kvstore);
    o.kvstore_mb = absl::GetFlag(FLAGS_kvstore_mb);
    o.http_port = absl::GetFlag(FLAGS_http_port);
    o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
    o.routing = absl::GetFlag(FLAGS_routing);
    o.kv_overlap_weight = absl::GetFlag(FLAGS_kv_overlap_weight);
    o.served_model_name = absl::GetFlag(FLAGS_served_model_name);
    o.tool_call_parser = absl::GetFlag(FLAGS_tool_call_parser);
    if (o.routing != "kv" && o.routing != "load") {
      std::fprintf(stderr, "--routing must be kv or load, not %s\n",
                   o.routing.c_str());
      return 2;
    }
    if (!(o.kv_overlap_weight >= 0) || std::isinf(o.kv_overlap_weight)) {
      std::fprintf(stderr, "--kv-overlap-weight must be a finite >= 0\n");
      return 2;
    }
    if (o.workers < 0) {
      o.workers = o.prefill_workers + o.decode_workers > 0 ? 0 : 1;
    }
    if (o.prefill_workers < 0 || o.decode_workers < 0 || o.workers < 0 ||
        o.workers + o.decode_workers == 0 ||
        (o.prefill_workers > 0) != (o.decode_workers > 0)) {
      std::fprintf(stderr,
                   "serve needs mixed or decode workers, and prefill and "
                   "decode workers together\n");
      return 2;
    }
    if (o.tp < 1 || o.prefill_tp < 0 || o.decode_tp < 0) {
      std::fprintf(stderr,
                   "--tp must be >= 1, --prefill_tp and --decode_tp >= 0\n");
      return 2;
    }
    o.bin_dir = absl::GetFlag(FLAGS_bin_dir);
    o.device = absl::GetFlag(FLAGS_device);
    o.gpus = absl::GetFlag(FLAGS_gpus);
    o.api_key_file = absl::GetFlag(FLAGS_api_key_file);
    o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
    o.tls_key = absl::GetFlag(FLAGS_tls_key);
    o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
    o.kv_dtype = absl::GetFlag(FLAGS_kv_dtype);
    o.worker_args = {
        "--weights_dtype=" + absl::GetFlag(FLAGS_weights_dtype),
        "--cpu_activations=" + absl::GetFlag(FLAGS_cpu_activations),
        "--cpu_q8_min_inputs=" +
            std::to_string(absl::GetFlag(FLAGS_cpu_q8_min_inputs)),
        "--kv_memory_mb=" + std::to_string(absl::GetFlag(FLAGS_kv_memory_mb)),
        "--page_size=" + std::to_string(absl::GetFlag(FLAGS_page_size)),
        "--kv_dtype=" + absl::GetFlag(FLAGS_kv_dtype),
        "--max_batch=" + std::to_string(absl::GetFlag(FLAGS_max_batch))};
    for (std::string& a : lk::worker::ResidencyFlagArgs()) {
      o.worker_args.push_back(std::move(a));
    }
    return lk::cli::Serve(o);
  }
  if (cmd == "generate") {
    lk::cli::GenerateOptions o;
    o.server = absl::GetFlag(FLAGS_server);
    o.local = Local();
    o.prompt = absl::GetFlag(FLAGS_prompt);
    o.api_key = absl::GetFlag(FLAGS_api_key);
    if (o.api_key.empty()) {
      const char* env = std::getenv("LATENTKV_API_KEY");
      if (env != nullptr) o.api_key = env;
    }
    if (o.api_key.empty() && !absl::GetFlag(FLAGS_api_key_file).empty()) {
      o.api_key = lk::auth::FirstApiKey(absl::GetFlag(FLAGS_api_key_file));
    }
    o.tls.enabled =
        absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_ca).empty();
    o.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
    o.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
    o.sampling.max_tokens = absl::GetFlag(FLAGS_max_tokens);
    o.sampling.temperature = absl::GetFlag(FLAGS_temperature);
    o.sampling.top_p = absl::GetFlag(FLAGS_top_p);
    o.sampling.top_k = absl::GetFlag(FLAGS_top_k);
    o.sampling.seed = absl::GetFlag(FLAGS_seed);
    o.sampling.stop = stops;
    o.timeout_s = absl::GetFlag(FLAGS_timeout);
    return lk::cli::Generate(o);
  }
  if (cmd == "health") {
    lk::cli::HealthOptions o;
    o.server = absl::GetFlag(FLAGS_server);
    o.service = absl::GetFlag(FLAGS_service);
    if (absl::GetFlag(FLAGS_timeout) > 0)
      o.timeout_s = absl::GetFlag(FLAGS_timeout);
    o.cluster = {absl::GetFlag(FLAGS_cluster_cert_file),
                 absl::GetFlag(FLAGS_cluster_key_file),
                 absl::GetFlag(FLAGS_cluster_ca_file)};
    o.tls.enabled =
        absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_ca).empty();
    o.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
    o.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
    return lk::cli::Health(o);
  }
  if (cmd == "cluster-credentials") {
    lk::cli::ClusterCredentialsOptions o;
    o.out_dir = absl::GetFlag(FLAGS_out);
    o.days = absl::GetFlag(FLAGS_days);
    return lk::cli::ClusterCredentials(o);
  }
  if (cmd == "eval") {
    lk::cli::EvalOptions o;
    o.local = Local();
    o.text_path = absl::GetFlag(FLAGS_text);
    o.mode = absl::GetFlag(FLAGS_mode);
    o.window = absl::GetFlag(FLAGS_window);
    o.max_lines = absl::GetFlag(FLAGS_max_lines);
    o.skip_lines = absl::GetFlag(FLAGS_skip_lines);
    o.prefix_fraction = absl::GetFlag(FLAGS_prefix_fraction);
    o.configs = configs;
    return lk::cli::Eval(o);
  }
  if (cmd == "convert") {
    lk::cli::ConvertOptions o;
    o.from = absl::GetFlag(FLAGS_from);
    o.checkpoint = absl::GetFlag(FLAGS_checkpoint);
    o.tokenizer = absl::GetFlag(FLAGS_tokenizer);
    o.out = absl::GetFlag(FLAGS_out);
    o.dtype = absl::GetFlag(FLAGS_dtype);
    o.synthetic = absl::GetFlag(FLAGS_synthetic);
    o.model_dir = absl::GetFlag(FLAGS_model);
    o.kv_latent = absl::GetFlag(FLAGS_kv_latent);
    o.init = absl::GetFlag(FLAGS_init);
    o.refit = absl::GetFlag(FLAGS_refit);
    o.pairs = absl::GetFlag(FLAGS_pairs);
    o.allocate = absl::GetFlag(FLAGS_allocate);
    o.joint_heads = absl::GetFlag(FLAGS_joint_heads);
    o.joint_group = absl::GetFlag(FLAGS_joint_group);
    o.allocate_joint = absl::GetFlag(FLAGS_allocate_joint);
    o.distill_tokens = absl::GetFlag(FLAGS_distill_tokens);
    o.distill_minutes = absl::GetFlag(FLAGS_distill_minutes);
    o.distill_lines = absl::GetFlag(FLAGS_distill_lines);
    o.distill_lr = absl::GetFlag(FLAGS_distill_lr);
    o.sequential = absl::GetFlag(FLAGS_sequential);
    o.drift = absl::GetFlag(FLAGS_drift);
    o.sequential_target = absl::GetFlag(FLAGS_sequential_target);
    o.calib_text = absl::GetFlag(FLAGS_calib_text);
    o.calib_lines = absl::GetFlag(FLAGS_calib_lines);
    o.kv_heads = absl::GetFlag(FLAGS_kv_heads);
    o.seed = absl::GetFlag(FLAGS_seed) == 0 ? 1 : absl::GetFlag(FLAGS_seed);
    return lk::cli::Convert(o);
  }
  if (cmd == "inspect") {
    std::string dir = absl::GetFlag(FLAGS_model);
    if (positional.size() > 1) dir = positional[1];
    if (dir.empty()) {
      std::fprintf(stderr, "usage: latentkv inspect DIR\n");
      return 2;
    }
    return lk::cli::Inspect(dir, absl::GetFlag(FLAGS_weights_dtype),
                            absl::GetFlag(FLAGS_kv_dtype), Local().residency);
  }
  if (cmd == "bench") {
    lk::cli::BenchServeOptions o;
    o.subcommand = positional.size() > 1 ? positional[1] : "";
    o.server = absl::GetFlag(FLAGS_server);
    o.kv_cache_mode = absl::GetFlag(FLAGS_kv_cache_mode);
    o.compare = compares;
    o.request_rate = absl::GetFlag(FLAGS_request_rate);
    o.sweep_rates = absl::GetFlag(FLAGS_sweep_rates);
    o.goodput = absl::GetFlag(FLAGS_goodput);
    o.output = absl::GetFlag(FLAGS_output);
    o.plot = absl::GetFlag(FLAGS_plot);
    lk::bench::ServeBenchOptions& b = o.bench;
    b.workload.input_len = absl::GetFlag(FLAGS_input_len);
    b.workload.input_len_range = absl::GetFlag(FLAGS_input_len_range);
    b.workload.output_len = absl::GetFlag(FLAGS_output_len);
    b.workload.output_len_range = absl::GetFlag(FLAGS_output_len_range);
    b.workload.prefix_groups = absl::GetFlag(FLAGS_prefix_groups);
    b.workload.prefix_len = absl::GetFlag(FLAGS_prefix_len);
    b.workload.burstiness = absl::GetFlag(FLAGS_burstiness);
    b.workload.seed = absl::GetFlag(FLAGS_seed);
    b.concurrency = absl::GetFlag(FLAGS_concurrency);
    b.num_requests = absl::GetFlag(FLAGS_num_requests);
    b.duration_s = absl::GetFlag(FLAGS_duration_s);
    b.dataset = absl::GetFlag(FLAGS_dataset);
    b.temperature = absl::GetFlag(FLAGS_temperature);
    b.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
    b.request_timeout_s = absl::GetFlag(FLAGS_timeout);
    b.channels = absl::GetFlag(FLAGS_channels);
    b.cq_threads = absl::GetFlag(FLAGS_client_threads);
    b.keep_token_ids = absl::GetFlag(FLAGS_save_token_ids);
    b.progress = absl::GetFlag(FLAGS_progress);
    return lk::cli::BenchServe(o);
  }
  std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
  return 2;
}
