// `latentkv eval --config ...`: one quality table over KV configurations.
//
// Protocol, per document (a non-empty line, [BOS] + encode(line), cut at the
// model's context): the first --prefix-fraction of its tokens are the prompt,
// prefilled in one chunk (so a SnapKV budget acts at the prompt's end); the
// rest are fed one token per step (teacher forcing) and each is predicted
// from the step before. Perplexity and top-1 agreement are over those
// continuation tokens; agreement compares each step's argmax with the first
// configuration's (the reference, normally the full cache). KV bytes/token:
// the K/V data resident when the document ends (f32 values of the tokens each
// (layer, KV head) holds; for codebook layers the records, 16 bytes a token,
// and the codewords; positions excluded everywhere) over the document's
// length.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/text_lines.h"
#include "tools/cli/commands.h"
#include "tools/cli/local_engine.h"
#include "worker/cache/kv_cache.h"
#include "worker/engine/model_runner.h"
#include "worker/residency/residency_policy.h"

namespace latentkv::cli {
namespace {

struct TableConfig {
  std::string label;
  std::string model_dir;
  std::string kv_dtype;  // empty: the command's --kv_dtype
  worker::ResidencyOptions residency;
};

// "label:key=val,key=val" (keys: model, kv_dtype, policy, budget, beta,
// window, pool, codebook_layers, theta_k, theta_v, capacity (A or A/B/C),
// slack).
absl::StatusOr<TableConfig> ParseConfig(const std::string& spec,
                                        const std::string& default_model) {
  TableConfig c;
  c.model_dir = default_model;
  const size_t colon = spec.find(':');
  c.label = spec.substr(0, colon);
  if (colon == std::string::npos) return c;
  for (absl::string_view kv :
       absl::StrSplit(spec.substr(colon + 1), ',', absl::SkipEmpty())) {
    const size_t eq = kv.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("config ", c.label, ": expected key=value, got ", kv));
    }
    const std::string key(kv.substr(0, eq));
    const std::string val(kv.substr(eq + 1));
    double d = 0;
    const bool num = absl::SimpleAtod(val, &d);
    worker::ResidencyOptions& r = c.residency;
    if (key == "model") {
      c.model_dir = val;
    } else if (key == "kv_dtype") {
      c.kv_dtype = val;
    } else if (key == "policy") {
      r.policy = val;
    } else if (key == "capacity") {
      auto caps =
          worker::ParseCapacityList(absl::StrReplaceAll(val, {{"/", ","}}));
      if (!caps.ok()) return caps.status();
      r.capacity = *caps;
    } else if (!num) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config ", c.label, ": ", key, " needs a number, got ", val));
    } else if (key == "budget") {
      r.budget = d;
    } else if (key == "beta") {
      r.pyramid_beta = d;
    } else if (key == "window") {
      r.window = static_cast<int32_t>(d);
    } else if (key == "pool") {
      r.pool_kernel = static_cast<int32_t>(d);
    } else if (key == "codebook_layers") {
      r.codebook_layers = static_cast<int32_t>(d);
    } else if (key == "theta_k") {
      r.theta_k = static_cast<float>(d);
    } else if (key == "theta_v") {
      r.theta_v = static_cast<float>(d);
    } else if (key == "slack") {
      r.capacity_slack = static_cast<int64_t>(d);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("config ", c.label, ": unknown key ", key));
    }
  }
  return c;
}

struct Row {
  std::string label;
  double kv_bytes_per_token = 0;
  double ppl = 0;
  double top1 = 0;
  double decode_tps = 0;
};

}  // namespace

