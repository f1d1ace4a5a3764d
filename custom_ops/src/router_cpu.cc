// CPU kernel of ai.zaya::Router: register-blocked fp32 matmuls with fused epilogues.
//
// Stages (each split into tasks for the ORT thread pool when the work is large enough):
//   1. z = x·down_w (+ down_b, + prev·scale)    -> state (output 0)
//   2. a = rmsnorm(z) * norm_w                    (per token)
//   3. b = gelu(a·fc1_w + fc1_b)
//   4. a = gelu(b·fc2_w + fc2_b)
//   5. logits = a·out_w, softmax, biased argmax -> select / weight (per token)
// Matmuls sum K in blocks of 128 and then add the blocks, the order MLAS (the fallback's MatMul)
// uses: the two agree to the last bit or nearly, and the biased argmax keeps ONNX ArgMax's
// first-index tie rule, so expert choices match.
//
// Two matmul paths: a few tokens (decode) read W directly — memory-bound, W is read once; many
// tokens (prefill) copy W into small panels that stay in L1 while every token of a task uses
// them, with a register tile chosen for the CPU at run time (AVX-512, AVX2+FMA or baseline).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "router.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ZAYA_NO_CLONES)
#include <immintrin.h>
#endif

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
#else
#define ZAYA_INLINE inline
#endif

namespace zaya {
namespace {

constexpr int64_t kTokenChunk = 64;    // tokens per task of the row-wise stages
constexpr int64_t kPackedChunk = 64;   // tokens per task of the packed matmuls
constexpr int64_t kPackedMinRows = 4;  // from this many tokens on, matmuls pack W panels
constexpr int64_t kColChunk = 64;      // output columns per task
constexpr int64_t kBlockK = 128;       // K block of the matmuls (MLAS's)
constexpr int64_t kMinParallelMacs = 1 << 16;  // below this a stage runs on the calling thread
constexpr int kMaxPanelCols = 32;

// ---- vectors ---------------------------------------------------------------------------------
// GCC/Clang vector extensions: explicit SIMD in every target (an 8-float vector is two SSE
// registers in the baseline, one AVX register with AVX2). The AVX2/AVX-512 panel kernels below
// use intrinsics instead: GCC keeps their accumulators in registers more reliably.
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

// y[q] = gelu(a[q] + bias[q]) for q < n (exact erf form, as ONNX Gelu), 8 at a time.
ZAYA_CLONES void gelu_row(float* y, const float* a, const float* bias, int64_t n) {
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

enum class Epilogue { kDown, kGelu };

struct GemmTask {
  const float* x;      // [T, K], row stride ldx
  int64_t ldx;
  const float* w;      // [K, M]
  const float* wp;     // w in panel layout (pack_weight), or null
  int64_t k, m;
  float* y;            // [T, M], row stride ldy
  int64_t ldy;
  Epilogue epi;
  const float* bias;   // [M]
  // kDown only: y += prev[row or 0] * scale
  const float* prev;
  bool prev_per_row;
  const float* scale;
};

// y[rows, j:j+jw] = epilogue(acc), acc rows `lda` apart.
void epilogue(const GemmTask& g, int64_t row0, int64_t rows, int64_t j, int64_t jw, const float* acc, int64_t lda) {
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t row = row0 + t;
    float* y = g.y + row * g.ldy + j;
    const float* a = acc + t * lda;
    if (g.epi == Epilogue::kDown) {
      const float* p = g.prev + (g.prev_per_row ? row * g.m : 0) + j;
      for (int64_t q = 0; q < jw; ++q) y[q] = (a[q] + g.bias[j + q]) + p[q] * g.scale[j + q];
    } else {
#if defined(ZAYA_VECTOR_GELU)
      gelu_row(y, a, g.bias + j, jw);
#else
      for (int64_t q = 0; q < jw; ++q) y[q] = gelu(a[q] + g.bias[j + q]);
#endif
    }
  }
}

// ---- direct path (few tokens) -----------------------------------------------------------------

// acc_out[T][8*NV] = X[T rows, K] · W[K, 8*NV columns], K summed in kBlockK blocks.
template <int T, int NV>
ZAYA_CLONES void gemm_tile(const float* x, int64_t ldx, const float* w, int64_t k_len, int64_t ldw, float* acc_out) {
  v8 total[T][NV];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < NV; ++v) total[t][v] = splat<v8>(0.0f);
  for (int64_t k0 = 0; k0 < k_len; k0 += kBlockK) {
    const int64_t k1 = std::min(k_len, k0 + kBlockK);
    v8 acc[T][NV];
    for (int t = 0; t < T; ++t)
      for (int v = 0; v < NV; ++v) acc[t][v] = splat<v8>(0.0f);
    for (int64_t kk = k0; kk < k1; ++kk) {
      const float* wr = w + kk * ldw;
      v8 wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = vload<v8>(wr + 8 * v);
      for (int t = 0; t < T; ++t) {
        const v8 xv = splat<v8>(x[t * ldx + kk]);
        for (int v = 0; v < NV; ++v) acc[t][v] += xv * wv[v];
      }
    }
    for (int t = 0; t < T; ++t)
      for (int v = 0; v < NV; ++v) total[t][v] += acc[t][v];
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < NV; ++v) vstore(acc_out + (t * NV + v) * 8, total[t][v]);
}

// Columns that do not fill a vector (R not a multiple of 8): plain loops, same summation order.
template <int T>
void gemm_tile_scalar(const float* x, int64_t ldx, const float* w, int64_t k_len, int64_t ldw, int64_t jw,
                      float* acc_out) {
  for (int64_t i = 0; i < T * jw; ++i) acc_out[i] = 0.0f;
  for (int64_t k0 = 0; k0 < k_len; k0 += kBlockK) {
    const int64_t k1 = std::min(k_len, k0 + kBlockK);
    for (int t = 0; t < T; ++t)
      for (int64_t j = 0; j < jw; ++j) {
        float acc = 0.0f;
        for (int64_t kk = k0; kk < k1; ++kk) acc += x[t * ldx + kk] * w[kk * ldw + j];
        acc_out[t * jw + j] += acc;
      }
  }
}

// T rows x columns [j0, j1): tiles of 8*NV columns (T*NV = 8 accumulators), single vectors,
// then scalar leftovers.
template <int T>
void gemm_rows(const GemmTask& g, int64_t row0, int64_t j0, int64_t j1) {
  constexpr int NV = 8 / T;
  alignas(64) float acc[T * 8 * NV];
  const float* x = g.x + row0 * g.ldx;
  int64_t j = j0;
  for (; j + 8 * NV <= j1; j += 8 * NV) {
    gemm_tile<T, NV>(x, g.ldx, g.w + j, g.k, g.m, acc);
    epilogue(g, row0, T, j, 8 * NV, acc, 8 * NV);
  }
  for (; j + 8 <= j1; j += 8) {
    gemm_tile<T, 1>(x, g.ldx, g.w + j, g.k, g.m, acc);
    epilogue(g, row0, T, j, 8, acc, 8);
  }
  if (j < j1) {
    gemm_tile_scalar<T>(x, g.ldx, g.w + j, g.k, g.m, j1 - j, acc);
    epilogue(g, row0, T, j, j1 - j, acc, j1 - j);
  }
}

void gemm_task_direct(const GemmTask& g, int64_t t0, int64_t t1, int64_t j0, int64_t j1) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) gemm_rows<4>(g, t, j0, j1);
  if (t + 2 <= t1) { gemm_rows<2>(g, t, j0, j1); t += 2; }
  if (t < t1) gemm_rows<1>(g, t, j0, j1);
}

