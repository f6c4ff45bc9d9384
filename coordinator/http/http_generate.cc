// The OpenAI generation routes of HttpServer: one request fans out into
// its choices (every prompt, n samples each), one Generate call per choice
// over the in-process channel; their messages are merged into one response
// or one event stream, numbered prompt * n + sample.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "coordinator/http/http_call.h"
#include "coordinator/http/http_server.h"
#include "coordinator/http/openai_api.h"
#include "coordinator/http/response_util.h"
#include "coordinator/http/tool_call_parser.h"
#include "coordinator/http/tool_calls.h"

namespace latentkv::coordinator::http {
namespace {

namespace pb = ::latentkv::v1;

// What the choices' reader threads hand the streaming writer: a message of
// choice `index`, or (done) that choice's end and status.
struct Event {
  int index = 0;
  pb::GenerateResponse msg;
  bool done = false;
  grpc::Status status;
};

class EventQueue {
 public:
  void Push(Event e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
    }
    cv_.notify_one();
  }
  Event Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !events_.empty(); });
    Event e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

// A chunk's share of a streamed reply with tools: content deltas into
// part->text, call deltas into part->tool_calls (OpenAI's delta.tool_calls:
// a call's first entry carries its id, type and name; argument fragments
// of one call in one chunk are joined).
void ToolDeltasJson(const std::vector<ToolDelta>& deltas, ChoicePart* part) {
  for (const ToolDelta& d : deltas) {
    switch (d.kind) {
      case ToolDelta::Kind::kContent:
        part->text += d.text;
        break;
      case ToolDelta::Kind::kCallStart:
        part->tool_calls.push_back(
            {{"index", d.call},
             {"id", d.id},
             {"type", "function"},
             {"function", {{"name", d.name}, {"arguments", ""}}}});
        break;
      case ToolDelta::Kind::kArguments: {
        nlohmann::json& calls = part->tool_calls;
        if (calls.empty() || calls.back()["index"] != d.call) {
          calls.push_back(
              {{"index", d.call}, {"function", {{"arguments", ""}}}});
        }
        auto& args = calls.back()["function"]["arguments"];
        args = args.get<std::string>() + d.text;
        break;
      }
    }
  }
}

// Sums usage over choices: prompt tokens once per prompt (its first
// sample's), completion tokens of every choice.
void AddUsage(const pb::Usage& u, bool first_of_prompt, pb::Usage* total) {
  if (first_of_prompt) {
    total->set_prompt_tokens(total->prompt_tokens() + u.prompt_tokens());
  }
  total->set_completion_tokens(total->completion_tokens() +
                               u.completion_tokens());
}

}  // namespace

