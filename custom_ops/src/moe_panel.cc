// Blocked int8 kernel of the expert matmuls, for an expert with many rows routed to it (prefill).
//
// A task's weight rows [r0, r1) are gathered, as stored, into a panel that interleaves G rows (16
// with AVX-512, 8 with AVX2) at 4-byte granularity: one vector load then holds 8 consecutive
// values of each of G rows (low nibbles the even values, high nibbles the odd ones), and one
// dot-product instruction per nibble vector takes a broadcast 4-byte group of an activation row's
// prepared even (or odd) int8 values. Integer block sums start from -8·Σa (the zero point) and are
// scaled into fp32 once per block; each output vector is G finished outputs (no horizontal sums).
// Up to T activation rows share every panel load. The panel is scratch of the calling thread,
// reused task after task: no weight copy outlives a task.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_simd.h"
#include "moe_qgemm.h"

#if defined(ZAYA_X86_DISPATCH)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's AVX-512 headers (_mm512_undefined_*)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define ZAYA_TARGET_VNNI512 __attribute__((target("arch=x86-64-v4,avx512vnni")))
#define ZAYA_TARGET_AVXVNNI __attribute__((target("arch=x86-64-v3,avxvnni")))
#endif

namespace zaya {

#if !defined(ZAYA_X86_DISPATCH)
int64_t panel_tile() { return 0; }
size_t packed_bytes(int64_t, int64_t, int64_t) { return 0; }
PackedRows pack_rows(const PreparedRows&, const int64_t*, int64_t, int64_t, int64_t, void*) { return {}; }
void panel_gemm(const QWeights&, int64_t, int64_t, int64_t, int64_t, const PackedRows&, float*, int64_t) {}
#else
namespace {

// The panel of one task: per group of G rows, K/8 steps of G·4 bytes, then per block G fp32 scales.
struct Panel {
  const uint8_t* w;
  const float* s;
  int64_t steps, nb, spb;  // K/8 steps, blocks, steps per block
};

struct Tile {  // one tile of packed activation rows and where its valid rows' outputs go
  const int8_t* q;        // [K/8][T][8]
  const int32_t* bcorr;   // [blocks][T]
  const float* bscale;    // [blocks][T]
  float* out;             // row t's outputs at out + t * ldo
  int64_t ldo;
  int rows;               // valid rows (the rest are padding)
};

inline int32_t load32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- AVX512-VNNI: G = 16 -------------------------------------------------------------------

// r[k] becomes column k of the 16x16 matrix of dwords whose rows r holds.
ZAYA_TARGET_VNNI512 inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
  }
}

// 16 rows' 64-byte slices (rows >= valid: zero) -> 16 steps of 16 rows x 4 bytes.
ZAYA_TARGET_VNNI512 void build16(const uint8_t* base, int64_t row_stride, const uint16_t* sbase, int64_t srow,
                                 int64_t rows, int64_t k, int64_t block, uint8_t* w, float* s) {
  const int64_t steps = k / 8, nb = k / block, groups = (rows + 15) / 16;
  __m512i r[16];
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t valid = std::min<int64_t>(16, rows - g * 16);
    uint8_t* dst = w + g * steps * 64;
    for (int64_t m0 = 0; m0 < steps; m0 += 16) {
      const int64_t n = std::min<int64_t>(16, steps - m0);
      const __mmask64 bytes = n == 16 ? ~__mmask64{0} : (__mmask64{1} << (4 * n)) - 1;
      for (int i = 0; i < 16; ++i)
        r[i] = i < valid ? _mm512_maskz_loadu_epi8(bytes, base + (g * 16 + i) * row_stride + 4 * m0) : _mm512_setzero_si512();
      transpose16(r);
      for (int64_t j = 0; j < n; ++j) _mm512_store_si512(dst + (m0 + j) * 64, r[j]);
    }
    float* sd = s + g * nb * 16;
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
      const int64_t n = std::min<int64_t>(16, nb - b0);
      const __mmask16 halves = static_cast<__mmask16>((1u << n) - 1);
      for (int i = 0; i < 16; ++i)
        r[i] = i < valid ? _mm512_castps_si512(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(halves, sbase + (g * 16 + i) * srow + b0)))
                         : _mm512_setzero_si512();
      transpose16(r);
      for (int64_t j = 0; j < n; ++j) _mm512_store_si512(sd + (b0 + j) * 16, r[j]);
    }
  }
}

constexpr int kT512 = 8, kT256 = 4;  // activation rows per tile

