// int4-weight matmuls of the expert kernel, on the stored blocks: no copy of a weight is made.
//
// int8 (accuracy_level 4): each weight row is read in chunks of 64 bytes (128 values, low nibble =
// even value, high nibble = odd one); the two nibble vectors meet the prepared even/odd int8
// activations in dot-product instructions (AVX512-VNNI vpdpbusd on 16 lanes, AVX-VNNI on 8, or
// AVX2 vpmaddubsw + vpmaddwd), each 32-bit lane summing the 8 exact products of one block, offset
// by -8·Σa (the stored symmetric zero point). A lane's integer times (activation scale × weight
// scale) is added to fp32 lane sums, reduced once per output. Up to 4 activation rows share each
// weight chunk loaded (decode: a chosen expert is streamed once for all its rows); experts with
// kPanelMin rows or more take the blocked kernel instead (moe_panel.cc, called by moe_cpu.cc).
// fp32 (accuracy_level 0): a row is dequantized (exactly: (q - 8)·scale) into a small buffer and
// dotted with every activation row.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_simd.h"
#include "moe_qgemm.h"

#if defined(ZAYA_X86_DISPATCH)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(): warnings of theirs
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define ZAYA_TARGET_VNNI512 __attribute__((target("arch=x86-64-v4,avx512vnni")))
#define ZAYA_TARGET_AVXVNNI __attribute__((target("arch=x86-64-v3,avxvnni")))
#endif

