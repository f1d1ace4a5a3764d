// Matmul engine of the CPU router: register-blocked fp32 matmuls with fused epilogues.
//
// Matmuls sum K in blocks of 128 and then add the blocks, the order MLAS (the fallback's MatMul)
// uses: the two agree to the last bit or nearly.
//
// Two matmul paths: a few tokens (decode) read W directly — memory-bound, W is read once; many
// tokens (prefill) copy W into small panels that stay in L1 while every token of a task uses
// them, with a register tile chosen for the CPU at run time (AVX-512, AVX2+FMA or baseline).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_simd.h"
#include "router_gemm.h"

#if defined(ZAYA_X86_DISPATCH)
#include <immintrin.h>
#endif

namespace zaya {
namespace {

constexpr int64_t kPackedChunk = 64;   // tokens per task of the packed matmuls
constexpr int64_t kPackedMinRows = 4;  // from this many tokens on, matmuls pack W panels
constexpr int64_t kColChunk = 64;      // output columns per task
constexpr int64_t kBlockK = 128;       // K block of the matmuls (MLAS's)
constexpr int kMaxPanelCols = 32;

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
// Out of line: it runs once, and inlined it would crowd gemm_task_packed's registers.
ZAYA_NOINLINE const PanelKernel& panel_kernel() {
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

}  // namespace

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

int64_t panel_cols() { return panel_kernel().cols; }

}  // namespace zaya