ZAYA_TARGET_VNNI512 void tile16(const Panel& p, int64_t g, const Tile& r, int valid) {
  constexpr int T = kT512;
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const uint8_t* pw = p.w + g * p.steps * 64;
  const float* ps = p.s + g * p.nb * 16;
  __m512 af[T];
  for (int t = 0; t < T; ++t) af[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < p.nb; ++b) {
    __m512i ai[T];
    for (int t = 0; t < T; ++t) ai[t] = _mm512_set1_epi32(r.bcorr[b * T + t]);
    for (int64_t m = b * p.spb; m < (b + 1) * p.spb; ++m) {
      const __m512i pv = _mm512_load_si512(pw + m * 64);
      const __m512i lo = _mm512_and_si512(pv, nib), hi = _mm512_and_si512(_mm512_srli_epi16(pv, 4), nib);
      const int8_t* q = r.q + m * T * 8;
      for (int t = 0; t < T; ++t) {
        ai[t] = _mm512_dpbusd_epi32(ai[t], lo, _mm512_set1_epi32(load32(q + 8 * t)));
        ai[t] = _mm512_dpbusd_epi32(ai[t], hi, _mm512_set1_epi32(load32(q + 8 * t + 4)));
      }
    }
    const __m512 sb = _mm512_load_ps(ps + b * 16);
    for (int t = 0; t < T; ++t)
      af[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[t]), _mm512_mul_ps(sb, _mm512_set1_ps(r.bscale[b * T + t])), af[t]);
  }
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
  for (int t = 0; t < r.rows; ++t) _mm512_mask_storeu_ps(r.out + t * r.ldo, mask, af[t]);
}

// ---- AVX2 / AVX-VNNI: G = 8 ----------------------------------------------------------------

ZAYA_TARGET_V3 inline void transpose8(__m256i r[8]) {
  __m256i t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    r[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm256_permute2x128_si256(r[j], r[4 + j], 0x20);
    t[4 + j] = _mm256_permute2x128_si256(r[j], r[4 + j], 0x31);
  }
  for (int j = 0; j < 8; ++j) r[j] = t[j];
}

// n (<= 32) bytes at p, zero-extended to a vector
ZAYA_TARGET_V3 inline __m256i load_upto32(const void* p, int64_t n) {
  if (n == 32) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  alignas(32) uint8_t tmp[32] = {};
  std::memcpy(tmp, p, static_cast<size_t>(n));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
}

ZAYA_TARGET_V3 void build8(const uint8_t* base, int64_t row_stride, const uint16_t* sbase, int64_t srow,
                           int64_t rows, int64_t k, int64_t block, uint8_t* w, float* s) {
  const int64_t steps = k / 8, nb = k / block, groups = (rows + 7) / 8;
  __m256i r[8];
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t valid = std::min<int64_t>(8, rows - g * 8);
    uint8_t* dst = w + g * steps * 32;
    for (int64_t m0 = 0; m0 < steps; m0 += 8) {
      const int64_t n = std::min<int64_t>(8, steps - m0);
      for (int i = 0; i < 8; ++i)
        r[i] = i < valid ? load_upto32(base + (g * 8 + i) * row_stride + 4 * m0, 4 * n) : _mm256_setzero_si256();
      transpose8(r);
      for (int64_t j = 0; j < n; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(dst + (m0 + j) * 32), r[j]);
    }
    float* sd = s + g * nb * 8;
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
      const int64_t n = std::min<int64_t>(8, nb - b0);
      for (int i = 0; i < 8; ++i) {
        const __m128i h = i < valid ? _mm256_castsi256_si128(load_upto32(sbase + (g * 8 + i) * srow + b0, 2 * n))
                                    : _mm_setzero_si128();
        r[i] = _mm256_castps_si256(_mm256_cvtph_ps(h));
      }
      transpose8(r);
      for (int64_t j = 0; j < n; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(sd + (b0 + j) * 8), r[j]);
    }
  }
}