// ---- packed path (many tokens) ----------------------------------------------------------------

// out[T][NV*W] = X[T rows, kb] · panel[kb, NV*W] (one K block: a single running sum, as MLAS).
template <typename V, int T, int NV>
ZAYA_INLINE void panel_tile(const float* x, int64_t ldx, const float* panel, int64_t kb, float* out, int64_t ldo,
                            bool accumulate) {
  constexpr int W = sizeof(V) / sizeof(float), JB = NV * W;
  V acc[T][NV];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < NV; ++v) acc[t][v] = splat<V>(0.0f);
  for (int64_t kk = 0; kk < kb; ++kk) {
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = vload<V>(panel + kk * JB + v * W);
    for (int t = 0; t < T; ++t) {
      const V xv = splat<V>(x[t * ldx + kk]);
      for (int v = 0; v < NV; ++v) acc[t][v] += xv * wv[v];
    }
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < NV; ++v) {
      float* o = out + t * ldo + v * W;
      vstore(o, accumulate ? vload<V>(o) + acc[t][v] : acc[t][v]);
    }
}

// All `rows` rows against one panel: T at a time, then 4, 2, 1.
template <typename V, int T, int NV>
ZAYA_INLINE void panel_rows(int64_t rows, const float* x, int64_t ldx, const float* panel, int64_t kb, float* out,
                            int64_t ldo, bool accumulate) {
  int64_t t = 0;
  for (; t + T <= rows; t += T) panel_tile<V, T, NV>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate);
  if constexpr (T > 4) {
    if (t + 4 <= rows) { panel_tile<V, 4, NV>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate); t += 4; }
  }
  if constexpr (T > 2) {
    if (t + 2 <= rows) { panel_tile<V, 2, NV>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate); t += 2; }
  }
  if (t < rows) panel_tile<V, 1, NV>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate);
}

