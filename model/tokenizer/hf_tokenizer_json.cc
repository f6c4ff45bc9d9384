// HF tokenizers' tokenizer.json (+ tokenizer_config.json) for byte-level BPE
// models: ReadHfTokenizerJson / LoadHfTokenizerJson and
// WriteHfTokenizerJson (see bpe_tokenizer.h and tokenizer.h).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "model/tokenizer/bpe_pretokenizer.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace latentkv::model {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

absl::StatusOr<Json> ParseJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON"));
  }
  return j;
}

std::string TypeOf(const Json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) {
    return j["type"].get<std::string>();
  }
  return j.dump().substr(0, 80);
}

bool BoolOr(const Json& j, const char* key, bool fallback) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_boolean()) {
    return fallback;
  }
  return j[key].get<bool>();
}

// A ByteLevel pre-tokenizer with the given use_regex and no prefix space.
bool IsByteLevel(const Json& j, bool use_regex) {
  return j.is_object() && TypeOf(j) == "ByteLevel" &&
         !BoolOr(j, "add_prefix_space", false) &&
         BoolOr(j, "use_regex", true) == use_regex;
}

absl::StatusOr<PreTokenizerKind> DetectPreTokenizer(const Json& pre) {
  if (IsByteLevel(pre, /*use_regex=*/true)) return PreTokenizerKind::kGpt2;
  if (pre.is_object() && TypeOf(pre) == "Sequence" &&
      pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
      pre["pretokenizers"].size() == 2) {
    const Json& first = pre["pretokenizers"][0];
    const Json& second = pre["pretokenizers"][1];
    if (TypeOf(first) == "Digits" &&
        BoolOr(first, "individual_digits", false) &&
        IsByteLevel(second, /*use_regex=*/true)) {
      return PreTokenizerKind::kSmollm;
    }
    if (TypeOf(first) == "Split" && first.contains("pattern") &&
        first["pattern"].is_object() && first["pattern"].contains("Regex") &&
        first["pattern"]["Regex"].is_string() &&
        first.value("behavior", "") == "Isolated" &&
        !BoolOr(first, "invert", false) &&
        IsByteLevel(second, /*use_regex=*/false)) {
      const std::string regex = first["pattern"]["Regex"].get<std::string>();
      for (PreTokenizerKind kind :
           {PreTokenizerKind::kLlama3, PreTokenizerKind::kQwen2}) {
        if (regex == PreTokenizerSplitRegex(kind)) return kind;
      }
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported pre_tokenizer ", pre.dump().substr(0, 300),
      " (supported: ByteLevel; Sequence[Digits(individual_digits), "
      "ByteLevel]; Sequence[Split(llama-3 or qwen2 regex), "
      "ByteLevel(use_regex false)])"));
}

// "<s>" or {"content": "<s>", ...}; nullopt otherwise.
std::optional<std::string> TokenString(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return std::nullopt;
}

// The id of a leading special token of a TemplateProcessing post-processor
// (possibly inside a Sequence); -1 when none.
int32_t TemplateBos(const Json& post,
                    const absl::flat_hash_map<std::string, int32_t>& ids) {
  if (!post.is_object()) return -1;
  if (TypeOf(post) == "Sequence" && post.contains("processors") &&
      post["processors"].is_array()) {
    for (const Json& p : post["processors"]) {
      const int32_t id = TemplateBos(p, ids);
      if (id >= 0) return id;
    }
    return -1;
  }
  if (TypeOf(post) != "TemplateProcessing" || !post.contains("single") ||
      !post["single"].is_array() || post["single"].empty()) {
    return -1;
  }
  const Json& first = post["single"][0];
  if (!first.is_object() || !first.contains("SpecialToken")) return -1;
  const Json& special = first["SpecialToken"];
  if (!special.is_object() || !special.contains("id") ||
      !special["id"].is_string()) {
    return -1;
  }
  const std::string name = special["id"].get<std::string>();
  if (post.contains("special_tokens") && post["special_tokens"].is_object() &&
      post["special_tokens"].contains(name)) {
    const Json& entry = post["special_tokens"][name];
    if (entry.contains("ids") && entry["ids"].is_array() &&
        entry["ids"].size() == 1 && entry["ids"][0].is_number_integer()) {
      return entry["ids"][0].get<int32_t>();
    }
  }
  auto it = ids.find(name);
  return it == ids.end() ? -1 : it->second;
}

