// Output of `latentkv bench serve`: the JSON result file and the summary
// table.
//
// JSON layout (times in ms unless the name says _s; NaN is written as null):
//   {"config": {...the options...},
//    "phases": [{"target", "address", "kv_cache_mode", "request_rate"
//                (null for inf), "summary": {completed, failed, errors:
//                {CODE: n}, duration_s, input_tokens, output_tokens,
//                request_throughput, output_throughput, total_throughput,
//                goodput (null without SLOs), good_requests, ttft_ms,
//                tpot_ms, itl_ms, e2e_ms: {count, mean, std, median, p90,
//                p99, min, max}},
//                "requests": [{index, prompt_tokens, max_tokens,
//                output_tokens, scheduled_s, sent_s, status, error,
//                finish_reason, usage_prompt_tokens,
//                usage_completion_tokens, messages, ttft_ms, tpot_ms,
//                e2e_ms, itl_ms: [...], token_ids (when kept)}]}]}
#ifndef LATENTKV_TOOLS_BENCH_REPORT_H_
#define LATENTKV_TOOLS_BENCH_REPORT_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tools/bench/serve_bench.h"

namespace latentkv::bench {

nlohmann::json ToJson(const ServeBenchOptions& options,
                      const std::vector<PhaseReport>& phases);

// A table in vLLM's layout: one row per metric, one column per phase
// (named by target when there are several targets, with the rate when there
// are several rates).
std::string FormatTable(const std::vector<PhaseReport>& phases);

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_REPORT_H_
