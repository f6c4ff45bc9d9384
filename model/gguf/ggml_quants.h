// ggml's block formats that latentkv reads by dequantizing: the k-quants
// (super-blocks of 256 elements: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and the
// 5-bit Q5_0 / Q5_1 (blocks of 32), laid out as ggml writes them into GGUF
// files (little-endian, packed, unaligned). Per block:
//   q5_0 (22 B): f16 d; u8 qh[4]; u8 qs[16]. Element j < 16 takes the low
//        nibble of qs[j] and bit j of qh (as bit 4), element j + 16 the
//        high nibble and bit j + 16; x = d * (q - 16).
//   q5_1 (24 B): f16 d, m; u8 qh[4]; u8 qs[16]; the same q, x = d * q + m.
//   q2_K (84 B): u8 scales[16] (low nibble: scale, high: min); u8 qs[64];
//        f16 d, dmin. 16 sub-blocks of 16: x = d*sc * q - dmin*mn, q the
//        2-bit field; each half (128) walks qs[32] four times, shifting 2.
//   q3_K (110 B): u8 hmask[32]; u8 qs[64]; u8 scales[12] (16 6-bit scales,
//        biased by 32); f16 d. q = 2 low bits from qs, minus 4 unless the
//        hmask bit is set; x = d * (scale - 32) * q.
//   q4_K (144 B): f16 d, dmin; u8 scales[12] (8 6-bit scales and 8 6-bit
//        mins); u8 qs[128]. 8 sub-blocks of 32: x = d*sc * q - dmin*mn, the
//        low nibbles of 32 bytes then their high nibbles.
//   q5_K (176 B): f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]: q4_K
//        with a fifth bit from qh (bit 2i for sub-block 2i, 2i+1 for 2i+1).
//   q6_K (210 B): u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. q = 4 low
//        bits from ql and 2 high from qh, minus 32; x = d * scale * q.
// Arithmetic is float32 in the order written above (d * scale first, then
// times q, then minus the min's product), with no fused multiply-add, so
// results are reproducible across compilers; tests check them against
// gguf-py's numpy implementation (tools/reference/ggml_quants_reference.py).
// Thread-safety: pure functions.
#ifndef LATENTKV_MODEL_GGUF_GGML_QUANTS_H_
#define LATENTKV_MODEL_GGUF_GGML_QUANTS_H_

#include <cstdint>
#include <optional>

namespace latentkv::model {

// ggml_type ids of the formats above.
enum class GgmlQuant : uint32_t {
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
};

struct GgmlQuantLayout {
  int block_elems;  // 32 or 256
  int block_bytes;
  const char* name;  // "q4_K", ...
};

// The layout of ggml type `type`, or nullopt when it is none of the above.
std::optional<GgmlQuantLayout> GgmlQuantLayoutOf(uint32_t type);

// Dequantizes `n` elements (n a multiple of the block size; checked) of
// type `type` (one of the above; checked) from `src` into `dst`.
void DequantizeGgml(uint32_t type, const uint8_t* src, int64_t n, float* dst);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_GGUF_GGML_QUANTS_H_
