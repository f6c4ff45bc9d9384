#include "model/tokenizer/sentencepiece_model.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <memory>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace latentkv::model::internal {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";        // U+2581
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// SentencePiece's OneCharLen: the length a lead byte announces.
size_t OneCharLen(char c) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[static_cast<uint8_t>(c) >> 4];
}

// The length of the valid UTF-8 character at s[0] (s non-empty), or 0 when
// s[0] does not start one (SentencePiece's DecodeUTF8: over-long forms,
// surrogates, code points above U+10FFFF and truncated sequences are
// invalid).
size_t ValidUtf8Len(std::string_view s) {
  const uint8_t b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return 1;
  auto trail = [&](size_t i) {
    return (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80;
  };
  auto bits = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<uint8_t>(s[i]) & 0x3F);
  };
  if (s.size() >= 2 && (b0 & 0xE0) == 0xC0) {
    const uint32_t cp = ((b0 & 0x1Fu) << 6) | bits(1);
    return trail(1) && cp >= 0x80 ? 2 : 0;
  }
  if (s.size() >= 3 && (b0 & 0xF0) == 0xE0) {
    const uint32_t cp = ((b0 & 0x0Fu) << 12) | (bits(1) << 6) | bits(2);
    const bool surrogate = cp >= 0xD800 && cp < 0xE000;
    return trail(1) && trail(2) && cp >= 0x800 && !surrogate ? 3 : 0;
  }
  if (s.size() >= 4 && (b0 & 0xF8) == 0xF0) {
    const uint32_t cp =
        ((b0 & 0x07u) << 18) | (bits(1) << 12) | (bits(2) << 6) | bits(3);
    return trail(1) && trail(2) && trail(3) && cp >= 0x10000 && cp <= 0x10FFFF
               ? 4
               : 0;
  }
  return 0;
}

}  // namespace

std::unique_ptr<SentencePieceModel> SentencePieceModel::FromSpec(
    Spec spec, std::string* error) {
  const size_t n = spec.pieces.size();
  if (n == 0) {
    *error = "SentencePiece model has no pieces";
    return nullptr;
  }
  if (spec.scores.size() != n || spec.types.size() != n) {
    *error = "SentencePiece model: scores or types not one per piece";
    return nullptr;
  }
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    *error = "SentencePiece model: too many pieces";
    return nullptr;
  }
  if (spec.model_type != ModelType::kBpe &&
      spec.model_type != ModelType::kUnigram) {
    *error = "only BPE and UNIGRAM SentencePiece models are supported";
    return nullptr;
  }
  const int size = static_cast<int>(n);
  if (spec.unk_id >= size || spec.bos_id >= size || spec.eos_id >= size) {
    *error = "special token id beyond the vocabulary";
    return nullptr;
  }
  std::unique_ptr<SentencePieceModel> m(new SentencePieceModel());
  m->model_type_ = spec.model_type;
  m->byte_fallback_ = spec.byte_fallback;
  m->add_dummy_prefix_ = spec.add_dummy_prefix;
  m->remove_extra_whitespaces_ = spec.remove_extra_whitespaces;
  m->escape_whitespaces_ = spec.escape_whitespaces;
  m->unk_id_ = spec.unk_id;
  m->bos_id_ = spec.bos_id;
  m->eos_id_ = spec.eos_id;
  std::fill(std::begin(m->byte_ids_), std::end(m->byte_ids_), -1);
  m->min_score_ = std::numeric_limits<float>::max();
  m->pieces_.resize(n);
  m->index_.reserve(n);
  bool any_scored = false;
  for (int id = 0; id < size; ++id) {
    Piece& p = m->pieces_[id];
    p.piece = std::move(spec.pieces[id]);
    p.score = spec.scores[id];
    p.type = spec.types[id];
    const int type = static_cast<int>(p.type);
    if (type < 1 || type > 6) {
      *error = "SentencePiece piece type not in 1..6";
      return nullptr;
    }
    if (p.type == PieceType::kByte) {
      // "<0xHH>"; anything else is refused (std::stoi threw on it).
      unsigned b = 0;
      const char* hex = p.piece.data() + 3;
      const bool ok = p.piece.size() == 6 &&
                      p.piece.compare(0, 3, "<0x") == 0 && p.piece[5] == '>' &&
                      std::from_chars(hex, hex + 2, b, 16).ptr == hex + 2;
      if (!ok) {
        *error = "malformed byte piece " + p.piece;
        return nullptr;
      }
      m->byte_ids_[b] = id;
    }
    if (p.piece.empty()) continue;  // never matched
    const bool usable =
        p.type == PieceType::kNormal || p.type == PieceType::kUserDefined;
    if (usable || p.type == PieceType::kUnused) {
      m->index_.emplace(absl::string_view(p.piece.data(), p.piece.size()), id);
    }
    if (p.type == PieceType::kUserDefined) m->user_defined_.Add(p.piece, id);
    if (usable) {
      m->max_piece_bytes_ = std::max(m->max_piece_bytes_, p.piece.size());
      m->min_score_ = std::min(m->min_score_, p.score);
      any_scored = true;
    }
  }
  if (!any_scored) m->min_score_ = 0;
  return m;
}