namespace zaya {
namespace {

constexpr int kMaxTile = 4;  // activation rows per pass over a weight row
constexpr int64_t kAhead = 4096;  // bytes of the weight stream prefetched ahead (a few rows)

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in fp32
    float f = static_cast<float>(man) * 5.9604644775390625e-08f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Where value v of a row lies in a prepared chunked row.
inline int64_t slot(int64_t v) { return (v & ~(kChunk - 1)) + ((v & 1) ? kChunk / 2 : 0) + ((v & (kChunk - 1)) >> 1); }

// A weight row's geometry, computed once per matmul: the kernels run it for every row.
struct RowShape {
  int64_t k, bytes, nb, shift;  // values, stored bytes, blocks; block = 1 << shift
  int64_t per_chunk;            // blocks per 128 values (1 when a block is longer)
  alignas(64) int32_t lane16[16];  // block of lane l within a 128-value chunk
};

RowShape row_shape(int64_t k, int64_t block) {
  RowShape s{};
  s.k = k, s.bytes = k / 2, s.nb = k / block;
  while ((int64_t{1} << s.shift) < block) ++s.shift;
  s.per_chunk = block < kChunk ? kChunk / block : 1;
  for (int l = 0; l < 16; ++l) s.lane16[l] = block < kChunk ? static_cast<int32_t>(8 * l / block) : 0;
  return s;
}

struct Tile {  // up to kMaxTile prepared rows
  const int8_t* q[kMaxTile];
  const int32_t* corr[kMaxTile];
  const float* scale[kMaxTile];
  float* out[kMaxTile];
};

// ---- generic (any CPU) ------------------------------------------------------------------------

template <int T>
void row_generic(const uint8_t* wr, const uint16_t* sr, const RowShape& rs, const Tile& t) {
  const int64_t k = rs.k;
  float acc[T][kLanes] = {};
  for (int64_t c = 0; c * kChunk < k; ++c) {
    for (int64_t l = 0; l < kLanes && c * kChunk + 8 * l < k; ++l) {
      const float sb = half_to_float(sr[(c * kChunk + 8 * l) >> rs.shift]);
      const uint8_t* wb = wr + c * 64 + 4 * l;
      for (int j = 0; j < T; ++j) {
        const int8_t* qe = t.q[j] + c * kChunk + 4 * l;
        int32_t i = t.corr[j][c * kLanes + l];
        for (int b = 0; b < 4; ++b) i += (wb[b] & 15) * qe[b] + (wb[b] >> 4) * qe[b + 64];
        acc[j][l] += static_cast<float>(i) * (t.scale[j][c * kLanes + l] * sb);
      }
    }
  }
  for (int j = 0; j < T; ++j) {
    float s = 0.0f;
    for (int64_t l = 0; l < kLanes; ++l) s += acc[j][l];
    *t.out[j] = s;
  }
}

#if defined(ZAYA_X86_DISPATCH)
// ---- AVX512-VNNI: one 64-byte chunk per step, 16 lanes ------------------------------------------

template <int T>
ZAYA_TARGET_VNNI512 void row_vnni512(const uint8_t* wr, const uint16_t* sr, const RowShape& rs, const Tile& t) {
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const __m512i idx = _mm512_load_si512(rs.lane16);
  const int64_t per_chunk = rs.per_chunk, nb = rs.nb, bytes = rs.bytes;
  __m512 acc[T];
  for (int j = 0; j < T; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t c = 0; c * 64 < bytes; ++c) {
    const int64_t rem = bytes - c * 64;
    _mm_prefetch(reinterpret_cast<const char*>(wr + c * 64 + kAhead), _MM_HINT_T0);
    if ((c & 7) == 0) _mm_prefetch(reinterpret_cast<const char*>(sr) + c * 8 + kAhead / 8, _MM_HINT_T0);
    const __m512i wv = rem >= 64 ? _mm512_loadu_si512(wr + c * 64)
                                 : _mm512_maskz_loadu_epi8((__mmask64)((1ull << rem) - 1), wr + c * 64);
    const __m512i lo = _mm512_and_si512(wv, nib), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), nib);
    const int64_t b0 = (c * kChunk) >> rs.shift, n = std::min(per_chunk, nb - b0);
    const __m128i hs = _mm_maskz_loadu_epi16((__mmask8)((1u << n) - 1), sr + b0);
    const __m512 sb = _mm512_permutexvar_ps(idx, _mm512_zextps256_ps512(_mm256_cvtph_ps(hs)));
    for (int j = 0; j < T; ++j) {
      const int8_t* q = t.q[j] + c * kChunk;
      __m512i i = _mm512_loadu_si512(t.corr[j] + c * kLanes);
      i = _mm512_dpbusd_epi32(i, lo, _mm512_loadu_si512(q));
      i = _mm512_dpbusd_epi32(i, hi, _mm512_loadu_si512(q + 64));
      const __m512 s = _mm512_mul_ps(sb, _mm512_loadu_ps(t.scale[j] + c * kLanes));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), s, acc[j]);
    }
  }
  for (int j = 0; j < T; ++j) {
    const __m256 s8 = _mm256_add_ps(_mm512_extractf32x8_ps(acc[j], 0), _mm512_extractf32x8_ps(acc[j], 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    *t.out[j] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
}

// ---- AVX2 (+ AVX-VNNI): half chunks of 32 bytes, 8 lanes ----------------------------------------

template <bool kVnni>
struct Avx2Dot;

template <>
struct Avx2Dot<false> {
  static ZAYA_TARGET_V3 inline __m256i add(__m256i acc, __m256i w, __m256i q) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, q), _mm256_set1_epi16(1)));
  }
};

template <>
struct Avx2Dot<true> {
  static ZAYA_TARGET_AVXVNNI inline __m256i add(__m256i acc, __m256i w, __m256i q) {
    return _mm256_dpbusd_avx_epi32(acc, w, q);
  }
};

// n (<= 8) fp16 values at p, zero-extended to 8.
#define ZAYA_LOAD_HALVES(p, n, out)                                                                          \
  if ((n) == 4) {                                                                                            \
    out = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));                                              \
  } else if ((n) == 8) {                                                                                     \
    out = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));                                              \
  } else {                                                                                                   \
    alignas(16) uint16_t hb[8] = {};                                                                         \
    std::memcpy(hb, (p), static_cast<size_t>(n) * 2);                                                        \
    out = _mm_load_si128(reinterpret_cast<const __m128i*>(hb));                                              \
  }

