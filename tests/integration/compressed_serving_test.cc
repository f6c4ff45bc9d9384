// KV compression served end to end: a real cluster (coordinator + worker
// processes on loopback) configured with SpindleKV + a predefined capacity
// streams exactly the tokens the engine alone produces with the same
// configuration; requests can still ask for the full cache; a grouped
// cross-head KV-Latent model served by a tensor-parallel group of 2 streams
// the engine's tokens, and so does a model whose key/query maps come after
// the q/k norms (qk_norm_dim: Gemma 3's KV-Latent form), split over 2 ranks.
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "model/convert.h"
#include "model/gguf_loader.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "tests/integration/cluster.h"
#include "worker/engine/engine.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

// The flags the cluster's worker runs with, and the same as options.
std::vector<std::string> WorkerFlags(int codebook_layers) {
  return {"--page_size=4",
          "--kv_policy=spindle",
          "--kv_budget=0.4",
          "--kv_window=8",
          "--kv_capacity=48",
          "--kv_codebook_layers=" + std::to_string(codebook_layers),
          "--max_step_tokens=64"};
}

worker::EngineOptions SameOptions(int codebook_layers) {
  worker::EngineOptions o;
  o.kv.page_size = 4;
  o.scheduler.max_step_tokens = 64;
  o.residency.policy = "spindle";
  o.residency.budget = 0.4;
  o.residency.window = 8;
  o.residency.capacity = {48};
  o.residency.codebook_layers = codebook_layers;
  return o;
}

// Prompts long enough that both the prompt budget and the capacity act.
std::vector<std::string> StoryPrompts() {
  std::ifstream in(std::string(LATENTKV_SHARED_DIR) +
                   "/text/tinystories_train_excerpt.txt");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line) && out.size() < 4) {
    if (line.size() > 300) out.push_back(line.substr(0, 400));
  }
  return out;
}