// out[rows, panel width] (rows ldo apart) = or += X[rows, kb] · panel[kb, panel width]
using PanelFn = void (*)(int64_t rows, const float* x, int64_t ldx, const float* panel, int64_t kb, float* out,
                        int64_t ldo, bool accumulate);

struct PanelKernel {
  int cols;  // panel width
  PanelFn fn;
};

void panel_generic(int64_t rows, const float* x, int64_t ldx, const float* panel, int64_t kb, float* out, int64_t ldo,
                   bool accumulate) {
  panel_rows<v8, 4, 2>(rows, x, ldx, panel, kb, out, ldo, accumulate);  // 4 x 16 columns
}

#if defined(ZAYA_X86_DISPATCH)
// AVX2+FMA: T rows x 16 columns (two ymm per row; T = 6 uses 12 of 16 registers)
template <int T>
ZAYA_TARGET_V3 inline void tile_avx2(const float* x, int64_t ldx, const float* panel, int64_t kb, float* out, int64_t ldo,
                                      bool accumulate) {
  __m256 a0[T], a1[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < kb; ++kk) {
    const __m256 w0 = _mm256_loadu_ps(panel + kk * 16), w1 = _mm256_loadu_ps(panel + kk * 16 + 8);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_broadcast_ss(x + t * ldx + kk);
      a0[t] = _mm256_fmadd_ps(xv, w0, a0[t]);
      a1[t] = _mm256_fmadd_ps(xv, w1, a1[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    float* o = out + t * ldo;
    if (accumulate) {
      a0[t] = _mm256_add_ps(_mm256_loadu_ps(o), a0[t]);
      a1[t] = _mm256_add_ps(_mm256_loadu_ps(o + 8), a1[t]);
    }
    _mm256_storeu_ps(o, a0[t]);
    _mm256_storeu_ps(o + 8, a1[t]);
  }
}

ZAYA_TARGET_V3 void panel_avx2(int64_t rows, const float* x, int64_t ldx, const float* panel, int64_t kb, float* out,
                                int64_t ldo, bool accumulate) {
  int64_t t = 0;
  for (; t + 6 <= rows; t += 6) tile_avx2<6>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate);
  if (t + 4 <= rows) { tile_avx2<4>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate); t += 4; }
  if (t + 2 <= rows) { tile_avx2<2>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate); t += 2; }
  if (t < rows) tile_avx2<1>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate);
}

// AVX-512: T rows x 32 columns (two zmm per row; T = 8 uses 16 of 32 registers)
template <int T>
ZAYA_TARGET_V4 inline void tile_avx512(const float* x, int64_t ldx, const float* panel, int64_t kb, float* out, int64_t ldo,
                                      bool accumulate) {
  __m512 a0[T], a1[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < kb; ++kk) {
    const __m512 w0 = _mm512_loadu_ps(panel + kk * 32), w1 = _mm512_loadu_ps(panel + kk * 32 + 16);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_set1_ps(x[t * ldx + kk]);
      a0[t] = _mm512_fmadd_ps(xv, w0, a0[t]);
      a1[t] = _mm512_fmadd_ps(xv, w1, a1[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    float* o = out + t * ldo;
    if (accumulate) {
      a0[t] = _mm512_add_ps(_mm512_loadu_ps(o), a0[t]);
      a1[t] = _mm512_add_ps(_mm512_loadu_ps(o + 16), a1[t]);
    }
    _mm512_storeu_ps(o, a0[t]);
    _mm512_storeu_ps(o + 16, a1[t]);
  }
}

ZAYA_TARGET_V4 void panel_avx512(int64_t rows, const float* x, int64_t ldx, const float* panel, int64_t kb, float* out,
                                int64_t ldo, bool accumulate) {
  int64_t t = 0;
  for (; t + 8 <= rows; t += 8) tile_avx512<8>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate);
  if (t + 4 <= rows) { tile_avx512<4>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate); t += 4; }
  if (t + 2 <= rows) { tile_avx512<2>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate); t += 2; }
  if (t < rows) tile_avx512<1>(x + t * ldx, ldx, panel, kb, out + t * ldo, ldo, accumulate);
}
#endif

