// SentencePieceModel::Load / Parse: the ModelProto wire format (the fields
// of sentencepiece_model.proto we use) into a SentencePieceModel::Spec, and
// Serialize, its inverse.
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/tokenizer/sentencepiece_model.h"

namespace latentkv::model::internal {
namespace {

// A cursor over protobuf wire-format bytes.
class Wire {
 public:
  explicit Wire(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      *v |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool Fixed32(uint32_t* v) {
    if (data_.size() - pos_ < 4) return false;
    std::memcpy(v, data_.data() + pos_, 4);
    pos_ += 4;
    return true;
  }
  bool Bytes(std::string_view* v) {
    uint64_t n;
    if (!Varint(&n) || n > data_.size() - pos_) return false;
    *v = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  // Skips a field of `wire_type`.
  bool Skip(int wire_type) {
    uint64_t v;
    uint32_t f;
    std::string_view s;
    switch (wire_type) {
      case 0:
        return Varint(&v);
      case 1:
        if (data_.size() - pos_ < 8) return false;
        pos_ += 8;
        return true;
      case 2:
        return Bytes(&s);
      case 5:
        return Fixed32(&f);
      default:
        return false;
    }
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// Calls on_field(field, wire_type, wire) for each field of a message;
// on_field consumes the value and returns false on malformed input.
template <typename F>
bool ForEachField(std::string_view msg, F on_field) {
  Wire w(msg);
  while (!w.done()) {
    uint64_t tag;
    if (!w.Varint(&tag)) return false;
    if (!on_field(static_cast<int>(tag >> 3), static_cast<int>(tag & 7), w)) {
      return false;
    }
  }
  return true;
}

// Wire-format writers: a varint, a tag, and the three field kinds we write.
void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void PutTag(int field, int wire_type, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | wire_type, out);
}
// int32 fields: negative values are 10-byte two's-complement varints, as
// protobuf writes them.
void PutInt(int field, int64_t v, std::string* out) {
  PutTag(field, 0, out);
  PutVarint(static_cast<uint64_t>(v), out);
}
void PutFloat(int field, float v, std::string* out) {
  PutTag(field, 5, out);
  char b[4];
  std::memcpy(b, &v, 4);
  out->append(b, 4);
}
void PutBytes(int field, std::string_view v, std::string* out) {
  PutTag(field, 2, out);
  PutVarint(v.size(), out);
  out->append(v);
}

using PieceType = SentencePieceModel::PieceType;
using ModelType = SentencePieceModel::ModelType;

// ModelProto.SentencePiece: piece (1), score (2), type (3).
bool ParsePiece(std::string_view msg, SentencePieceModel::Spec* spec) {
  std::string piece;
  float score = 0;
  PieceType type = PieceType::kNormal;
  const bool ok = ForEachField(msg, [&](int f, int t, Wire& w) {
    uint64_t v;
    uint32_t u;
    std::string_view s;
    if (f == 1 && t == 2) {
      if (!w.Bytes(&s)) return false;
      piece = std::string(s);
    } else if (f == 2 && t == 5) {
      if (!w.Fixed32(&u)) return false;
      std::memcpy(&score, &u, 4);
    } else if (f == 3) {
      if (t != 0 || !w.Varint(&v) || v < 1 || v > 6) return false;
      type = static_cast<PieceType>(v);
    } else {
      return w.Skip(t);
    }
    return true;
  });
  if (!ok) return false;
  spec->pieces.push_back(std::move(piece));
  spec->scores.push_back(score);
  spec->types.push_back(type);
  return true;
}

}  // namespace

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(
    const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "No such file or cannot be opened: " + path;
    return nullptr;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), error);
}

std::unique_ptr<SentencePieceModel> SentencePieceModel::Parse(
    std::string_view bytes, std::string* error) {
  Spec spec;
  auto varint_field = [](Wire& w, int wt, uint64_t* v) {
    return wt == 0 && w.Varint(v);
  };
  const bool ok = ForEachField(bytes, [&](int field, int wt, Wire& w) {
    std::string_view sub;
    if (field == 1 && wt == 2) {  // SentencePiece pieces
      return w.Bytes(&sub) && ParsePiece(sub, &spec);
    }
    if (field == 2 && wt == 2) {  // TrainerSpec
      if (!w.Bytes(&sub)) return false;
      return ForEachField(sub, [&](int f, int t, Wire& tw) {
        uint64_t v;
        if (f == 3 || f == 35 || (f >= 40 && f <= 42)) {
          if (!varint_field(tw, t, &v)) return false;
          const int i = static_cast<int>(static_cast<int64_t>(v));
          if (f == 3) spec.model_type = static_cast<ModelType>(i);
          if (f == 35) spec.byte_fallback = v != 0;
          if (f == 40) spec.unk_id = i;
          if (f == 41) spec.bos_id = i;
          if (f == 42) spec.eos_id = i;
          return true;
        }
        return tw.Skip(t);
      });
    }
    if (field == 3 && wt == 2) {  // NormalizerSpec
      if (!w.Bytes(&sub)) return false;
      return ForEachField(sub, [&](int f, int t, Wire& nw) {
        uint64_t v;
        if (f >= 3 && f <= 5) {
          if (!varint_field(nw, t, &v)) return false;
          if (f == 3) spec.add_dummy_prefix = v != 0;
          if (f == 4) spec.remove_extra_whitespaces = v != 0;
          if (f == 5) spec.escape_whitespaces = v != 0;
          return true;
        }
        return nw.Skip(t);
      });
    }
    return w.Skip(wt);
  });
  if (!ok) {
    *error = "malformed SentencePiece model (protobuf wire format)";
    return nullptr;
  }
  return FromSpec(std::move(spec), error);
}

std::string SentencePieceModel::Serialize(const Spec& spec) {
  std::string out, msg;
  for (size_t i = 0; i < spec.pieces.size(); ++i) {
    msg.clear();
    PutBytes(1, spec.pieces[i], &msg);
    PutFloat(2, i < spec.scores.size() ? spec.scores[i] : 0.0f, &msg);
    PutInt(3,
           static_cast<int>(i < spec.types.size() ? spec.types[i]
                                                  : PieceType::kNormal),
           &msg);
    PutBytes(1, msg, &out);
  }
  msg.clear();  // TrainerSpec
  PutInt(3, static_cast<int>(spec.model_type), &msg);
  PutInt(4, static_cast<int64_t>(spec.pieces.size()), &msg);
  PutInt(35, spec.byte_fallback, &msg);
  PutInt(40, spec.unk_id, &msg);
  PutInt(41, spec.bos_id, &msg);
  PutInt(42, spec.eos_id, &msg);
  PutInt(43, -1, &msg);  // pad_id
  // libsentencepiece finds its special ids by these pieces' names (its
  // defaults are <unk>, <s>, </s>).
  for (const auto [field, id] :
       {std::pair{45, spec.unk_id}, std::pair{46, spec.bos_id},
        std::pair{47, spec.eos_id}}) {
    if (id >= 0 && id < static_cast<int>(spec.pieces.size())) {
      PutBytes(field, spec.pieces[id], &msg);
    }
  }
  PutBytes(2, msg, &out);
  msg.clear();  // NormalizerSpec
  PutBytes(1, "identity", &msg);
  PutInt(3, spec.add_dummy_prefix, &msg);
  PutInt(4, spec.remove_extra_whitespaces, &msg);
  PutInt(5, spec.escape_whitespaces, &msg);
  PutBytes(3, msg, &out);
  return out;
}

}  // namespace latentkv::model::internal
