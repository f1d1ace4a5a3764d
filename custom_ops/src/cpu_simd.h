// SIMD helpers of the CPU kernels: per-function ISA targets and clones, an 8-float vector type,
// and a vectorised exact-erf GELU.
//
// Everything here has internal linkage (an unnamed namespace): each file that includes this header
// gets its own copies, so the always-inline helpers inline into whichever clone calls them and
// gelu_row gets its clones (and their resolver) only in the file that uses it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ZAYA_NO_CLONES)
#define ZAYA_X86_DISPATCH 1
#define ZAYA_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define ZAYA_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#if defined(__linux__)
// baseline plus AVX2+FMA and AVX-512 versions of a function, picked once at load time
#define ZAYA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef ZAYA_CLONES
#define ZAYA_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ZAYA_INLINE inline __attribute__((always_inline))
#define ZAYA_NOINLINE __attribute__((noinline))
#else
#define ZAYA_INLINE inline
#define ZAYA_NOINLINE
#endif

namespace zaya {
namespace {

// ---- vectors ---------------------------------------------------------------------------------
// GCC/Clang vector extensions: explicit SIMD in every target (an 8-float vector is two SSE
// registers in the baseline, one AVX register with AVX2). The AVX2/AVX-512 panel kernels of
// router_gemm.cc use intrinsics instead: GCC keeps their accumulators in registers more reliably.
#if defined(__GNUC__) || defined(__clang__)
typedef float v8 __attribute__((vector_size(32)));
template <typename V>
ZAYA_INLINE V vload(const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; }
template <typename V>
ZAYA_INLINE void vstore(float* p, V v) { std::memcpy(p, &v, sizeof v); }
#if defined(__clang__) || __GNUC__ >= 12
ZAYA_INLINE v8 vsplat(float f, v8*) { v8 v = {f}; return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0); }
#else
ZAYA_INLINE v8 vsplat(float f, v8*) { return v8{} + f; }
#endif
#else  // other compilers: a plain struct the optimiser may vectorise
struct v8 {
  float f[8];
  v8& operator+=(const v8& o) { for (int i = 0; i < 8; ++i) f[i] += o.f[i]; return *this; }
  v8 operator*(const v8& o) const { v8 r; for (int i = 0; i < 8; ++i) r.f[i] = f[i] * o.f[i]; return r; }
};
template <typename V>
inline V vload(const float* p) { V v; std::memcpy(v.f, p, sizeof v.f); return v; }
template <typename V>
inline void vstore(float* p, V v) { std::memcpy(p, v.f, sizeof v.f); }
inline v8 vsplat(float x, v8*) { v8 v; for (float& f : v.f) f = x; return v; }
#endif
template <typename V>
ZAYA_INLINE V splat(float f) { return vsplat(f, static_cast<V*>(nullptr)); }

inline float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752440f)); }

#if defined(__GNUC__) || defined(__clang__)
#define ZAYA_VECTOR_GELU 1
typedef int32_t vi8 __attribute__((vector_size(32)));

template <size_t N>
ZAYA_INLINE v8 horner(const float (&c)[N], v8 t) {
  v8 r = splat<v8>(c[0]);
  for (size_t i = 1; i < N; ++i) r = r * t + c[i];
  return r;
}

// exp(y) for y in [-17, 0]: Cody-Waite reduction by ln 2, degree-7 Taylor polynomial (error
// ~5e-9 relative), 2^n put into the exponent bits.
ZAYA_INLINE v8 exp_neg(v8 y) {
  const v8 n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const v8 r = (y - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  static constexpr float kTaylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  const vi8 bits = (__builtin_convertvector(n, vi8) + 127) << 23;
  return horner(kTaylor, r) * (v8)bits;  // same-size vector cast: a bit cast
}

// erf(a) for a >= 0, within 1.5e-7 of the exact value (glibc's erff: 5e-8): a Taylor series
// below 0.8, 1 - exp(-a^2) * Q(1/a) up to 4 (Q a least-squares fit of erfc(a)*exp(a^2)), 1 above.
ZAYA_INLINE v8 erf_pos(v8 a) {
  static constexpr float kSmall[] = {1.646211444e-06f, -1.492565025e-05f, 1.205533263e-04f, -8.548327023e-04f,
                                     5.223977845e-03f, -2.686617151e-02f, 1.128379181e-01f, -3.761263788e-01f,
                                     1.128379226e+00f};
  static constexpr float kQ[] = {5.574996583e-03f, -3.360744193e-02f, 6.926176697e-02f, -6.539672613e-03f,
                                 -2.390055507e-01f, 5.087404847e-01f, -4.808341265e-01f, 4.518396407e-02f,
                                 5.585021377e-01f, 3.069833911e-04f};
  const v8 small = a * horner(kSmall, a * a);
  const v8 ab = a < 0.8f ? splat<v8>(0.8f) : (a > 4.0f ? splat<v8>(4.0f) : a);
  const v8 big = 1.0f - exp_neg(-(ab * ab)) * horner(kQ, 1.0f / ab);
  return a < 0.8f ? small : (a < 4.0f ? big : splat<v8>(1.0f));
}

// (unused attribute: files that include this header without calling it get no warning)
ZAYA_CLONES __attribute__((unused)) void gelu_row(float* y, const float* a, const float* bias, int64_t n) {
  alignas(32) float tail[8];
  for (int64_t q = 0; q < n; q += 8) {
    const int64_t w = std::min<int64_t>(8, n - q);
    v8 v;
    if (w == 8) {
      v = vload<v8>(a + q) + vload<v8>(bias + q);
    } else {
      for (int64_t i = 0; i < 8; ++i) tail[i] = i < w ? a[q + i] + bias[q + i] : 0.0f;
      v = vload<v8>(tail);
    }
    const v8 s = v * 0.70710678118654752440f;
    const v8 e = erf_pos(s < 0.0f ? -s : s);
    const v8 g = 0.5f * v * (1.0f + (s < 0.0f ? -e : e));
    if (w == 8) {
      vstore(y + q, g);
    } else {
      vstore(tail, g);
      for (int64_t i = 0; i < w; ++i) y[q + i] = tail[i];
    }
  }
}
#endif

}  // namespace
}  // namespace zaya
