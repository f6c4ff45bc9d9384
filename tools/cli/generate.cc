// `latentkv generate`: stream a completion from a server or a local engine.
#include <chrono>
#include <cstdio>
#include <future>

#include "coordinator/stop_matcher.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "tools/cli/commands.h"
#include "tools/cli/local_engine.h"
#include "worker/engine/engine.h"

namespace latentkv::cli {
namespace {

namespace pb = ::latentkv::v1;

int GenerateRemote(const GenerateOptions& o) {
  auto channel = auth::NewClientChannel(o.server, o.tls);
  if (!channel.ok()) {
    std::fprintf(stderr, "%s\n", channel.status().ToString().c_str());
    return 2;
  }
  auto stub = pb::Generation::NewStub(*channel);
  pb::GenerateRequest req;
  req.set_prompt(o.prompt);
  pb::SamplingParams* s = req.mutable_sampling();
  s->set_max_tokens(o.sampling.max_tokens);
  s->set_temperature(o.sampling.temperature);
  s->set_top_p(o.sampling.top_p);
  s->set_top_k(o.sampling.top_k);
  s->set_seed(o.sampling.seed);
  for (const auto& st : o.sampling.stop) s->add_stop(st);
  grpc::ClientContext ctx;
  if (!o.api_key.empty())
    ctx.AddMetadata("authorization", "Bearer " + o.api_key);
  if (o.timeout_s > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(int64_t(o.timeout_s * 1000)));
  }
  auto reader = stub->Generate(&ctx, req);
  pb::GenerateResponse resp;
  std::fputs(o.prompt.c_str(), stdout);
  while (reader->Read(&resp)) {
    std::fputs(resp.text().c_str(), stdout);
    std::fflush(stdout);
  }
  grpc::Status st = reader->Finish();
  std::fputs("\n", stdout);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s (code %d)\n", st.error_message().c_str(),
                 static_cast<int>(st.error_code()));
    return 1;
  }
  return 0;
}

int GenerateLocal(const GenerateOptions& o) {
  auto m = LoadLocalModel(o.local);
  if (!m.ok()) {
    std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
    return 1;
  }
  worker::EngineOptions eo;
  eo.kv.page_size = o.local.page_size;
  eo.kv.max_bytes = o.local.kv_memory_mb << 20;
  if (std::optional<DType> d = ParseDType(o.local.kv_dtype)) eo.kv.dtype = *d;
  eo.residency = o.local.residency;
  const model::Tokenizer& tok = *m->tokenizer;
  auto engine = worker::Engine::Create(m->weights, std::move(m->backend), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  worker::GenerationRequest req;
  req.id = "local";
  req.prompt = tok.Encode(o.prompt, tok.add_bos());
  req.max_new_tokens = o.sampling.max_tokens;
  req.sampling.temperature = o.sampling.temperature;
  req.sampling.top_p = o.sampling.top_p;
  req.sampling.top_k = o.sampling.top_k;
  req.sampling.seed = o.sampling.seed;
  model::StreamingDetokenizer detok(tok, req.prompt.back());
  coordinator::StopMatcher stop(o.sampling.stop);
  std::promise<absl::Status> done;
  std::fputs(o.prompt.c_str(), stdout);
  absl::Status st =
      (*engine)->Submit(std::move(req), [&](const worker::GenerationEvent& e) {
        if (e.token >= 0 && !stop.stopped()) {
          std::fputs(stop.Push(detok.Push(e.token)).c_str(), stdout);
          std::fflush(stdout);
          if (stop.stopped()) (*engine)->Cancel("local");
        }
        if (!e.status.ok() || e.finish != worker::FinishReason::kNone) {
          if (!stop.stopped()) {
            std::fputs(stop.Push(detok.Flush()).c_str(), stdout);
            std::fputs(stop.Flush().c_str(), stdout);
          }
          done.set_value(e.status);
        }
      });
  if (st.ok()) st = done.get_future().get();
  std::fputs("\n", stdout);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int Generate(const GenerateOptions& options) {
  if (options.prompt.empty()) {
    std::fprintf(stderr, "--prompt is required\n");
    return 2;
  }
  if (!options.server.empty()) return GenerateRemote(options);
  if (options.local.model_dir.empty()) {
    std::fprintf(stderr, "give --server HOST:PORT or --model DIR\n");
    return 2;
  }
  return GenerateLocal(options);
}

}  // namespace latentkv::cli
