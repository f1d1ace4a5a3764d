// Prefill path of the CachedAttention CPU kernel: blocks of 16 query rows (16*G query vectors of
// one kv head) against tiles of 32 keys, as two register-blocked matmuls per tile:
//
//   qt [D][16G] (queries transposed once per block)
//   scores st[key][q] = K_tile . qt       8 keys x one vector of queries per step
//   mask, online softmax across keys, vectorised over the queries
//   o[q][D] += st^T . V_tile               8 queries x one vector of D per step
//
// Vectors are 16 floats in the AVX-512 clone (Zen 5 and recent Intel cores have full-width FMA
// units: ymm code would leave half of them idle), 8 in the AVX2 and baseline ones.
//
// The decode path (attention_cpu.cc) reads each key once for a handful of queries and is bound
// by the cache read; here each key serves 16G queries, so the arithmetic is what counts.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "attention_kernels.h"

namespace zaya {
namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef int32_t vi8v __attribute__((vector_size(32)));
template <typename V> struct IntOf;
template <> struct IntOf<v8> { using type = vi8v; };
template <> struct IntOf<v16> { using type = vi16; };
constexpr float kNegInfF = -__builtin_inff();

template <typename V>
ZAYA_INLINE V bc(float f) { return V{} + f; }  // a broadcast (not an insert chain)
template <typename V>
ZAYA_INLINE V ld(const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; }
template <typename V>
ZAYA_INLINE void st(float* p, V v) { std::memcpy(p, &v, sizeof v); }

// exp(y) for y <= 0 (below -87: ~1e-38), as exp_neg in cpu_simd.h, for any vector width.
template <typename V>
ZAYA_INLINE V exp_le0_v(V y) {
  using VI = typename IntOf<V>::type;
  y = y < bc<V>(-87.0f) ? bc<V>(-87.0f) : y;
  const V n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const V r = (y - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  static constexpr float kTaylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  V p = bc<V>(kTaylor[0]);
  for (size_t i = 1; i < 8; ++i) p = p * r + kTaylor[i];
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  return p * (V)bits;
}

// st[jj][r] = qt[., r] . kt[jj] for the tile's tn keys: 8 keys x one vector of queries per step.
template <typename V>
ZAYA_INLINE void block_scores(const float* qt, int64_t rp, const float* kt, int64_t tn, int64_t D, float* st_) {
  constexpr int64_t W = sizeof(V) / sizeof(float);
  for (int64_t j = 0; j < tn; j += 8) {
    const int64_t kn = std::min<int64_t>(8, tn - j);
    const float* krow[8];
    for (int k = 0; k < 8; ++k) krow[k] = kt + (j + std::min<int64_t>(k, kn - 1)) * D;
    for (int64_t r = 0; r < rp; r += W) {
      V acc[8];
      for (int k = 0; k < 8; ++k) acc[k] = V{};
      for (int64_t d = 0; d < D; ++d) {
        const V q = ld<V>(qt + d * rp + r);
        for (int k = 0; k < 8; ++k) acc[k] += q * krow[k][d];  // vector x scalar: an embedded broadcast
      }
      for (int k = 0; k < kn; ++k) st<V>(st_ + (j + k) * rp + r, acc[k]);
    }
  }
}

struct BlockState {
  float *qt, *st, *m, *l, *corr, *lo, *hi, *o, *kbuf, *vbuf;
};

// Masks the tile's scores, moves each query's running max and sum on, turns scores into weights
// and rescales the accumulators the new max invalidates.
template <typename V>
ZAYA_INLINE void block_softmax(const int64_t* mask, int64_t t0, int64_t tn, int64_t rp, int64_t D, const BlockState& b,
                               bool visible) {
  constexpr int64_t W = sizeof(V) / sizeof(float);
  const V ninf = bc<V>(kNegInfF), zero = V{};
  for (int64_t r = 0; r < rp; r += W) {
    const V lo = ld<V>(b.lo + r), hi = ld<V>(b.hi + r);
    V mt = ninf;
    for (int64_t jj = 0; jj < tn; ++jj) {
      float* sp = b.st + jj * rp + r;
      V s = ld<V>(sp);
      if (!visible) {  // the tile crosses a row's causal or window edge, or holds padding
        const V col = bc<V>(static_cast<float>(t0 + jj));
        s = mask[t0 + jj] ? ((col >= lo) & (col <= hi) ? s : ninf) : ninf;
        st<V>(sp, s);
      }
      mt = s > mt ? s : mt;
    }
    const V mo = ld<V>(b.m + r), mn = mt > mo ? mt : mo;
    const V corr = mo == ninf ? zero : exp_le0_v(mo - mn);
    V sum = zero;
    for (int64_t jj = 0; jj < tn; ++jj) {
      float* sp = b.st + jj * rp + r;
      const V s = ld<V>(sp);
      const V p = s == ninf ? zero : exp_le0_v(s - mn);
      st<V>(sp, p);
      sum += p;
    }
    st<V>(b.l + r, ld<V>(b.l + r) * corr + sum);
    st<V>(b.m + r, mn);
    st<V>(b.corr + r, corr);
  }
  for (int64_t r = 0; r < rp; ++r) {
    const float c = b.corr[r];
    if (c == 1.0f) continue;
    float* o = b.o + r * D;
    for (int64_t d = 0; d < D; d += 8) vstore(o + d, vload<v8>(o + d) * c);
  }
}

// o[r][.] += sum over the tile's keys of st[jj][r] * vt[jj][.]: 8 queries x one vector of D.
template <typename V>
ZAYA_INLINE void block_values(const float* vt, int64_t tn, int64_t rp, int64_t D, const float* st_, float* o) {
  constexpr int64_t W = sizeof(V) / sizeof(float);
  for (int64_t r = 0; r < rp; r += 8) {
    for (int64_t d = 0; d < D; d += W) {
      V acc[8];
      for (int k = 0; k < 8; ++k) acc[k] = ld<V>(o + (r + k) * D + d);
      for (int64_t jj = 0; jj < tn; ++jj) {
        const V vv = ld<V>(vt + jj * D + d);
        const float* p = st_ + jj * rp + r;
        for (int k = 0; k < 8; ++k) acc[k] += vv * p[k];
      }
      for (int k = 0; k < 8; ++k) st<V>(o + (r + k) * D + d, acc[k]);
    }
  }
}

BlockState carve(float* s, int64_t rp, int64_t D) {
  BlockState b;
  b.qt = s, b.st = b.qt + D * rp, b.m = b.st + kTile * rp, b.l = b.m + rp, b.corr = b.l + rp;
  b.lo = b.corr + rp, b.hi = b.lo + rp, b.o = b.hi + rp, b.kbuf = b.o + rp * D, b.vbuf = b.kbuf + kTile * D;
  return b;
}

// Transposed, scaled queries of the block and each one's visible key range; padding vectors
// (past the block's last row) see no key.
ZAYA_INLINE void load_queries(const AttentionArgs& a, const Item& it, int64_t rp, const BlockState& b) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, nq = (it.r1 - it.r0) * G;
  for (int64_t r = 0; r < rp; ++r) {
    b.m[r] = kNegInf, b.l[r] = 0.0f;
    std::fill(b.o + r * D, b.o + (r + 1) * D, 0.0f);
    if (r >= nq) {
      for (int64_t d = 0; d < D; ++d) b.qt[d * rp + r] = 0.0f;
      b.lo[r] = 1.0f, b.hi[r] = 0.0f;
      continue;
    }
    const float* src = a.q + ((it.b * a.seq + it.r0 + r / G) * a.heads + it.g * G + r % G) * D;
    for (int64_t d = 0; d < D; ++d) b.qt[d * rp + r] = src[d] * a.scale;
    int64_t lo, hi;
    row_range(a, it.r0 + r / G, &lo, &hi);
    b.lo[r] = static_cast<float>(lo), b.hi[r] = static_cast<float>(hi);
  }
}

// V: the widest vector the clone's ISA has (16 floats with AVX-512) where D is a multiple of it.
template <typename T, typename V>
ZAYA_INLINE void prefill_item(const AttentionArgs& a, const Item& it, float* parts, float* scratch, Widen widen) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, rp = kPrefillRows * G, nq = (it.r1 - it.r0) * G;
  const BlockState b = carve(scratch, rp, D);
  load_queries(a, it, rp, b);
  const T* keys = static_cast<const T*>(a.present_key) + (it.b * a.kv_heads + it.g) * a.cap * D;
  const T* values = static_cast<const T*>(a.present_value) + (it.b * a.kv_heads + it.g) * a.cap * D;
  const int64_t* mask = a.mask + it.b * a.total;
  int64_t lo_max, hi_min, unused;  // keys every row of the block sees (before the mask)
  row_range(a, it.r1 - 1, &lo_max, &unused);
  row_range(a, it.r0, &unused, &hi_min);
  for (int64_t t0 = it.j0; t0 < it.j1; t0 += kTile) {
    const int64_t tn = std::min(kTile, it.j1 - t0);
    block_scores<V>(b.qt, rp, as_f32(keys + t0 * D, b.kbuf, tn * D, widen), tn, D, b.st);
    bool visible = nq == rp && t0 >= lo_max && t0 + tn - 1 <= hi_min;
    for (int64_t jj = 0; visible && jj < tn; ++jj) visible = mask[t0 + jj] != 0;
    block_softmax<V>(mask, t0, tn, rp, D, b, visible);
    block_values<V>(as_f32(values + t0 * D, b.vbuf, tn * D, widen), tn, rp, D, b.st, b.o);
  }
  for (int64_t n = 0; n < nq; ++n) {
    float* p = parts + n * (D + 2);
    p[0] = b.m[n], p[1] = b.l[n];
    std::copy(b.o + n * D, b.o + (n + 1) * D, p + 2);
  }
}