void HttpServer::HandleGenerate(const httplib::Request& req,
                                httplib::Response& res, bool chat) {
  ParsedRequest p;
  if (auto e = ParseRequest(chat ? Endpoint::kChat : Endpoint::kCompletions,
                            req.body, &p)) {
    return SetError(res, *e);
  }
  if (!p.model.empty() && p.model != options_.model_id) {
    ApiError e = Simple(404,
                        absl::StrCat("The model '", p.model,
                                     "' does not exist (this server serves '",
                                     options_.model_id, "')"),
                        "invalid_request_error", "model_not_found");
    e.param = "model";
    return SetError(res, e);
  }
  if (chat) {
    auto prompt = chat_template_.Render(p.messages, p.tools);
    if (!prompt.ok()) {
      ApiError e;
      e.message = std::string(prompt.status().message());
      e.param = "messages";
      return SetError(res, e);
    }
    p.generate.set_prompt(*prompt);
    // tool_choice "required" or named: the calls' grammar constrains the
    // reply (ParseRequest refused other structured output beside it).
    const std::string grammar =
        ToolCallGrammar(p.tools, chat_template_.tool_format());
    if (!grammar.empty()) {
      p.generate.mutable_sampling()->mutable_structured_output()->set_lark(
          grammar);
    }
    if (!p.generate.sampling().has_max_tokens()) {
      // OpenAI's chat default: whatever the context leaves, the context
      // being what the workers' KV memory holds (ListModels), at most the
      // model's.
      grpc::ClientContext tctx;
      ForwardAuthorization(req, &tctx);
      pb::TokenizeRequest treq;
      treq.set_text(*prompt);
      treq.set_add_bos(true);
      pb::TokenizeResponse tresp;
      pb::ListModelsResponse models;
      int64_t context = options_.max_context;
      if (ListModelsFor(req, &models).ok() && models.models_size() > 0 &&
          models.models(0).max_context() > 0) {
        context = std::min<int64_t>(context, models.models(0).max_context());
      }
      if (stub_->Tokenize(&tctx, treq, &tresp).ok() &&
          tresp.token_ids_size() < context) {
        p.generate.mutable_sampling()->set_max_tokens(
            static_cast<uint32_t>(context - tresp.token_ids_size()));
      }
    }
  }
  ResponseMeta meta;
  meta.endpoint = chat ? Endpoint::kChat : Endpoint::kCompletions;
  meta.id = NewId(chat);
  meta.created = absl::ToUnixSeconds(absl::Now());
  meta.model = options_.model_id;
  meta.return_token_ids = p.return_token_ids;
  meta.logprobs = p.logprobs;

  // The choices: every prompt, n samples each; a seeded request's sample j
  // uses seed + j (distinct and reproducible).
  std::vector<pb::GenerateRequest> reqs;
  auto add_prompt = [&](const pb::GenerateRequest& base) {
    for (int j = 0; j < p.n; ++j) {
      reqs.push_back(base);
      pb::SamplingParams* sp = reqs.back().mutable_sampling();
      if (sp->has_seed()) sp->set_seed(sp->seed() + static_cast<uint64_t>(j));
    }
  };
  add_prompt(p.generate);
  for (const PromptInput& more : p.more_prompts) {
    pb::GenerateRequest g = p.generate;
    g.clear_prompt();
    g.clear_prompt_token_ids();
    if (more.token_ids.empty()) {
      g.set_prompt(more.text);
    } else {
      *g.mutable_prompt_token_ids() = {more.token_ids.begin(),
                                       more.token_ids.end()};
    }
    add_prompt(g);
  }
  const int k = static_cast<int>(reqs.size());
  std::vector<std::shared_ptr<Call>> calls;
  std::vector<std::weak_ptr<Call>> weak;
  for (const pb::GenerateRequest& r : reqs) {
    auto call = std::make_shared<Call>(this);
    ForwardAuthorization(req, &call->ctx);
    call->reader = stub_->Generate(&call->ctx, r);
    weak.push_back(call);
    calls.push_back(std::move(call));
  }
  // A client that hangs up cancels every choice.
  calls[0]->watch = watcher_->Watch(req, [weak] {
    for (const std::weak_ptr<Call>& w : weak) {
      if (std::shared_ptr<Call> c = w.lock()) c->ctx.TryCancel();
    }
  });
  std::vector<pb::GenerateResponse> firsts(k);
  for (int i = 0; i < k; ++i) {
    if (!calls[i]->reader->Read(&firsts[i])) {
      return SetError(res, FromGrpcStatus(calls[i]->Finish()));
    }
  }
  meta.seed = firsts[0].seed();
  // echo: each prompt's text as sent, or its token ids detokenized.
  std::vector<std::string> echo_text(k);
  if (p.echo) {
    for (int i = 0; i < k; i += p.n) {
      std::string text = reqs[i].prompt();
      if (text.empty() && reqs[i].prompt_token_ids_size() > 0) {
        grpc::ClientContext dctx;
        ForwardAuthorization(req, &dctx);
        pb::DetokenizeRequest dreq;
        *dreq.mutable_token_ids() = reqs[i].prompt_token_ids();
        pb::DetokenizeResponse dresp;
        if (stub_->Detokenize(&dctx, dreq, &dresp).ok()) text = dresp.text();
      }
      for (int j = 0; j < p.n; ++j) echo_text[i + j] = text;
    }
  }
  const int n = p.n;
  // Chat with tools: calls are parsed out of every choice's reply.
  const bool tools = chat && p.tools.active();
  const ToolCallFormat tool_format = chat_template_.tool_format();
  if (!p.stream) {
    std::vector<ChoicePart> parts(k);
    std::vector<pb::FinishReason> finish(k, pb::FINISH_REASON_UNSPECIFIED);
    std::vector<pb::Usage> usage(k);
    std::vector<grpc::Status> status(k);
    auto read = [&](int i) {
      ChoicePart& part = parts[i];
      part.index = i;
      pb::GenerateResponse msg = firsts[i];
      do {
        part.text += msg.text();
        part.token_ids.insert(part.token_ids.end(), msg.token_ids().begin(),
                              msg.token_ids().end());
        part.logprobs.insert(part.logprobs.end(), msg.logprobs().begin(),
                             msg.logprobs().end());
        if (msg.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
          finish[i] = msg.finish_reason();
        }
        if (msg.has_usage()) usage[i] = msg.usage();
      } while (calls[i]->reader->Read(&msg));
      status[i] = calls[i]->Finish();
      if (p.echo) PrependEcho(echo_text[i], firsts[i].prompt_logprobs(), &part);
      if (tools) {
        ToolOutput out = ParseToolOutput(tool_format, part.text);
        part.text = std::move(out.content);
        part.tool_calls = std::move(out.tool_calls);
        part.called = !part.tool_calls.empty();
      }
    };
    // Every choice is read at once (a stream left unread would hold its
    // coordinator thread).
    std::vector<std::thread> readers;
    for (int i = 1; i < k; ++i) readers.emplace_back(read, i);
    read(0);
    for (std::thread& t : readers) t.join();
    pb::Usage total;
    for (int i = 0; i < k; ++i) {
      if (!status[i].ok()) return SetError(res, FromGrpcStatus(status[i]));
      AddUsage(usage[i], i % n == 0, &total);
    }
    res.set_content(ResponseJson(meta, parts, finish, total), kJson);
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  const bool include_usage = p.include_usage;
  const bool echo = p.echo;
  res.set_chunked_content_provider(
      "text/event-stream",
      [calls, meta, include_usage, firsts, echo, echo_text, n, k, tools,
       tool_format](size_t, httplib::DataSink& sink) {
        auto cancel_all = [&] {
          for (const auto& c : calls) c->ctx.TryCancel();
        };
        auto write = [&](const std::string& event) {
          if (sink.write(event.data(), event.size())) return true;
          cancel_all();  // the client is gone
          return false;
        };
        // Choices 1.. are read on their own threads; choice 0 too, so the
        // writer only merges.
        auto queue = std::make_shared<EventQueue>();
        std::vector<std::thread> readers;
        for (int i = 0; i < k; ++i) {
          readers.emplace_back([&calls, queue, i] {
            pb::GenerateResponse msg;
            while (calls[i]->reader->Read(&msg)) {
              queue->Push({i, std::move(msg)});
              msg = pb::GenerateResponse();
            }
            queue->Push({i, {}, true, calls[i]->Finish()});
          });
        }
        std::vector<std::unique_ptr<ToolCallParser>> parsers;
        for (int i = 0; tools && i < k; ++i) {
          parsers.push_back(std::make_unique<ToolCallParser>(tool_format));
        }
        std::vector<bool> first_chunk(k, true);
        std::vector<size_t> token_bytes(k, 0);  // completions' text_offset
        std::vector<pb::Usage> usage(k);
        grpc::Status failed;
        bool ok = true;
        auto emit = [&](int i, const pb::GenerateResponse& msg) {
          if (msg.has_usage()) usage[i] = msg.usage();
          const bool finished =
              msg.finish_reason() != pb::FINISH_REASON_UNSPECIFIED;
          const bool chat_start =
              first_chunk[i] && meta.endpoint == Endpoint::kChat;
          ChoicePart part;
          part.index = i;
          part.text = msg.text();
          if (tools) {
            part.text.clear();
            ToolCallParser& parser = *parsers[i];
            std::vector<ToolDelta> deltas = parser.Feed(msg.text());
            if (finished) {
              for (ToolDelta& d : parser.Finish()) deltas.push_back(d);
            }
            ToolDeltasJson(deltas, &part);
            part.called = finished && parser.calls() > 0;
          }
          // Tokens whose text is held back (part of a character, of a
          // possible stop string or of a tool call) still send their ids
          // and logprobs.
          if (!part.text.empty() || !part.tool_calls.empty() || finished ||
              chat_start || (echo && first_chunk[i]) ||
              ((meta.return_token_ids || meta.logprobs) &&
               msg.token_ids_size() > 0)) {
            part.token_ids.assign(msg.token_ids().begin(),
                                  msg.token_ids().end());
            part.logprobs.assign(msg.logprobs().begin(), msg.logprobs().end());
            if (echo && first_chunk[i]) {
              PrependEcho(echo_text[i], msg.prompt_logprobs(), &part);
            }
            part.text_offset = token_bytes[i];
            for (const pb::TokenLogprobs& t : part.logprobs) {
              token_bytes[i] += t.token().size();
            }
            if (!write(SseEvent(ChunkJson(meta, part, msg.finish_reason(),
                                          first_chunk[i])))) {
              return false;
            }
            first_chunk[i] = false;
          }
          return true;
        };
        for (int i = 0; ok && i < k; ++i) ok = emit(i, firsts[i]);
        for (int open = k; open > 0;) {
          Event e = queue->Pop();
          if (e.done) {
            --open;
            if (!e.status.ok() && failed.ok()) {
              failed = e.status;
              cancel_all();  // one choice failed: the response has
            }
            continue;
          }
          if (ok && failed.ok()) ok = emit(e.index, e.msg);
        }
        for (std::thread& t : readers) t.join();
        if (!ok) return false;
        if (!failed.ok()) {
          if (!write(SseEvent(ErrorJson(FromGrpcStatus(failed))))) {
            return false;
          }
        } else if (include_usage) {
          pb::Usage total;
          for (int i = 0; i < k; ++i) AddUsage(usage[i], i % n == 0, &total);
          if (!write(SseEvent(UsageChunkJson(meta, total)))) return false;
        }
        if (!write(SseEvent("[DONE]"))) return false;
        sink.done();
        return true;
      });
}

}  // namespace latentkv::coordinator::http
