// `latentkv eval`: perplexity of a model on a text file.
//
// --mode lines: each non-empty line is a document: [BOS] + encode(line); every
// token after BOS is predicted once. A document longer than the window is cut
// into groups of window-1 targets; each group's context restarts with BOS.
// --mode stream: the whole file is one document.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/text_lines.h"
#include "tools/cli/commands.h"
#include "tools/cli/local_engine.h"
#include "worker/cache/kv_cache.h"
#include "worker/engine/model_runner.h"

namespace latentkv::cli {

int Eval(const EvalOptions& o) {
  if (!o.configs.empty()) return EvalTable(o);
  auto m = LoadLocalModel(o.local);
  if (!m.ok()) {
    std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
    return 1;
  }
  const model::ModelConfig& c = m->weights->config;
  const int32_t window = o.window > 0 ? o.window : c.max_position_embeddings;
  if (window < 2 || window > c.max_position_embeddings) {
    std::fprintf(stderr, "--window must be in [2, %d]\n",
                 c.max_position_embeddings);
    return 2;
  }
  if (o.mode != "lines" && o.mode != "stream") {
    std::fprintf(stderr, "--mode must be lines or stream\n");
    return 2;
  }
  std::ifstream in(o.text_path);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", o.text_path.c_str());
    return 1;
  }
  std::vector<std::vector<int32_t>> docs;
  if (o.mode == "lines") {
    std::string line;
    while (GetTextLine(in, &line)) {
      if (line.empty()) continue;
      if (o.max_lines > 0 && static_cast<int32_t>(docs.size()) >= o.max_lines) {
        break;
      }
      docs.push_back(m->tokenizer->Encode(line, m->tokenizer->add_bos()));
    }
  } else {
    std::stringstream ss;
    ss << in.rdbuf();
    docs.push_back(m->tokenizer->Encode(ss.str(), m->tokenizer->add_bos()));
  }

  worker::ModelRunner runner(m->weights, m->backend.get());
  auto lkv = MakeLocalCache(o.local, runner, m->backend.get());
  if (!lkv.ok()) {
    std::fprintf(stderr, "%s\n", lkv.status().ToString().c_str());
    return 1;
  }
  worker::KvCache* cache = lkv->cache.get();
  // Each window is conditioned on one start token: BOS for tokenizers that
  // add it, else the document's own first token (which is never predicted,
  // as in a perplexity run without BOS).
  const bool adds_bos = m->tokenizer->add_bos();
  const int32_t vocab = c.vocab_size;
  double nll = 0;
  int64_t predicted = 0;
  std::vector<float> logits;
  std::vector<int32_t> input;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& doc : docs) {
    if (doc.empty()) continue;
    const int32_t bos = adds_bos ? c.bos_token_id : doc[0];
    const int64_t n_targets = static_cast<int64_t>(doc.size()) - 1;
    for (int64_t k = 1; k <= n_targets; k += window - 1) {
      const int64_t mlen = std::min<int64_t>(window - 1, n_targets - k + 1);
      input.assign(1, bos);
      input.insert(input.end(), doc.begin() + k, doc.begin() + k + mlen - 1);
      worker::SequenceKv kv;
      kv.Init(*cache);
      absl::Status st = kv.Reserve(*cache, mlen);
      if (st.ok()) {
        worker::ForwardChunk ch;
        ch.kv = &kv;
        ch.tokens = input.data();
        ch.len = static_cast<int32_t>(mlen);
        ch.start = 0;
        ch.logits = worker::ForwardChunk::Logits::kAll;
        st = runner.Forward({ch}, *cache, *lkv->pools, &logits);
      }
      kv.Release(*cache);
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        return 1;
      }
      for (int64_t i = 0; i < mlen; ++i) {
        const float* row = logits.data() + i * vocab;
        double mx = row[0];
        for (int32_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
        double sum = 0;
        for (int32_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
        nll -= row[doc[k + i]] - mx - std::log(sum);
      }
      predicted += mlen;
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  if (predicted == 0) {
    std::fprintf(stderr, "no tokens to predict in %s\n", o.text_path.c_str());
    return 1;
  }
  std::printf("documents=%zu window=%d seconds=%.3f tokens_per_second=%.1f\n",
              docs.size(), window, secs, predicted / secs);
  std::printf("tokens=%lld ppl=%.8g\n", static_cast<long long>(predicted),
              std::exp(nll / predicted));
  return 0;
}

}  // namespace latentkv::cli