absl::StatusOr<BpeVocab> ParseTokenizerJson(const Json& j,
                                            const std::string& path) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    return bad("no model object");
  }
  const Json& model = j["model"];
  if (TypeOf(model) != "BPE") {
    return bad(absl::StrCat("model type ", TypeOf(model),
                            " is not supported (only BPE)"));
  }
  if (BoolOr(model, "byte_fallback", false)) {
    return bad("BPE with byte_fallback is not byte-level BPE");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() &&
        !model[key].get<std::string>().empty()) {
      return bad(absl::StrCat("BPE ", key, " is not supported"));
    }
  }
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    return bad(absl::StrCat("normalizer ", TypeOf(j["normalizer"]),
                            " is not supported (only null)"));
  }
  if (!j.contains("pre_tokenizer")) return bad("no pre_tokenizer");
  auto pre = DetectPreTokenizer(j["pre_tokenizer"]);
  if (!pre.ok()) return bad(std::string(pre.status().message()));

  BpeVocab vocab;
  vocab.pre = std::string(PreTokenizerName(*pre));
  vocab.ignore_merges = BoolOr(model, "ignore_merges", false);
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return bad("model.vocab is not an object");
  }
  // id -> (token, type); filled from vocab, then added_tokens. Ids have no
  // gaps, so every id is below the number of entries: checked before any
  // allocation (an id of 2^31 - 2 in a 16 KB file asked for 17 GB).
  const size_t entries =
      model["vocab"].size() +
      (j.contains("added_tokens") && j["added_tokens"].is_array()
           ? j["added_tokens"].size()
           : 0);
  std::vector<std::optional<std::string>> tokens;
  std::vector<int32_t> types;
  auto put = [&](int64_t id, const std::string& token,
                 int32_t type) -> absl::Status {
    if (id < 0 || id >= INT32_MAX || static_cast<size_t>(id) >= entries) {
      return bad(absl::StrCat("token id ", id, " out of range (", entries,
                              " vocab and added tokens: ids have "
                              "gaps)"));
    }
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(id + 1);
      types.resize(id + 1, kBpeTokenNormal);
    }
    tokens[id] = token;
    types[id] = type;
    return absl::OkStatus();
  };
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return bad("model.vocab id not an integer");
    absl::Status s = put(id.get<int64_t>(), token, kBpeTokenNormal);
    if (!s.ok()) return s;
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) return bad("added_tokens not an array");
    for (const Json& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string()) {
        return bad("added_tokens entry without integer id and content");
      }
      const bool special = BoolOr(a, "special", false);
      absl::Status s =
          put(a["id"].get<int64_t>(), a["content"].get<std::string>(),
              special ? kBpeTokenControl : kBpeTokenUserDefined);
      if (!s.ok()) return s;
    }
  }
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (!tokens[id].has_value()) {
      return bad(absl::StrCat("no token has id ", id, " (ids have gaps)"));
    }
    vocab.tokens.push_back(*std::move(tokens[id]));
  }
  vocab.token_types = std::move(types);

  if (model.contains("merges") && !model["merges"].is_null()) {
    if (!model["merges"].is_array()) return bad("model.merges not an array");
    for (const Json& m : model["merges"]) {
      if (m.is_string()) {
        vocab.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() &&
                 m[1].is_string()) {
        const std::string a = m[0].get<std::string>();
        const std::string b = m[1].get<std::string>();
        if (a.find(' ') != std::string::npos ||
            b.find(' ') != std::string::npos) {
          return bad(absl::StrCat("merge [", a, ", ", b,
                                  "] has a space inside a token"));
        }
        vocab.merges.push_back(absl::StrCat(a, " ", b));
      } else {
        return bad(absl::StrCat("malformed merge ", m.dump().substr(0, 80)));
      }
    }
  }

  absl::flat_hash_map<std::string, int32_t> ids;
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    ids.emplace(vocab.tokens[id], static_cast<int32_t>(id));
  }
  auto lookup = [&](const std::string& token) -> absl::StatusOr<int32_t> {
    auto it = ids.find(token);
    if (it == ids.end()) {
      return bad(absl::StrCat("token '", token, "' is not in the vocab"));
    }
    return it->second;
  };
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto unk = lookup(model["unk_token"].get<std::string>());
    if (!unk.ok()) return unk.status();
    vocab.unk_id = *unk;
  }

  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(config_path, ec)) {
    auto config = ParseJsonFile(config_path.string());
    if (!config.ok()) return config.status();
    if (!config->is_object()) return bad("tokenizer_config.json not an object");
    for (auto [key, out] :
         {std::pair<const char*, int32_t*>{"bos_token", &vocab.bos_id},
          {"eos_token", &vocab.eos_id}}) {
      if (!config->contains(key)) continue;
      std::optional<std::string> token = TokenString((*config)[key]);
      if (!token.has_value()) continue;  // null: none
      auto id = lookup(*token);
      if (!id.ok()) return id.status();
      *out = *id;
    }
    vocab.add_bos = BoolOr(*config, "add_bos_token", false);
    if (!config->contains("add_bos_token") && j.contains("post_processor")) {
      vocab.add_bos = TemplateBos(j["post_processor"], ids) >= 0;
    }
  } else if (j.contains("post_processor")) {
    vocab.bos_id = TemplateBos(j["post_processor"], ids);
    vocab.add_bos = vocab.bos_id >= 0;
  }
  return vocab;
}

absl::Status WriteFile(const std::filesystem::path& path,
                       const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  }
  return absl::OkStatus();
}

OrderedJson ByteLevelJson(bool use_regex) {
  OrderedJson j;
  j["type"] = "ByteLevel";
  j["add_prefix_space"] = false;
  j["trim_offsets"] = true;
  j["use_regex"] = use_regex;
  return j;
}