#define ZAYA_TILE8_BODY(DOT)                                                                                  \
  constexpr int T = kT256;                                                                                    \
  const __m256i nib = _mm256_set1_epi8(0x0F);                                                                 \
  const uint8_t* pw = p.w + g * p.steps * 32;                                                                 \
  const float* ps = p.s + g * p.nb * 8;                                                                       \
  __m256 af[T];                                                                                               \
  for (int t = 0; t < T; ++t) af[t] = _mm256_setzero_ps();                                                    \
  for (int64_t b = 0; b < p.nb; ++b) {                                                                        \
    __m256i ai[T];                                                                                            \
    for (int t = 0; t < T; ++t) ai[t] = _mm256_set1_epi32(r.bcorr[b * T + t]);                                \
    for (int64_t m = b * p.spb; m < (b + 1) * p.spb; ++m) {                                                   \
      const __m256i pv = _mm256_load_si256(reinterpret_cast<const __m256i*>(pw + m * 32));                    \
      const __m256i lo = _mm256_and_si256(pv, nib), hi = _mm256_and_si256(_mm256_srli_epi16(pv, 4), nib);    \
      const int8_t* q = r.q + m * T * 8;                                                                      \
      for (int t = 0; t < T; ++t) {                                                                           \
        ai[t] = DOT(ai[t], lo, _mm256_set1_epi32(load32(q + 8 * t)));                                         \
        ai[t] = DOT(ai[t], hi, _mm256_set1_epi32(load32(q + 8 * t + 4)));                                     \
      }                                                                                                       \
    }                                                                                                         \
    const __m256 sb = _mm256_load_ps(ps + b * 8);                                                             \
    for (int t = 0; t < T; ++t)                                                                               \
      af[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[t]), _mm256_mul_ps(sb, _mm256_set1_ps(r.bscale[b * T + t])), af[t]); \
  }                                                                                                           \
  for (int t = 0; t < r.rows; ++t) {                                                                          \
    if (valid == 8) {                                                                                         \
      _mm256_storeu_ps(r.out + t * r.ldo, af[t]);                                                             \
    } else {                                                                                                  \
      alignas(32) float tmp[8];                                                                               \
      _mm256_store_ps(tmp, af[t]);                                                                            \
      std::memcpy(r.out + t * r.ldo, tmp, static_cast<size_t>(valid) * 4);                                    \
    }                                                                                                         \
  }

ZAYA_TARGET_AVXVNNI inline __m256i dot_avxvnni(__m256i acc, __m256i w, __m256i q) {
  return _mm256_dpbusd_avx_epi32(acc, w, q);
}

// AVX2 without VNNI: vpmaddubsw pairs (|.| <= 2·15·127 = 3810) summed in int16 over up to 4
// steps (8 products of pairs: <= 30480, no saturation), then widened once by vpmaddwd.
ZAYA_TARGET_V3 void tile8_avx2(const Panel& p, int64_t g, const Tile& r, int valid) {
  constexpr int T = kT256;
  const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const uint8_t* pw = p.w + g * p.steps * 32;
  const float* ps = p.s + g * p.nb * 8;
  __m256 af[T];
  for (int t = 0; t < T; ++t) af[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < p.nb; ++b) {
    __m256i ai[T];
    for (int t = 0; t < T; ++t) ai[t] = _mm256_set1_epi32(r.bcorr[b * T + t]);
    for (int64_t m0 = b * p.spb; m0 < (b + 1) * p.spb; m0 += 4) {
      __m256i a16[T];
      for (int t = 0; t < T; ++t) a16[t] = _mm256_setzero_si256();
      for (int64_t m = m0; m < std::min(m0 + 4, (b + 1) * p.spb); ++m) {
        const __m256i pv = _mm256_load_si256(reinterpret_cast<const __m256i*>(pw + m * 32));
        const __m256i lo = _mm256_and_si256(pv, nib), hi = _mm256_and_si256(_mm256_srli_epi16(pv, 4), nib);
        const int8_t* q = r.q + m * T * 8;
        for (int t = 0; t < T; ++t) {
          a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load32(q + 8 * t))));
          a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load32(q + 8 * t + 4))));
        }
      }
      for (int t = 0; t < T; ++t) ai[t] = _mm256_add_epi32(ai[t], _mm256_madd_epi16(a16[t], ones));
    }
    const __m256 sb = _mm256_load_ps(ps + b * 8);
    for (int t = 0; t < T; ++t)
      af[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[t]), _mm256_mul_ps(sb, _mm256_set1_ps(r.bscale[b * T + t])), af[t]);
  }
  for (int t = 0; t < r.rows; ++t) {
    if (valid == 8) {
      _mm256_storeu_ps(r.out + t * r.ldo, af[t]);
    } else {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, af[t]);
      std::memcpy(r.out + t * r.ldo, tmp, static_cast<size_t>(valid) * 4);
    }
  }
}
ZAYA_TARGET_AVXVNNI void tile8_avxvnni(const Panel& p, int64_t g, const Tile& r, int valid) {
  ZAYA_TILE8_BODY(dot_avxvnni)
}
#undef ZAYA_TILE8_BODY

using TileFn = void (*)(const Panel&, int64_t, const Tile&, int);
using BuildFn = void (*)(const uint8_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, int64_t, uint8_t*, float*);

struct PanelKernel {
  int g, tile;
  BuildFn build;
  TileFn run;
};