// Greedy tokens from the engine in this process.
std::vector<int32_t> EngineAlone(const std::string& model_dir,
                                 const std::string& prompt, int max_new,
                                 const worker::EngineOptions& o,
                                 bool ignore_eos = false) {
  auto weights = model::LoadModel(model_dir);
  EXPECT_TRUE(weights.ok());
  auto tok = model::LoadTokenizer(model_dir, (*weights)->config.vocab_size);
  EXPECT_TRUE(tok.ok());
  auto engine = worker::Engine::Create(
      std::shared_ptr<const model::ModelWeights>(std::move(*weights)),
      kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  worker::GenerationRequest r;
  r.id = "alone";
  r.prompt = (*tok)->Encode(prompt, /*add_bos=*/true);
  r.max_new_tokens = max_new;
  r.ignore_eos = ignore_eos;
  r.sampling.temperature = 0.0f;
  std::vector<int32_t> out;
  std::promise<void> done;
  EXPECT_TRUE((*engine)
                  ->Submit(std::move(r),
                           [&](const worker::GenerationEvent& ev) {
                             if (ev.token >= 0) out.push_back(ev.token);
                             if (ev.finish != worker::FinishReason::kNone ||
                                 !ev.status.ok()) {
                               done.set_value();
                             }
                           })
                  .ok());
  done.get_future().wait();
  return out;
}

void ExpectServedEqualsAlone(const std::string& model_dir,
                             int codebook_layers) {
  ClusterOptions co;
  co.model_dir = model_dir;
  co.worker_args = WorkerFlags(codebook_layers);
  Cluster cluster(co);
  const std::vector<std::string> prompts = StoryPrompts();
  ASSERT_EQ(prompts.size(), 4u);
  for (const std::string& p : prompts) {
    // 150 new tokens: several capacity evictions after the prompt's.
    StreamResult served = Generate(cluster.stub(), Greedy(p, 150));
    ASSERT_TRUE(served.status.ok()) << served.status.error_message();
    const std::vector<int32_t> alone =
        EngineAlone(model_dir, p, 150, SameOptions(codebook_layers));
    // EOS ends the engine run without a token; the server stops there too.
    EXPECT_EQ(served.tokens, alone) << p;
    EXPECT_GT(served.tokens.size(), 20u);
  }
  // The worker really evicted.
  auto ws = cluster.WorkerStub(0);
  grpc::ClientContext ctx;
  pb::WorkerStats stats;
  ASSERT_TRUE(ws->GetStats(&ctx, pb::GetStatsRequest(), &stats).ok());
  EXPECT_GT(stats.kv_evicted_slots(), 0u);

  // KV_CACHE_MODE_FULL on the same server equals a full-cache engine.
  pb::GenerateRequest req = Greedy(prompts[0], 60);
  req.set_kv_cache_mode(pb::KV_CACHE_MODE_FULL);
  StreamResult full = Generate(cluster.stub(), req);
  ASSERT_TRUE(full.status.ok());
  worker::EngineOptions plain;
  plain.kv.page_size = 4;
  EXPECT_EQ(full.tokens, EngineAlone(model_dir, prompts[0], 60, plain));
  // An unknown mode is refused.
  req.set_kv_cache_mode(static_cast<pb::KvCacheMode>(17));
  EXPECT_EQ(Generate(cluster.stub(), req).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(CompressedServingTest, SpindleAndCapacityServedEqualEngineAlone) {
  ExpectServedEqualsAlone(Stories260kDir(), /*codebook_layers=*/0);
}

// KV-Latent (a calibrated conversion to d_qk = d_vo = 4) with SpindleKV:
// codebooks in the first two layers, eviction in the rest, and a capacity.
TEST(CompressedServingTest, KvLatentWithSpindleServedEqualsEngineAlone) {
  const std::string out = MakeTempDir() + "/kvl50";
  int code = -1;
  RunCommand({BinDir() + "/latentkv", "convert", "--model=" + Stories260kDir(),
              "--out=" + out, "--kv-latent=d_qk=4,d_vo=4", "--init=calibrated",
              "--calib-text=" + std::string(LATENTKV_SHARED_DIR) +
                  "/text/tinystories_train_excerpt.txt",
              "--calib-lines=50"},
             &code);
  ASSERT_EQ(code, 0);
  ExpectServedEqualsAlone(out, /*codebook_layers=*/2);
}

// A tensor-parallel group of 2 serving `model_dir` streams, for each story
// prompt, the greedy tokens of the engine alone (max_new of them when
// `ignore_eos`, else more than 10).
void ExpectTwoRanksStreamTheEnginesTokens(const std::string& model_dir,
                                          int max_new, bool ignore_eos) {
  ClusterOptions co;
  co.model_dir = model_dir;
  co.tp = 2;
  co.worker_args = {"--page_size=4", "--max_step_tokens=64"};
  Cluster cluster(co);
  worker::EngineOptions plain;
  plain.kv.page_size = 4;
  plain.scheduler.max_step_tokens = 64;
  for (const std::string& p : StoryPrompts()) {
    pb::GenerateRequest req = Greedy(p, max_new);
    req.mutable_sampling()->set_ignore_eos(ignore_eos);
    StreamResult served = Generate(cluster.stub(), req);
    ASSERT_TRUE(served.status.ok()) << served.status.error_message();
    EXPECT_EQ(served.tokens,
              EngineAlone(model_dir, p, max_new, plain, ignore_eos))
        << p;
    if (ignore_eos) {
      EXPECT_EQ(served.tokens.size(), static_cast<size_t>(max_new));
    } else {
      EXPECT_GT(served.tokens.size(), 10u);
    }
  }
}

// Cross-head KV-Latent over groups of 2 source KV heads (--joint_group=2):
// 2 latent KV heads, so a tensor-parallel group of 2 splits them; it
// streams the engine's own greedy tokens.
TEST(CompressedServingTest, GroupedKvLatentSplitsOverTwoRanks) {
  const std::string out = MakeTempDir() + "/kvl50_grouped";
  int code = -1;
  RunCommand({BinDir() + "/latentkv", "convert", "--model=" + Stories260kDir(),
              "--out=" + out, "--kv-latent=d_qk=4,d_vo=4", "--joint_group=2",
              "--calib-text=" + std::string(LATENTKV_SHARED_DIR) +
                  "/text/tinystories_train_excerpt.txt",
              "--calib-lines=50"},
             &code);
  ASSERT_EQ(code, 0);
  auto w = model::LoadModelConfig(out);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->num_kv_heads, 2);
  ExpectTwoRanksStreamTheEnginesTokens(out, 60, /*ignore_eos=*/false);
}

// Maps after the q/k norms: each rank holds its heads' projections at the
// normed width (32) and their maps to the latent widths; random weights of
// Gemma's layer shape, stories260K's tokenizer.
TEST(CompressedServingTest, LatentMapsAfterTheNormsSplitOverTwoRanks) {
  model::ModelConfig c = model::ModelConfig::Llama(64, 96, 2, 4, 2, 512, 256);
  c.qk_norm = true;
  c.qk_norm_dim = 32;
  c.qk_head_dim = {16, 24};
  c.vo_head_dim = {16, 12};
  c.rope_dims = {8, 12};
  c.hidden_act = model::Activation::kGeluTanh;
  c.post_norms = true;
  const std::string out = MakeTempDir() + "/mapped";
  ASSERT_TRUE(model::WriteSyntheticModel(c, out, DType::kF32, 3).ok());
  std::filesystem::copy_file(Stories260kDir() + "/tokenizer.bin",
                             out + "/tokenizer.bin",
                             std::filesystem::copy_options::overwrite_existing);
  ExpectTwoRanksStreamTheEnginesTokens(out, 40, /*ignore_eos=*/true);
}

TEST(CompressedServingTest, CompressedModeOnAPlainServerIsInvalid) {
  ClusterOptions co;
  co.model_dir = Stories260kDir();
  Cluster cluster(co);
  pb::GenerateRequest req = Greedy("Once upon a time", 8);
  req.set_kv_cache_mode(pb::KV_CACHE_MODE_COMPRESSED);
  EXPECT_EQ(Generate(cluster.stub(), req).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace latentkv::testing
