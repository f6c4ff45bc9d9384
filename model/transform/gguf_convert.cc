#include "model/transform/gguf_convert.h"

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/gguf/gguf_file.h"
#include "model/gguf_loader.h"
#include "model/tokenizer/bpe_tokenizer.h"
#include "model/tokenizer/builtin_chat_templates.h"
#include "model/tokenizer/gguf_sentencepiece.h"
#include "model/transform/model_writer.h"

namespace latentkv::model::transform {
absl::Status WriteGgufTokenizer(const GgufFile& file,
                                const std::string& out_dir) {
  // SentencePiece vocabularies (tokenizer.ggml.model "llama") become
  // tokenizer.model, byte-level BPE ones tokenizer.json. Everything is read
  // (and refused) before anything is written.
  const bool sentencepiece =
      file.GetString("tokenizer.ggml.model").value_or("") == "llama";
  absl::StatusOr<BpeVocab> bpe;
  absl::StatusOr<GgufSentencePieceVocab> spm;
  if (sentencepiece) {
    spm = ReadGgufSentencePieceVocab(file);
    if (!spm.ok()) return spm.status();
  } else {
    bpe = ReadGgufBpeVocab(file);
    if (!bpe.ok()) return bpe.status();
  }
  std::string chat_template;
  if (file.Has("tokenizer.chat_template")) {
    auto t = file.GetString("tokenizer.chat_template");
    if (!t.ok()) return t.status();
    chat_template = *t;
  } else if (auto arch = file.GetString("general.architecture"); arch.ok()) {
    // What serving the file would use (the family's built-in template).
    chat_template = BuiltinChatTemplate(*arch).value_or("");
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", out_dir, ": ", ec.message()));
  }
  if (sentencepiece) {
    return WriteSentencePieceTokenizerDir(*spm, out_dir, chat_template);
  }
  return WriteHfTokenizerJson(*bpe, out_dir, chat_template);
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadSourceModel(
    const std::string& model_path) {
  LoadOptions lo;
  lo.matrix_dtype = DType::kF32;  // GGUF: dequantized; safetensors: as ever
  return LoadModel(model_path, lo);
}

absl::Status WriteModelTokenizer(const ModelWeights& src,
                                 const std::string& out_dir) {
  if (src.gguf == nullptr) return absl::OkStatus();
  return WriteGgufTokenizer(*src.gguf, out_dir);
}

absl::Status ConvertGguf(const std::string& gguf_path,
                         const std::string& out_dir, DType dtype) {
  if (IsBlockQuantized(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype ", std::string(DTypeName(dtype)),
        ": safetensors output holds f32, bf16 or f16; serve the .gguf "
        "directly to keep its weights quantized"));
  }
  auto path = FindGgufFile(gguf_path);
  if (!path.ok()) return path.status();
  auto w = LoadSourceModel(*path);
  if (!w.ok()) return w.status();
  const ModelWeights& m = **w;
  // The tokenizer first: a model we cannot tokenize for is not converted.
  absl::Status s = WriteModelTokenizer(m, out_dir);
  if (!s.ok()) return s;
  std::vector<AttentionTensors> attn(m.config.num_layers);
  for (int l = 0; l < m.config.num_layers; ++l) {
    const LayerWeights& lw = m.layers[l];
    attn[l].q = F32Copy(lw.q_proj);
    attn[l].k = F32Copy(lw.k_proj);
    attn[l].v = F32Copy(lw.v_proj);
    attn[l].o = F32Copy(lw.o_proj);
  }
  const std::string src_dir =
      std::filesystem::path(*path).parent_path().string();
  return WriteConvertedModel(
      m, src_dir.empty() ? "." : src_dir, m.config, attn, out_dir, dtype,
      absl::StrCat("gguf:", std::filesystem::path(*path).filename().string()),
      /*copy_tokenizer=*/false);
}

}  // namespace latentkv::model::transform
