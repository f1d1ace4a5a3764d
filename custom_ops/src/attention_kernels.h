// Internal to the CachedAttention CPU kernels (attention_cpu.cc: decode, attention_prefill.cc:
// prefill): tile sizes, fp16/fp32 loads, the per-ISA fp16 widening, the work item and the
// running softmax state both paths leave for the merge. Internal linkage, as in cpu_simd.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "attention.h"
#include "cpu_simd.h"

#if defined(ZAYA_X86_DISPATCH)
#include <immintrin.h>
#endif

namespace zaya {

struct Item {
  int64_t b, g, r0, r1, j0, j1;  // rows [r0, r1) of the new tokens, keys [j0, j1)
};

// Running softmax state of one query head: max, sum, then D accumulators.
struct Part {
  float* p;
  float& m() { return p[0]; }
  float& l() { return p[1]; }
  float* acc() { return p + 2; }
};

using ItemFn = void (*)(const AttentionArgs&, const Item&, float*, float*);

namespace {

constexpr int64_t kTile = 32;       // keys per tile
constexpr int64_t kRowBlock = 4;    // query rows per decode work item
constexpr int64_t kPrefillRows = 16;  // query rows per prefill work item
constexpr int64_t kPrefillFrom = 8;   // new tokens from which a call takes the prefill path
constexpr int64_t kSplitMin = 512;  // keys per split, at least
constexpr int64_t kWantItems = 8;   // split keys until there are this many items
constexpr int64_t kPrefetch = 8192;  // elements ahead of the tile being widened (8 KB of fp16)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

typedef _Float16 h8 __attribute__((vector_size(16)));

template <typename T>
ZAYA_INLINE v8 load8(const T* p);
template <>
ZAYA_INLINE v8 load8<float>(const float* p) { return vload<v8>(p); }
template <>
ZAYA_INLINE v8 load8<_Float16>(const _Float16* p) {
  h8 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, v8);
}
ZAYA_INLINE void store8(float* p, v8 v) { vstore(p, v); }
ZAYA_INLINE void store8(_Float16* p, v8 v) {
  const h8 h = __builtin_convertvector(v, h8);
  std::memcpy(p, &h, sizeof h);
}
// fp16 -> fp32 of a tile, out of line per ISA: GCC 12 converts _Float16 vectors element by
// element, so the F16C clones use the intrinsic.
using Widen = void (*)(const _Float16*, float*, int64_t);
__attribute__((unused)) void widen_generic(const _Float16* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
#if defined(ZAYA_X86_DISPATCH)
ZAYA_TARGET_V3 __attribute__((unused)) void widen_f16c(const _Float16* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    if (i % 32 == 0) __builtin_prefetch(src + i + kPrefetch);
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
}
#endif

// A tile of n cache elements as fp32: the cache itself when it is fp32, else widened into buf.
ZAYA_INLINE const float* as_f32(const float* src, float*, int64_t n, Widen) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(src + i + kPrefetch);
  return src;
}
ZAYA_INLINE const float* as_f32(const _Float16* src, float* buf, int64_t n, Widen widen) {
  widen(src, buf, n);
  return buf;
}

ZAYA_INLINE float hsum(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
ZAYA_INLINE v8 exp_le0(v8 y) { return exp_neg(y < -87.0f ? splat<v8>(-87.0f) : y); }

// Keys [lo, hi] row i of the new tokens may see (before the mask).
ZAYA_INLINE void row_range(const AttentionArgs& a, int64_t i, int64_t* lo, int64_t* hi) {
  const int64_t c = a.total - a.seq + i;
  *hi = c;
  *lo = a.window > 0 ? std::max<int64_t>(0, c - a.window + 1) : 0;
}

}  // namespace

// The prefill item kernels (attention_prefill.cc) for a CPU ISA name ("avx512", "avx2",
// "generic") and the scratch floats one of their items needs.
struct PrefillKernels {
  ItemFn f32, f16;
};
PrefillKernels prefill_kernels(const char* isa);
int64_t prefill_scratch(int64_t heads_per_group, int64_t head_dim);

}  // namespace zaya