template <typename T, typename Wide>
ZAYA_INLINE void prefill_any(const AttentionArgs& a, const Item& it, float* p, float* s, Widen widen) {
  if (a.head_dim % (sizeof(Wide) / sizeof(float)) == 0) {
    prefill_item<T, Wide>(a, it, p, s, widen);
  } else {
    prefill_item<T, v8>(a, it, p, s, widen);
  }
}

#define ZAYA_PREFILL_CLONE(name, target, wide, widen)                                    \
  target void name##_f32(const AttentionArgs& a, const Item& it, float* p, float* s) {    \
    prefill_any<float, wide>(a, it, p, s, widen);                                         \
  }                                                                                       \
  target void name##_f16(const AttentionArgs& a, const Item& it, float* p, float* s) {    \
    prefill_any<_Float16, wide>(a, it, p, s, widen);                                      \
  }
ZAYA_PREFILL_CLONE(prefill_generic, , v8, widen_generic)
#if defined(ZAYA_X86_DISPATCH)
ZAYA_PREFILL_CLONE(prefill_avx2, ZAYA_TARGET_V3, v8, widen_f16c)
ZAYA_PREFILL_CLONE(prefill_avx512, ZAYA_TARGET_V4, v16, widen_f16c)
#endif

}  // namespace

PrefillKernels prefill_kernels(const char* isa) {
  const std::string want = isa;
#if defined(ZAYA_X86_DISPATCH)
  if (want == "avx512") return {prefill_avx512_f32, prefill_avx512_f16};
  if (want == "avx2") return {prefill_avx2_f32, prefill_avx2_f16};
#endif
  return {prefill_generic_f32, prefill_generic_f16};
}

int64_t prefill_scratch(int64_t heads_per_group, int64_t head_dim) {
  const int64_t rp = kPrefillRows * heads_per_group;
  return 2 * head_dim * rp + kTile * rp + 5 * rp + 2 * kTile * head_dim;
}

}  // namespace zaya