// The best panel kernel this CPU runs. ZAYA_EDGE_CPU_ISA=generic|avx2 picks a lower one (tests
// use it to check every kernel on one machine); a higher one than the CPU has is ignored.
const PanelKernel& panel_kernel() {
  static const PanelKernel chosen = [] {
    const char* env = std::getenv("ZAYA_EDGE_CPU_ISA");
    const std::string want = env ? env : "";
#if defined(ZAYA_X86_DISPATCH)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("fma");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx512 && want != "avx2" && want != "generic") return PanelKernel{32, panel_avx512};
    if (avx2 && want != "generic") return PanelKernel{16, panel_avx2};
#endif
    return PanelKernel{16, panel_generic};
  }();
  return chosen;
}

// rows [t0, t1) x columns [j0, j1): per panel-wide column tile and K block, W's block is copied
// once into a contiguous panel, multiplied by every row, and added into y (the first K block
// stores: 0 + a == a, so the sum is exactly MLAS's); the epilogue then runs in place.
void gemm_task_packed(const GemmTask& g, int64_t t0, int64_t t1, int64_t j0, int64_t j1) {
  const PanelKernel& kern = panel_kernel();
  const int64_t jb = kern.cols;
  alignas(64) float panel[kBlockK * kMaxPanelCols];
  thread_local std::vector<float> blk_buf;
  blk_buf.resize(static_cast<size_t>(kPackedChunk * kMaxPanelCols));
  float* blk = blk_buf.data();
  const int64_t rows = t1 - t0;
  const float* x = g.x + t0 * g.ldx;
  float* y = g.y + t0 * g.ldy;
  for (int64_t j = j0; j < j1; j += jb) {
    const int64_t jw = std::min(jb, j1 - j);
    for (int64_t k0 = 0; k0 < g.k; k0 += kBlockK) {
      const int64_t kb = std::min(g.k, k0 + kBlockK) - k0;
      const float* pan = panel;
      if (g.wp) {
        pan = g.wp + (j / jb) * g.k * jb + k0 * jb;
      } else {
        for (int64_t kk = 0; kk < kb; ++kk) {  // W[k0:k0+kb, j:j+jw] -> contiguous, zero-padded
          const float* src = g.w + (k0 + kk) * g.m + j;
          float* dst = panel + kk * jb;
          for (int64_t q = 0; q < jw; ++q) dst[q] = src[q];
          for (int64_t q = jw; q < jb; ++q) dst[q] = 0.0f;
        }
      }
      if (jw == jb) {
        kern.fn(rows, x + k0, g.ldx, pan, kb, y + j, g.ldy, k0 != 0);
      } else {  // a partial tile: through a buffer, then the valid columns into y
        kern.fn(rows, x + k0, g.ldx, pan, kb, blk, jb, false);
        for (int64_t t = 0; t < rows; ++t) {
          float* yr = y + t * g.ldy + j;
          const float* br = blk + t * jb;
          for (int64_t q = 0; q < jw; ++q) yr[q] = k0 == 0 ? br[q] : yr[q] + br[q];
        }
      }
    }
  }
  epilogue(g, t0, rows, j0, j1 - j0, y + j0, g.ldy);
}

// ---- stages -----------------------------------------------------------------------------------

void run_gemm(const GemmTask& g, int64_t rows, const ParallelFor& pfor) {
  const bool packed = g.wp != nullptr || rows >= kPackedMinRows;
  const int64_t chunk = packed ? kPackedChunk : kTokenChunk;
  const int64_t tchunks = (rows + chunk - 1) / chunk;
  const int64_t jchunks = (g.m + kColChunk - 1) / kColChunk;
  auto task = [&](size_t i) {
    // token chunks vary fastest: consecutive tasks share W's column slab while it is in cache
    const int64_t jc = static_cast<int64_t>(i) / tchunks, tc = static_cast<int64_t>(i) % tchunks;
    const int64_t t0 = tc * chunk, t1 = std::min(rows, t0 + chunk);
    const int64_t j0 = jc * kColChunk, j1 = std::min(g.m, j0 + kColChunk);
    if (packed) {
      gemm_task_packed(g, t0, t1, j0, j1);
    } else {
      gemm_task_direct(g, t0, t1, j0, j1);
    }
  };
  const int64_t tasks = tchunks * jchunks;
  if (pfor && tasks > 1 && rows * g.k * g.m >= kMinParallelMacs) {
    pfor(static_cast<size_t>(tasks), task);
  } else {
    for (int64_t i = 0; i < tasks; ++i) task(static_cast<size_t>(i));
  }
}