OrderedJson PreTokenizerJson(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      return ByteLevelJson(true);
    case PreTokenizerKind::kSmollm: {
      OrderedJson digits;
      digits["type"] = "Digits";
      digits["individual_digits"] = true;
      OrderedJson seq;
      seq["type"] = "Sequence";
      seq["pretokenizers"] = OrderedJson::array({digits, ByteLevelJson(true)});
      return seq;
    }
    case PreTokenizerKind::kLlama3:
    case PreTokenizerKind::kQwen2: {
      OrderedJson split;
      split["type"] = "Split";
      split["pattern"] = {{"Regex", std::string(PreTokenizerSplitRegex(kind))}};
      split["behavior"] = "Isolated";
      split["invert"] = false;
      OrderedJson seq;
      seq["type"] = "Sequence";
      seq["pretokenizers"] = OrderedJson::array({split, ByteLevelJson(false)});
      return seq;
    }
  }
  return ByteLevelJson(true);
}

}  // namespace

absl::StatusOr<BpeVocab> ReadHfTokenizerJson(const std::string& path) {
  auto j = ParseJsonFile(path);
  if (!j.ok()) return j.status();
  return ParseTokenizerJson(*j, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizerJson(
    const std::string& path) {
  auto vocab = ReadHfTokenizerJson(path);
  if (!vocab.ok()) return vocab.status();
  auto tokenizer = MakeBpeTokenizer(*std::move(vocab));
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::Status WriteHfTokenizerJson(const BpeVocab& vocab, const std::string& dir,
                                  const std::string& chat_template) {
  {
    auto check = MakeBpeTokenizer(vocab);  // validates the vocab
    if (!check.ok()) return check.status();
  }
  const PreTokenizerKind pre = *PreTokenizerFromName(vocab.pre);
  auto type_of = [&](size_t id) {
    return vocab.token_types.empty() ? kBpeTokenNormal : vocab.token_types[id];
  };
  auto token_or_null = [&](int32_t id) -> OrderedJson {
    if (id < 0) return nullptr;
    return vocab.tokens[id];
  };

  OrderedJson added = OrderedJson::array();
  OrderedJson model_vocab = OrderedJson::object();
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    model_vocab[vocab.tokens[id]] = id;
    const int32_t type = type_of(id);
    if (type == kBpeTokenControl || type == kBpeTokenUserDefined) {
      OrderedJson a;
      a["id"] = id;
      a["content"] = vocab.tokens[id];
      a["single_word"] = false;
      a["lstrip"] = false;
      a["rstrip"] = false;
      a["normalized"] = false;
      a["special"] = type == kBpeTokenControl;
      added.push_back(std::move(a));
    }
  }
  OrderedJson model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = token_or_null(vocab.unk_id);
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = vocab.ignore_merges;
  model["vocab"] = std::move(model_vocab);
  model["merges"] = vocab.merges;

  OrderedJson post;
  if (vocab.add_bos && vocab.bos_id >= 0) {
    const std::string& bos = vocab.tokens[vocab.bos_id];
    auto special = [&]() {
      return OrderedJson{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
    };
    auto seq = [](const char* id) {
      return OrderedJson{{"Sequence", {{"id", id}, {"type_id", 0}}}};
    };
    post["type"] = "TemplateProcessing";
    post["single"] = OrderedJson::array({special(), seq("A")});
    post["pair"] =
        OrderedJson::array({special(), seq("A"), special(), seq("B")});
    post["special_tokens"] = {
        {bos, {{"id", bos}, {"ids", {vocab.bos_id}}, {"tokens", {bos}}}}};
  } else {
    post = ByteLevelJson(true);
    post["trim_offsets"] = false;
  }

  OrderedJson tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = std::move(added);
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = PreTokenizerJson(pre);
  tok["post_processor"] = std::move(post);
  tok["decoder"] = ByteLevelJson(true);
  tok["model"] = std::move(model);

  OrderedJson config;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  config["add_bos_token"] = vocab.add_bos;
  config["add_eos_token"] = false;
  config["bos_token"] = token_or_null(vocab.bos_id);
  config["eos_token"] = token_or_null(vocab.eos_id);
  config["unk_token"] = token_or_null(vocab.unk_id);
  config["clean_up_tokenization_spaces"] = false;
  if (!chat_template.empty()) config["chat_template"] = chat_template;

  const std::filesystem::path d(dir);
  const auto replace = OrderedJson::error_handler_t::strict;
  std::string tok_text, config_text;
  try {
    tok_text = tok.dump(2, ' ', false, replace);
    config_text = config.dump(2, ' ', false, replace);
  } catch (const OrderedJson::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab is not valid UTF-8: ", e.what()));
  }
  absl::Status s = WriteFile(d / "tokenizer.json", tok_text + "\n");
  if (!s.ok()) return s;
  return WriteFile(d / "tokenizer_config.json", config_text + "\n");
}

}  // namespace latentkv::model