// One 32-byte half chunk (8 lanes) of weights `wv` with lane scales `sb` against T rows.
#define ZAYA_AVX2_HALF(DOT, wv, sb, c, half)                                                                 \
  {                                                                                                          \
    const __m256i lo = _mm256_and_si256(wv, nib), hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), nib);     \
    for (int j = 0; j < T; ++j) {                                                                            \
      const int8_t* q = t.q[j] + (c) * kChunk + (half) * 32;                                                 \
      __m256i i = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.corr[j] + (c) * kLanes + (half) * 8)); \
      i = DOT::add(i, lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));                          \
      i = DOT::add(i, hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64)));                     \
      const __m256 s = _mm256_mul_ps(sb, _mm256_loadu_ps(t.scale[j] + (c) * kLanes + (half) * 8));           \
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), s, acc[j]);                                            \
    }                                                                                                        \
  }

// Whole 64-byte chunks (the scales of a chunk loaded and expanded once), then a zero-padded tail.
#define ZAYA_AVX2_ROW_BODY(DOT)                                                                              \
  const __m256i nib = _mm256_set1_epi8(0x0F);                                                                \
  const __m256i idx_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(rs.lane16));                     \
  const __m256i idx_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(rs.lane16 + 8));                 \
  const int64_t per_chunk = rs.per_chunk, nb = rs.nb, bytes = rs.bytes, full = bytes / 64;                   \
  __m256 acc[T];                                                                                             \
  for (int j = 0; j < T; ++j) acc[j] = _mm256_setzero_ps();                                                  \
  for (int64_t c = 0; c < full; ++c) {                                                                       \
    _mm_prefetch(reinterpret_cast<const char*>(wr + c * 64 + kAhead), _MM_HINT_T0);                          \
    if ((c & 7) == 0) _mm_prefetch(reinterpret_cast<const char*>(sr) + c * 8 + kAhead / 8, _MM_HINT_T0);     \
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + c * 64));                    \
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + c * 64 + 32));               \
    __m128i hs;                                                                                              \
    ZAYA_LOAD_HALVES(sr + ((c * kChunk) >> rs.shift), per_chunk, hs)                                          \
    const __m256 f = _mm256_cvtph_ps(hs);                                                                    \
    const __m256 sb0 = _mm256_permutevar8x32_ps(f, idx_lo), sb1 = _mm256_permutevar8x32_ps(f, idx_hi);      \
    ZAYA_AVX2_HALF(DOT, w0, sb0, c, 0)                                                                       \
    ZAYA_AVX2_HALF(DOT, w1, sb1, c, 1)                                                                       \
  }                                                                                                          \
  if (bytes > full * 64) {                                                                                   \
    alignas(32) uint8_t tail[64] = {};                                                                       \
    std::memcpy(tail, wr + full * 64, static_cast<size_t>(bytes - full * 64));                               \
    const int64_t b0 = (full * kChunk) >> rs.shift, n = std::min(per_chunk, nb - b0);                        \
    __m128i hs;                                                                                              \
    ZAYA_LOAD_HALVES(sr + b0, n, hs)                                                                          \
    const __m256 f = _mm256_cvtph_ps(hs);                                                                    \
    const __m256 sb0 = _mm256_permutevar8x32_ps(f, idx_lo), sb1 = _mm256_permutevar8x32_ps(f, idx_hi);      \
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));                            \
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail + 32));                       \
    ZAYA_AVX2_HALF(DOT, w0, sb0, full, 0)                                                                    \
    ZAYA_AVX2_HALF(DOT, w1, sb1, full, 1)                                                                    \
  }                                                                                                          \
  for (int j = 0; j < T; ++j) {                                                                              \
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[j]), _mm256_extractf128_ps(acc[j], 1));          \
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                                 \
    *t.out[j] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));                                          \
  }

template <int T>
ZAYA_TARGET_V3 void row_avx2(const uint8_t* wr, const uint16_t* sr, const RowShape& rs, const Tile& t) {
  ZAYA_AVX2_ROW_BODY(Avx2Dot<false>)
}

template <int T>
ZAYA_TARGET_AVXVNNI void row_avxvnni(const uint8_t* wr, const uint16_t* sr, const RowShape& rs, const Tile& t) {
  ZAYA_AVX2_ROW_BODY(Avx2Dot<true>)
}
#undef ZAYA_AVX2_ROW_BODY
#undef ZAYA_AVX2_HALF
#undef ZAYA_LOAD_HALVES
#endif

// ---- fp32 (accuracy_level 0) --------------------------------------------------------------------

