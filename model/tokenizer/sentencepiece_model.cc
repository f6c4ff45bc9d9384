#include "model/tokenizer/sentencepiece_model.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <queue>
#include <sstream>

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

size_t Utf8Len(char c) {
  const auto b = static_cast<uint8_t>(c);
  if (b < 0x80) return 1;
  if ((b >> 5) == 6) return 2;
  if ((b >> 4) == 14) return 3;
  if ((b >> 3) == 30) return 4;
  return 1;  // invalid byte: a character of its own
}

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581

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
  std::unique_ptr<SentencePieceModel> m(new SentencePieceModel());
  auto varint_field = [](Wire& w, int wt, uint64_t* v) {
    return wt == 0 && w.Varint(v);
  };
  const bool ok = ForEachField(bytes, [&](int field, int wt, Wire& w) {
    std::string_view sub;
    if (field == 1 && wt == 2) {  // SentencePiece pieces
      if (!w.Bytes(&sub)) return false;
      Piece p;
      return ForEachField(sub,
                          [&](int f, int t, Wire& pw) {
                            uint64_t v;
                            uint32_t u;
                            std::string_view s;
                            if (f == 1 && t == 2) {
                              if (!pw.Bytes(&s)) return false;
                              p.piece = std::string(s);
                            } else if (f == 2 && t == 5) {
                              if (!pw.Fixed32(&u)) return false;
                              std::memcpy(&p.score, &u, 4);
                            } else if (f == 3) {
                              if (!varint_field(pw, t, &v) || v < 1 || v > 6)
                                return false;
                              p.type = static_cast<PieceType>(v);
                            } else {
                              return pw.Skip(t);
                            }
                            return true;
                          }) &&
             (m->pieces_.push_back(std::move(p)), true);
    }
    if (field == 2 && wt == 2) {  // TrainerSpec
      if (!w.Bytes(&sub)) return false;
      return ForEachField(sub, [&](int f, int t, Wire& tw) {
        uint64_t v;
        if (f == 3 || f == 35 || (f >= 40 && f <= 42)) {
          if (!varint_field(tw, t, &v)) return false;
          const int i = static_cast<int>(static_cast<int64_t>(v));
          if (f == 3) m->model_type_ = static_cast<ModelType>(i);
          if (f == 35) m->byte_fallback_ = v != 0;
          if (f == 40) m->unk_id_ = i;
          if (f == 41) m->bos_id_ = i;
          if (f == 42) m->eos_id_ = i;
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
          if (f == 3) m->add_dummy_prefix_ = v != 0;
          if (f == 4) m->remove_extra_whitespaces_ = v != 0;
          if (f == 5) m->escape_whitespaces_ = v != 0;
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
  if (m->pieces_.empty()) {
    *error = "SentencePiece model has no pieces";
    return nullptr;
  }
  const int n = m->piece_size();
  if (m->model_type_ != ModelType::kBpe &&
      m->model_type_ != ModelType::kUnigram) {
    *error = "only BPE and UNIGRAM SentencePiece models are supported";
    return nullptr;
  }
  auto check = [&](int id) { return id < n; };
  if (!check(m->unk_id_) || !check(m->bos_id_) || !check(m->eos_id_)) {
    *error = "special token id beyond the vocabulary";
    return nullptr;
  }
  std::fill(std::begin(m->byte_ids_), std::end(m->byte_ids_), -1);
  m->min_score_ = std::numeric_limits<float>::max();
  for (int id = 0; id < n; ++id) {
    const Piece& p = m->pieces_[id];
    if (p.type == PieceType::kByte && p.piece.size() == 6) {
      // "<0xHH>"; anything else is refused (std::stoi threw on it).
      unsigned b = 0;
      const char* hex = p.piece.data() + 3;
      const auto [end, ec] = std::from_chars(hex, hex + 2, b, 16);
      if (p.piece.compare(0, 3, "<0x") != 0 || p.piece[5] != '>' ||
          ec != std::errc() || end != hex + 2) {
        *error = "malformed byte piece " + p.piece;
        return nullptr;
      }
      m->byte_ids_[b] = id;
    }
    if (p.type == PieceType::kNormal || p.type == PieceType::kUserDefined) {
      m->index_.emplace(p.piece, id);
      m->max_piece_bytes_ = std::max(m->max_piece_bytes_, p.piece.size());
      m->min_score_ = std::min(m->min_score_, p.score);
    }
  }
  if (m->index_.empty()) m->min_score_ = 0;
  return m;
}

int SentencePieceModel::Find(std::string_view piece) const {
  auto it = index_.find(std::string(piece));
  return it == index_.end() ? -1 : it->second;
}

std::string SentencePieceModel::Normalize(std::string_view text) const {
  std::string s;
  if (remove_extra_whitespaces_) {
    bool space = true;  // drops leading spaces
    for (char c : text) {
      if (c == ' ') {
        if (!space) s += ' ';
        space = true;
      } else {
        s += c;
        space = false;
      }
    }
    if (!s.empty() && s.back() == ' ') s.pop_back();
  } else {
    s = std::string(text);
  }
  if (s.empty()) return s;
  if (add_dummy_prefix_) s.insert(s.begin(), ' ');
  if (!escape_whitespaces_) return s;
  std::string out;
  for (char c : s) {
    if (c == ' ') {
      out += kSpace;
    } else {
      out += c;
    }
  }
  return out;
}

void SentencePieceModel::AppendUnknown(std::string_view ch,
                                       std::vector<int>* ids) const {
  if (byte_fallback_) {
    bool all = true;
    for (char c : ch) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
    if (all) {
      for (char c : ch) ids->push_back(byte_ids_[static_cast<uint8_t>(c)]);
      return;
    }
  }
  // Runs of unknown characters become one unknown token, as SentencePiece.
  if (!ids->empty() && ids->back() == unk_id_ && !byte_fallback_) return;
  ids->push_back(unk_id_);
}

std::vector<int> SentencePieceModel::Encode(std::string_view text) const {
  const std::string s = Normalize(text);
  std::vector<int> ids;
  if (s.empty()) return ids;
  if (model_type_ == ModelType::kBpe) {
    EncodeBpe(s, &ids);
  } else {
    EncodeUnigram(s, &ids);
  }
  return ids;
}

void SentencePieceModel::EncodeBpe(std::string_view s,
                                   std::vector<int>* ids) const {
  struct Sym {
    size_t begin, len;
    int prev, next;
  };
  std::vector<Sym> syms;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(Utf8Len(s[i]), s.size() - i);
    const int k = static_cast<int>(syms.size());
    syms.push_back({i, n, k - 1, -1});
    if (k > 0) syms[k - 1].next = k;
    i += n;
  }
  struct Cand {
    float score;
    int left, right;
    size_t len;
  };
  auto worse = [](const Cand& a, const Cand& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> agenda(worse);
  auto consider = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const size_t len = syms[l].len + syms[r].len;
    const int id = Find(s.substr(syms[l].begin, len));
    if (id >= 0) agenda.push({pieces_[id].score, l, r, len});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i)
    consider(i, i + 1);
  while (!agenda.empty()) {
    const Cand c = agenda.top();
    agenda.pop();
    Sym& l = syms[c.left];
    if (l.len == 0 || l.next != c.right || syms[c.right].len == 0 ||
        l.len + syms[c.right].len != c.len) {
      continue;  // stale
    }
    Sym& r = syms[c.right];
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    consider(l.prev, c.left);
    consider(c.left, l.next);
  }
  for (int i = 0; i >= 0 && i < static_cast<int>(syms.size());
       i = syms[i].next) {
    const std::string_view piece = s.substr(syms[i].begin, syms[i].len);
    const int id = Find(piece);
    if (id >= 0) {
      ids->push_back(id);
    } else {
      for (size_t j = 0; j < piece.size();) {
        const size_t n = std::min(Utf8Len(piece[j]), piece.size() - j);
        AppendUnknown(piece.substr(j, n), ids);
        j += n;
      }
    }
  }
}

void SentencePieceModel::EncodeUnigram(std::string_view s,
                                       std::vector<int>* ids) const {
  // Viterbi over character boundaries; an uncovered character may be taken
  // alone as unknown with SentencePiece's penalty (min score - 10).
  const size_t n = s.size();
  constexpr double kNone = -std::numeric_limits<double>::infinity();
  std::vector<double> best(n + 1, kNone);
  std::vector<size_t> from(n + 1, 0);
  std::vector<int> via(n + 1, -1);
  best[0] = 0;
  for (size_t i = 0; i < n;) {
    const size_t ch = std::min(Utf8Len(s[i]), n - i);
    if (best[i] != kNone) {
      bool single_covered = false;
      for (size_t end = i + ch; end <= n && end - i <= max_piece_bytes_;) {
        const int id = Find(s.substr(i, end - i));
        if (id >= 0) {
          if (end == i + ch) single_covered = true;
          const double sc = best[i] + pieces_[id].score;
          if (sc > best[end]) {
            best[end] = sc;
            from[end] = i;
            via[end] = id;
          }
        }
        if (end == n) break;
        end += std::min(Utf8Len(s[end]), n - end);
      }
      if (!single_covered) {
        const double sc = best[i] + min_score_ - 10.0;
        if (sc > best[i + ch]) {
          best[i + ch] = sc;
          from[i + ch] = i;
          via[i + ch] = -1;
        }
      }
    }
    i += ch;
  }
  std::vector<std::pair<size_t, int>> path;  // (start, id or -1)
  for (size_t e = n; e > 0; e = from[e]) path.push_back({from[e], via[e]});
  std::reverse(path.begin(), path.end());
  for (size_t k = 0; k < path.size(); ++k) {
    const size_t end = k + 1 < path.size() ? path[k + 1].first : n;
    if (path[k].second >= 0) {
      ids->push_back(path[k].second);
    } else {
      AppendUnknown(s.substr(path[k].first, end - path[k].first), ids);
    }
  }
}

}  // namespace latentkv::model::internal