// Runs fn over token ranges, in parallel when there are many tokens.
template <typename Fn>
void for_tokens(int64_t n, int64_t cost_per_token, const ParallelFor& pfor, Fn fn) {
  const int64_t chunks = (n + kTokenChunk - 1) / kTokenChunk;
  auto task = [&](size_t i) {
    const int64_t t0 = static_cast<int64_t>(i) * kTokenChunk;
    fn(t0, std::min(n, t0 + kTokenChunk));
  };
  if (pfor && chunks > 1 && n * cost_per_token >= kMinParallelMacs) {
    pfor(static_cast<size_t>(chunks), task);
  } else {
    for (int64_t i = 0; i < chunks; ++i) task(static_cast<size_t>(i));
  }
}

ZAYA_CLONES void rmsnorm_rows(const float* z, const float* w, float* out, int64_t rows, int64_t r, float eps) {
  for (int64_t t = 0; t < rows; ++t) {
    const float* zr = z + t * r;
    float ss = 0.0f;
    for (int64_t j = 0; j < r; ++j) ss += zr[j] * zr[j];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(r) + eps);
    float* o = out + t * r;
    for (int64_t j = 0; j < r; ++j) o[j] = (zr[j] * inv) * w[j];
  }
}

// logits = h·out_w, softmax, biased argmax, one-hot outputs for rows [t0, t1).
void classify_rows(const RouterArgs& a, const float* hbuf, int64_t t0, int64_t t1) {
  const int64_t r = a.r, c = a.c, e = a.c - 1;
  std::vector<float> logits(static_cast<size_t>(c));
  for (int64_t t = t0; t < t1; ++t) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    const float* h = hbuf + t * r;
    for (int64_t k = 0; k < r; ++k) {
      const float hv = h[k];
      const float* wr = a.out_w + k * c;
      for (int64_t q = 0; q < c; ++q) logits[q] += hv * wr[q];
    }
    float mx = logits[0];
    for (int64_t q = 1; q < c; ++q) mx = std::max(mx, logits[q]);
    float sum = 0.0f;
    for (int64_t q = 0; q < c; ++q) {
      logits[q] = std::exp(logits[q] - mx);
      sum += logits[q];
    }
    int64_t best = 0;
    float best_v = 0.0f;
    for (int64_t q = 0; q < c; ++q) {
      logits[q] /= sum;
      const float v = logits[q] + a.balancing_bias[q];
      if (q == 0 || v > best_v) { best = q; best_v = v; }
    }
    float* sel = a.select + t * e;
    float* wt = a.weight + t * e;
    std::fill(sel, sel + e, 0.0f);
    std::fill(wt, wt + e, 0.0f);
    if (best < e) {
      sel[best] = 1.0f;
      wt[best] = logits[best];
    } else if (e > 0) {
      sel[0] = 1.0f;  // skipped token: expert 0 with weight 0, as the function body does
    }
  }
}

}  // namespace

void router_cpu(const RouterArgs& a, const ParallelFor& pfor) {
  const int64_t n = a.n, r = a.r;
  if (n == 0) return;
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(2 * n * r));
  float* buf_a = scratch.data();
  float* buf_b = buf_a + n * r;

  run_gemm({a.x, a.h, a.down_w, a.down_w_packed, a.h, r, a.state, r, Epilogue::kDown, a.down_b, a.prev_state,
            a.prev_per_row, a.state_scale},
           n, pfor);
  for_tokens(n, r, pfor, [&](int64_t t0, int64_t t1) {
    rmsnorm_rows(a.state + t0 * r, a.norm_w, buf_a + t0 * r, t1 - t0, r, a.epsilon);
  });
  run_gemm({buf_a, r, a.fc1_w, a.fc1_w_packed, r, r, buf_b, r, Epilogue::kGelu, a.fc1_b, nullptr, false, nullptr},
           n, pfor);
  run_gemm({buf_b, r, a.fc2_w, a.fc2_w_packed, r, r, buf_a, r, Epilogue::kGelu, a.fc2_b, nullptr, false, nullptr},
           n, pfor);
  for_tokens(n, r * a.c, pfor, [&](int64_t t0, int64_t t1) { classify_rows(a, buf_a, t0, t1); });
}

std::vector<float> pack_weight(const float* w, int64_t k, int64_t m) {
  const int64_t jb = panel_kernel().cols, tiles = (m + jb - 1) / jb;
  std::vector<float> out(static_cast<size_t>(tiles * k * jb), 0.0f);
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t q = 0; q < jb && t * jb + q < m; ++q) out[(t * k + kk) * jb + q] = w[kk * m + t * jb + q];
  return out;
}

}  // namespace zaya