// Row r dequantized into buf (chunked even/odd order, zero past k).
ZAYA_CLONES void dequant_row(const uint8_t* wr, const uint16_t* sr, int64_t k, int64_t kpad, int64_t block, float* buf) {
  for (int64_t c = 0; c * kChunk < kpad; ++c) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const bool in = c * kChunk + 8 * l < k;
      const float s = in ? half_to_float(sr[(c * kChunk + 8 * l) / block]) : 0.0f;
      for (int b = 0; b < 4; ++b) {
        const int byte = in ? wr[c * 64 + 4 * l + b] : 0x88;
        buf[c * kChunk + 4 * l + b] = static_cast<float>((byte & 15) - 8) * s;
        buf[c * kChunk + 64 + 4 * l + b] = static_cast<float>((byte >> 4) - 8) * s;
      }
    }
  }
}

ZAYA_CLONES float dot(const float* a, const float* b, int64_t n) {
  v8 acc[4] = {splat<v8>(0.0f), splat<v8>(0.0f), splat<v8>(0.0f), splat<v8>(0.0f)};
  for (int64_t i = 0; i < n; i += 32)
    for (int v = 0; v < 4; ++v) acc[v] += vload<v8>(a + i + 8 * v) * vload<v8>(b + i + 8 * v);
  alignas(32) float lanes[8];
  vstore(lanes, (acc[0] + acc[1]) + (acc[2] + acc[3]));
  float s = 0.0f;
  for (float v : lanes) s += v;
  return s;
}

// ---- dispatch -----------------------------------------------------------------------------------

using RowFn = void (*)(const uint8_t*, const uint16_t*, const RowShape&, const Tile&);

struct Int8Kernel {
  const char* name;
  RowFn rows[kMaxTile + 1];  // by tile height
};

const Int8Kernel& int8_kernel() {
  static const Int8Kernel chosen = [] {
    const char* env = std::getenv("ZAYA_EDGE_CPU_ISA");
    const std::string want = env ? env : "";
#if defined(ZAYA_X86_DISPATCH)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vnni");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    const bool avxvnni = avx2 && __builtin_cpu_supports("avxvnni");
    if (avx512 && want != "avxvnni" && want != "avx2" && want != "generic")
      return Int8Kernel{"avx512vnni", {nullptr, row_vnni512<1>, row_vnni512<2>, row_vnni512<3>, row_vnni512<4>}};
    if (avxvnni && want != "avx2" && want != "generic")
      return Int8Kernel{"avxvnni", {nullptr, row_avxvnni<1>, row_avxvnni<2>, row_avxvnni<3>, row_avxvnni<4>}};
    if (avx2 && want != "generic")
      return Int8Kernel{"avx2", {nullptr, row_avx2<1>, row_avx2<2>, row_avx2<3>, row_avx2<4>}};
#endif
    return Int8Kernel{"generic", {nullptr, row_generic<1>, row_generic<2>, row_generic<3>, row_generic<4>}};
  }();
  return chosen;
}

}  // namespace

const char* moe_isa() { return int8_kernel().name; }

Isa int8_isa() {
  const std::string name = int8_kernel().name;
  if (name == "avx512vnni") return Isa::kAvx512Vnni;
  if (name == "avxvnni") return Isa::kAvxVnni;
  return name == "avx2" ? Isa::kAvx2 : Isa::kGeneric;
}

size_t prepared_bytes(int64_t rows, int64_t k, bool int8) {
  const int64_t kpad = chunked(k);
  return static_cast<size_t>(int8 ? rows * (2 * kpad + kpad / 16 * 8) : rows * kpad * 4) + 64;
}

PreparedRows prepared_view(void* mem, int64_t rows, int64_t k, bool int8) {
  PreparedRows p;
  p.kpad = chunked(k);
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem) + 63) & ~uintptr_t{63});
  if (int8) {
    p.corr = reinterpret_cast<int32_t*>(base);
    p.scale = reinterpret_cast<float*>(base + rows * p.kpad / 8 * 4);
    p.q = reinterpret_cast<int8_t*>(base + rows * p.kpad / 8 * 8);
    p.bcorr = reinterpret_cast<int32_t*>(base + rows * p.kpad / 8 * 8 + rows * p.kpad);
    p.bscale = reinterpret_cast<float*>(base + rows * p.kpad / 8 * 8 + rows * p.kpad + rows * p.kpad / 16 * 4);
  } else {
    p.f = reinterpret_cast<float*>(base);
  }
  return p;
}