int SentencePieceModel::Find(std::string_view piece) const {
  // Abseil's string_view is its own type here (Debian's build).
  auto it = index_.find(absl::string_view(piece.data(), piece.size()));
  return it == index_.end() ? -1 : it->second;
}

std::string SentencePieceModel::Normalize(std::string_view text) const {
  // One normalization unit at the front of `in`: a user-defined piece
  // (copied as it is), a valid character, or U+FFFD for one invalid byte.
  auto unit = [this](std::string_view in) {
    const PrefixMatcher::Result ud = user_defined_.Match(in);
    if (ud.length > 0) {
      return std::make_pair(in.substr(0, ud.length), ud.length);
    }
    const size_t n = ValidUtf8Len(in);
    if (n == 0) return std::make_pair(kReplacement, size_t{1});
    return std::make_pair(in.substr(0, n), n);
  };
  if (remove_extra_whitespaces_) {
    while (!text.empty()) {
      const auto [piece, consumed] = unit(text);
      if (piece != " ") break;
      text.remove_prefix(consumed);
    }
  }
  std::string out;
  if (text.empty()) return out;
  out.reserve(text.size() + text.size() / 2 + 4);
  const std::string_view space = escape_whitespaces_ ? kSpace : " ";
  if (add_dummy_prefix_) out += space;
  bool is_prev_space = remove_extra_whitespaces_;
  while (!text.empty()) {
    auto [piece, consumed] = unit(text);
    while (is_prev_space && !piece.empty() && piece[0] == ' ') {
      piece.remove_prefix(1);
    }
    if (!piece.empty()) {
      for (char c : piece) {
        if (c == ' ') {
          out += space;
        } else {
          out += c;
        }
      }
      is_prev_space = piece.back() == ' ';
    }
    text.remove_prefix(consumed);
    if (!remove_extra_whitespaces_) is_prev_space = false;
  }
  if (remove_extra_whitespaces_) {
    while (out.size() >= space.size() &&
           std::string_view(out).substr(out.size() - space.size()) == space) {
      out.resize(out.size() - space.size());
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
  if (unk_id_ < 0) return;  // no unknown piece: dropped
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
    bool frozen;  // a user-defined piece: never merged
  };
  std::vector<Sym> syms;
  syms.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t ud = user_defined_.Match(s.substr(i)).length;
    const size_t n = ud > 0 ? ud : std::min(OneCharLen(s[i]), s.size() - i);
    const int k = static_cast<int>(syms.size());
    syms.push_back({i, n, k - 1, -1, ud > 0});
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
  // Unused piece -> the two symbols it was merged from (the latest pair
  // proposed, as SentencePiece's rev_merge).
  absl::flat_hash_map<std::string_view,
                      std::pair<std::string_view, std::string_view>>
      rev_merge;
  auto consider = [&](int l, int r) {
    if (l < 0 || r < 0 || syms[l].frozen || syms[r].frozen) return;
    const size_t len = syms[l].len + syms[r].len;
    const std::string_view piece = s.substr(syms[l].begin, len);
    const int id = Find(piece);
    if (id < 0) return;
    agenda.push({pieces_[id].score, l, r, len});
    if (pieces_[id].type == PieceType::kUnused) {
      rev_merge[piece] = {s.substr(syms[l].begin, syms[l].len),
                          s.substr(syms[r].begin, syms[r].len)};
    }
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) {
    consider(i, i + 1);
  }
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
  // Emits the symbols, splitting unused pieces back (an explicit stack: a
  // hostile vocabulary may chain many unused merges).
  std::vector<std::string_view> stack;
  for (int i = 0; i >= 0 && i < static_cast<int>(syms.size());
       i = syms[i].next) {
    stack.push_back(s.substr(syms[i].begin, syms[i].len));
    while (!stack.empty()) {
      const std::string_view piece = stack.back();
      stack.pop_back();
      const int id = Find(piece);
      if (id >= 0 && pieces_[id].type == PieceType::kUnused) {
        auto it = rev_merge.find(piece);
        if (it != rev_merge.end()) {
          stack.push_back(it->second.second);
          stack.push_back(it->second.first);
          continue;
        }
      }
      if (id >= 0) {
        ids->push_back(id);
        continue;
      }
      for (size_t j = 0; j < piece.size();) {
        const size_t n = std::min(OneCharLen(piece[j]), piece.size() - j);
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
    const size_t ch = std::min(OneCharLen(s[i]), n - i);
    if (best[i] != kNone) {
      bool single_covered = false;
      for (size_t end = i + ch; end <= n && end - i <= max_piece_bytes_;) {
        const int id = Find(s.substr(i, end - i));
        if (id >= 0 && pieces_[id].type != PieceType::kUnused) {
          if (end == i + ch) single_covered = true;
          const double sc = best[i] + pieces_[id].score;
          if (sc > best[end]) {
            best[end] = sc;
            from[end] = i;
            via[end] = id;
          }
        }
        if (end == n) break;
        end += std::min(OneCharLen(s[end]), n - end);
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