const PanelKernel* panel_kernel() {
  static const PanelKernel k512{16, kT512, build16, tile16};
  static const PanelKernel kvnni{8, kT256, build8, tile8_avxvnni};
  static const PanelKernel kavx2{8, kT256, build8, tile8_avx2};
  switch (int8_isa()) {
    case Isa::kAvx512Vnni: return &k512;
    case Isa::kAvxVnni: return &kvnni;
    case Isa::kAvx2: return &kavx2;
    default: return nullptr;
  }
}

}  // namespace

int64_t panel_tile() {
  const PanelKernel* k = panel_kernel();
  return k ? k->tile : 0;
}

size_t packed_bytes(int64_t count, int64_t k, int64_t block) {
  const int64_t t = std::max<int64_t>(1, panel_tile()), tiles = (count + t - 1) / t;
  return static_cast<size_t>(tiles * t * (k + 8 * (k / block))) + 64;
}

PackedRows pack_rows(const PreparedRows& a, const int64_t* rows, int64_t count, int64_t k, int64_t block, void* mem) {
  PackedRows p;
  p.tile = panel_tile(), p.count = count, p.steps = k / 8, p.nb = k / block;
  const int64_t tiles = (count + p.tile - 1) / p.tile;
  auto* q = reinterpret_cast<int8_t*>((reinterpret_cast<uintptr_t>(mem) + 63) & ~uintptr_t{63});
  auto* bcorr = reinterpret_cast<int32_t*>(q + tiles * p.tile * k);
  auto* bscale = reinterpret_cast<float*>(bcorr + tiles * p.tile * p.nb);
  p.q = q, p.bcorr = bcorr, p.bscale = bscale;
  for (int64_t i = 0; i < tiles * p.tile; ++i) {  // row i of tile i / T, at position t = i % T
    const int64_t tile = i / p.tile, t = i % p.tile;
    int8_t* dq = q + tile * p.steps * p.tile * 8 + t * 8;
    int32_t* dc = bcorr + tile * p.nb * p.tile + t;
    float* ds = bscale + tile * p.nb * p.tile + t;
    if (i >= count) {  // padding: zero values, zero scales
      for (int64_t m = 0; m < p.steps; ++m) std::memset(dq + m * p.tile * 8, 0, 8);
      for (int64_t b = 0; b < p.nb; ++b) dc[b * p.tile] = 0, ds[b * p.tile] = 0.0f;
      continue;
    }
    const int8_t* src = a.q + rows[i] * a.kpad;
    for (int64_t m = 0; m < p.steps; ++m) {
      const int8_t* even = src + (m >> 4) * kChunk + (m & 15) * 4;
      std::memcpy(dq + m * p.tile * 8, even, 4);
      std::memcpy(dq + m * p.tile * 8 + 4, even + kChunk / 2, 4);
    }
    for (int64_t b = 0; b < p.nb; ++b) {
      dc[b * p.tile] = a.bcorr[rows[i] * (a.kpad / 16) + b];
      ds[b * p.tile] = a.bscale[rows[i] * (a.kpad / 16) + b];
    }
  }
  return p;
}

void panel_gemm(const QWeights& w, int64_t e, int64_t r0, int64_t r1, int64_t block, const PackedRows& a,
                float* out, int64_t ldo) {
  const PanelKernel* kern = panel_kernel();
  const int64_t n = r1 - r0, g = kern->g, groups = (n + g - 1) / g, steps = w.k / 8, nb = w.k / block;
  thread_local std::vector<uint8_t> mem;
  const size_t wbytes = static_cast<size_t>(groups * steps * g * 4), sbytes = static_cast<size_t>(groups * nb * g * 4);
  mem.resize(wbytes + sbytes + 64);
  auto* pw = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~uintptr_t{63});
  auto* ps = reinterpret_cast<float*>(pw + wbytes);
  kern->build(w.data + e * w.expert_stride + r0 * w.row_stride, w.row_stride,
              w.scales + e * w.scale_expert_stride + r0 * w.scale_row_stride, w.scale_row_stride, n, w.k, block, pw, ps);
  const Panel p{pw, ps, steps, nb, block / 8};
  for (int64_t t0 = 0; t0 < a.count; t0 += a.tile) {  // one tile of rows stays in L1 over the panel
    const int64_t tile = t0 / a.tile;
    for (int64_t gi = 0; gi < groups; ++gi) {
      const Tile r{a.q + tile * steps * a.tile * 8, a.bcorr + tile * nb * a.tile, a.bscale + tile * nb * a.tile,
                   out + t0 * ldo + r0 + gi * g, ldo, static_cast<int>(std::min(a.tile, a.count - t0))};
      kern->run(p, gi, r, static_cast<int>(std::min(g, n - gi * g)));
    }
  }
}
#endif

}  // namespace zaya