ZAYA_CLONES void prepare_int8(const float* src, int64_t k, int64_t block, const PreparedRows& p, int64_t dst_row) {
  int8_t* q = p.q + dst_row * p.kpad;
  int32_t* corr = p.corr + dst_row * (p.kpad / 8);
  float* lane_scale = p.scale + dst_row * (p.kpad / 8);
  int32_t* bcorr = p.bcorr + dst_row * (p.kpad / 16);
  float* bscale = p.bscale + dst_row * (p.kpad / 16);
  std::memset(q, 0, static_cast<size_t>(p.kpad));
  std::fill(lane_scale, lane_scale + p.kpad / 8, 0.0f);
  for (int64_t b0 = 0; b0 < k; b0 += block) {
    const int64_t len = std::min(block, k - b0);
    float amax = 0.0f;
    for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(src[b0 + i]));
    // MLAS (QuantizeARow_CompInt8): scale = amax / 127, values times 127 / amax, nearest-even
    const float scale = amax / 127.0f, inv = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int64_t i = 0; i < len; ++i) {
      const int32_t v = static_cast<int32_t>(std::nearbyint(src[b0 + i] * inv));
      q[slot(b0 + i)] = static_cast<int8_t>(v);
      sum += v;
    }
    for (int64_t v = b0; v < b0 + len; v += 8) lane_scale[v / 8] = scale;
    bcorr[b0 / block] = -8 * sum;
    bscale[b0 / block] = scale;
  }
  for (int64_t lane = 0; lane < p.kpad / 8; ++lane) {
    const int64_t c = lane / kLanes, l = lane % kLanes;
    const int8_t* e = q + c * kChunk + 4 * l;
    int32_t s = 0;
    for (int b = 0; b < 4; ++b) s += e[b] + e[b + 64];
    corr[lane] = -8 * s;
  }
}

void prepare_fp32(const float* src, int64_t k, const PreparedRows& p, int64_t dst_row) {
  float* f = p.f + dst_row * p.kpad;
  std::fill(f, f + p.kpad, 0.0f);
  for (int64_t v = 0; v < k; ++v) f[slot(v)] = src[v];
}

void qgemm(const QWeights& w, int64_t e, int64_t r0, int64_t r1, int64_t block, const PreparedRows& a, bool int8,
           const int64_t* rows, int64_t count, float* out, int64_t ldo) {
  const uint8_t* wbase = w.data + e * w.expert_stride;
  const uint16_t* sbase = w.scales + e * w.scale_expert_stride;
  if (!int8) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(a.kpad));
    for (int64_t r = r0; r < r1; ++r) {
      dequant_row(wbase + r * w.row_stride, sbase + r * w.scale_row_stride, w.k, a.kpad, block, buf.data());
      for (int64_t j = 0; j < count; ++j) out[j * ldo + r] = dot(buf.data(), a.f + rows[j] * a.kpad, a.kpad);
    }
    return;
  }
  const Int8Kernel& kern = int8_kernel();
  const RowShape rs = row_shape(w.k, block);
  for (int64_t j0 = 0; j0 < count; j0 += kMaxTile) {  // a tile of rows stays in L1 over the weight rows
    const int n = static_cast<int>(std::min<int64_t>(kMaxTile, count - j0));
    Tile t{};
    for (int j = 0; j < n; ++j) {
      t.q[j] = a.q + rows[j0 + j] * a.kpad;
      t.corr[j] = a.corr + rows[j0 + j] * (a.kpad / 8);
      t.scale[j] = a.scale + rows[j0 + j] * (a.kpad / 8);
    }
    for (int64_t r = r0; r < r1; ++r) {
      for (int j = 0; j < n; ++j) t.out[j] = out + (j0 + j) * ldo + r;
      kern.rows[n](wbase + r * w.row_stride, sbase + r * w.scale_row_stride, rs, t);
    }
  }
}

}  // namespace zaya
