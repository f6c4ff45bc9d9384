// Unicode code point classes the byte-level BPE pre-tokenizers need, as the
// regex engines of the reference implementations (the Python `regex` module,
// Oniguruma in HF tokenizers) define them. The tables are generated from
// Python's unicodedata by tools/gen_unicode_tables.py (Unicode version in
// kUnicodeTablesVersion); code points assigned in later Unicode versions are
// in no class here.
//
// Thread-safety: pure functions over constant tables.
#ifndef LATENTKV_MODEL_TOKENIZER_UNICODE_TABLES_H_
#define LATENTKV_MODEL_TOKENIZER_UNICODE_TABLES_H_

#include <cstdint>

namespace latentkv::model {

// The Unicode version the tables were generated from, e.g. "14.0.0".
extern const char kUnicodeTablesVersion[];

// \p{L}: general category Lu, Ll, Lt, Lm or Lo.
bool IsUnicodeLetter(uint32_t cp);
// \p{N}: general category Nd, Nl or No.
bool IsUnicodeNumber(uint32_t cp);
// \s: the White_Space property (U+0009..U+000D, U+0020, U+0085, U+00A0,
// U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
bool IsUnicodeWhiteSpace(uint32_t cp);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_UNICODE_TABLES_H_