int EvalTable(const EvalOptions& o) {
  std::vector<TableConfig> configs;
  for (const std::string& spec : o.configs) {
    auto c = ParseConfig(spec, o.local.model_dir);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
      return 2;
    }
    configs.push_back(*c);
  }
  if (!(o.prefix_fraction > 0.0 && o.prefix_fraction < 1.0)) {
    std::fprintf(stderr, "--prefix_fraction must be in (0, 1)\n");
    return 2;
  }
  std::ifstream in(o.text_path);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", o.text_path.c_str());
    return 1;
  }
  std::vector<std::string> lines;
  for (std::string line; GetTextLine(in, &line);) {
    if (line.empty()) continue;
    lines.push_back(line);
  }
  if (o.skip_lines > 0) {
    lines.erase(lines.begin(),
                lines.begin() + std::min<size_t>(o.skip_lines, lines.size()));
  }
  if (o.max_lines > 0 && static_cast<int32_t>(lines.size()) > o.max_lines) {
    lines.resize(o.max_lines);
  }

  std::vector<Row> rows;
  std::vector<std::vector<int32_t>> ref_argmax;  // [doc][step]
  for (size_t ci = 0; ci < configs.size(); ++ci) {
    const TableConfig& tc = configs[ci];
    LocalEngineOptions lo = o.local;
    lo.model_dir = tc.model_dir;
    if (!tc.kv_dtype.empty()) lo.kv_dtype = tc.kv_dtype;
    auto m = LoadLocalModel(lo);
    if (!m.ok()) {
      std::fprintf(stderr, "%s: %s\n", tc.label.c_str(),
                   m.status().ToString().c_str());
      return 1;
    }
    const model::ModelConfig& c = m->weights->config;
    auto p = worker::CreateResidencyPolicy(
        tc.residency, {c.num_layers, c.num_heads, c.num_kv_heads, c.qk_head_dim,
                       c.sliding_window});
    if (!p.ok()) {
      std::fprintf(stderr, "%s: %s\n", tc.label.c_str(),
                   p.status().ToString().c_str());
      return 2;
    }
    const std::shared_ptr<const worker::ResidencyPolicy> policy = *p;
    worker::ModelRunner runner(m->weights, m->backend.get());
    auto lkv = MakeLocalCache(lo, runner, m->backend.get());
    if (!lkv.ok()) {
      std::fprintf(stderr, "%s\n", lkv.status().ToString().c_str());
      return 1;
    }
    worker::KvCache* cache = lkv->cache.get();
    double nll = 0, kv_bytes = 0, decode_secs = 0;
    int64_t predicted = 0, agree = 0, doc_tokens = 0;
    std::vector<float> logits;
    for (size_t d = 0; d < lines.size(); ++d) {
      std::vector<int32_t> doc =
          m->tokenizer->Encode(lines[d], m->tokenizer->add_bos());
      if (static_cast<int64_t>(doc.size()) > c.max_position_embeddings) {
        doc.resize(c.max_position_embeddings);
      }
      const int64_t n = static_cast<int64_t>(doc.size());
      if (n < 3) continue;
      const int64_t prompt_len = std::clamp<int64_t>(
          static_cast<int64_t>(std::ceil(o.prefix_fraction * n)), 1, n - 1);
      worker::SequenceKv kv;
      kv.Init(*cache);
      std::unique_ptr<worker::SequencePolicy> res;
      if (policy) {
        kv.SetCapacity(policy->capacities());
        res = policy->NewSequence(prompt_len);
      }
      if (ci == 0) ref_argmax.emplace_back();
      std::vector<int32_t>& ref = ref_argmax[d];
      int64_t pos = 0, step = 0;
      absl::Status st;
      while (st.ok() && pos < n - 1) {
        int64_t len = pos == 0 ? prompt_len : 1;
        len = std::min<int64_t>(len, kv.Room());
        const auto t0 = std::chrono::steady_clock::now();
        st = kv.Reserve(*cache, len);
        if (!st.ok()) break;
        worker::ForwardChunk ch;
        ch.kv = &kv;
        ch.tokens = doc.data() + pos;
        ch.len = static_cast<int32_t>(len);
        ch.start = pos;
        ch.residency = res.get();
        st = runner.Forward({ch}, *cache, *lkv->pools, &logits);
        if (pos > 0) {
          decode_secs += std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - t0)
                             .count();
        }
        pos += len;
        if (!st.ok() || pos < prompt_len) continue;  // prompt not in yet
        // logits predict doc[pos].
        const float* row = logits.data();
        int32_t best = 0;
        double mx = row[0];
        for (int32_t v = 1; v < c.vocab_size; ++v) {
          if (row[v] > mx) {
            mx = row[v];
            best = v;
          }
        }
        double sum = 0;
        for (int32_t v = 0; v < c.vocab_size; ++v) sum += std::exp(row[v] - mx);
        nll -= row[doc[pos]] - mx - std::log(sum);
        if (ci == 0) ref.push_back(best);
        agree += step < static_cast<int64_t>(ref.size()) && ref[step] == best;
        ++step;
        ++predicted;
      }
      if (!st.ok()) {
        kv.Release(*cache);
        std::fprintf(stderr, "%s: %s\n", tc.label.c_str(),
                     st.ToString().c_str());
        return 1;
      }
      for (int32_t l = 0; l < c.num_layers; ++l) {
        if (res != nullptr) {
          kv_bytes += static_cast<double>(res->LayerDataBytes(*cache, kv, l));
          continue;
        }
        for (int32_t h = 0; h < c.num_kv_heads; ++h) {
          kv_bytes += static_cast<double>(kv.num_tokens(l, h)) *
                      cache->token_data_bytes(l);
        }
      }
      doc_tokens += n;
      kv.Release(*cache);
    }
    if (predicted == 0) {
      std::fprintf(stderr, "no tokens to predict\n");
      return 1;
    }
    Row r;
    r.label = tc.label;
    r.kv_bytes_per_token = kv_bytes / doc_tokens;
    r.ppl = std::exp(nll / predicted);
    r.top1 = static_cast<double>(agree) / predicted;
    r.decode_tps =
        decode_secs > 0 ? (predicted - lines.size()) / decode_secs : 0.0;
    rows.push_back(r);
    std::fprintf(stderr, "%s: ppl %.4f\n", r.label.c_str(), r.ppl);
  }
  std::printf(
      "| config | KV bytes/token | vs full | perplexity | vs full | top-1 "
      "agreement | decode tok/s |\n|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %.1f | %.3f | %.4f | %.3f | %.3f | %.0f |\n",
                r.label.c_str(), r.kv_bytes_per_token,
                r.kv_bytes_per_token / rows[0].kv_bytes_per_token, r.ppl,
                r.ppl / rows[0].ppl, r.top1, r.decode_tps);
  }
  return 0;
}

}  // namespace latentkv::cli
