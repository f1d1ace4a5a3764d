// CPU kernel of ai.zaya::Router: register-blocked fp32 matmuls with fused epilogues.
//
// Stages (each split into tasks for the ORT thread pool when the work is large enough):
//   1. z = x·down_w (+ down_b, + prev·scale)    -> state (output 0)
//   2. a = rmsnorm(z) * norm_w                    (per token)
//   3. b = gelu(a·fc1_w + fc1_b)
//   4. a = gelu(b·fc2_w + fc2_b)
//   5. logits = a·out_w, softmax, biased argmax -> select / weight (per token)
// The order of floating-point operations follows the ONNX function body closely enough that
// the two agree to ~1e-6 (fp32); the biased argmax keeps ONNX ArgMax's first-index tie rule.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "router.h"

// Build the hot loops for AVX2+FMA and AVX-512 as well as the baseline, chosen at load time,
// so one binary is portable and still fast on current x86 CPUs.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ZAYA_NO_CLONES)
#define ZAYA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ZAYA_CLONES
#endif

namespace zaya {
namespace {

constexpr int64_t kTokenChunk = 16;   // tokens per task
constexpr int64_t kColChunk = 64;     // output columns per task
constexpr int64_t kBlockK = 128;      // K block of the matmul tiles
constexpr int64_t kMinParallelMacs = 1 << 16;  // below this a stage runs on the calling thread

enum class Epilogue { kDown, kGelu };

struct GemmTask {
  const float* x;      // [T, K], row stride ldx
  int64_t ldx;
  const float* w;      // [K, M]
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

inline float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752440f)); }

// T rows x JB columns of X·W (JB == 64 / T keeps the accumulators in vector registers).
// K is summed in blocks of kBlockK whose partial sums are then added up: several times more
// accurate than one running sum over K = 2048, and close to what MLAS (the fallback) does.
template <int T>
ZAYA_CLONES void gemm_tile(const float* x, int64_t ldx, const float* w, int64_t k_len, int64_t ldw,
                           int64_t jw, float* acc_out) {
  constexpr int JB = 64 / T;
  for (int i = 0; i < T * JB; ++i) acc_out[i] = 0.0f;
  for (int64_t k0 = 0; k0 < k_len; k0 += kBlockK) {
    const int64_t k1 = std::min(k_len, k0 + kBlockK);
    float acc[T][JB];
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < JB; ++j) acc[t][j] = 0.0f;
    if (jw == JB) {
      for (int64_t kk = k0; kk < k1; ++kk) {
        const float* wr = w + kk * ldw;
        for (int t = 0; t < T; ++t) {
          const float xv = x[t * ldx + kk];
          for (int j = 0; j < JB; ++j) acc[t][j] += xv * wr[j];
        }
      }
    } else {
      for (int64_t kk = k0; kk < k1; ++kk) {
        const float* wr = w + kk * ldw;
        for (int t = 0; t < T; ++t) {
          const float xv = x[t * ldx + kk];
          for (int j = 0; j < jw; ++j) acc[t][j] += xv * wr[j];
        }
      }
    }
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < JB; ++j) acc_out[t * JB + j] += acc[t][j];
  }
}

template <int T>
void gemm_rows(const GemmTask& g, int64_t row0, int64_t j0, int64_t j1) {
  constexpr int JB = 64 / T;
  float acc[T * JB];
  for (int64_t j = j0; j < j1; j += JB) {
    const int64_t jw = std::min<int64_t>(JB, j1 - j);
    gemm_tile<T>(g.x + row0 * g.ldx, g.ldx, g.w + j, g.k, g.m, jw, acc);
    for (int t = 0; t < T; ++t) {
      const int64_t row = row0 + t;
      float* y = g.y + row * g.ldy + j;
      const float* a = acc + t * JB;
      if (g.epi == Epilogue::kDown) {
        const float* p = g.prev + (g.prev_per_row ? row * g.m : 0) + j;
        for (int64_t q = 0; q < jw; ++q) y[q] = (a[q] + g.bias[j + q]) + p[q] * g.scale[j + q];
      } else {
        for (int64_t q = 0; q < jw; ++q) y[q] = gelu(a[q] + g.bias[j + q]);
      }
    }
  }
}

// One task: rows [t0, t1) x columns [j0, j1), four rows at a time.
void gemm_task(const GemmTask& g, int64_t t0, int64_t t1, int64_t j0, int64_t j1) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) gemm_rows<4>(g, t, j0, j1);
  if (t + 2 <= t1) { gemm_rows<2>(g, t, j0, j1); t += 2; }
  if (t < t1) gemm_rows<1>(g, t, j0, j1);
}

void run_gemm(const GemmTask& g, int64_t rows, const ParallelFor& pfor) {
  const int64_t tchunks = (rows + kTokenChunk - 1) / kTokenChunk;
  const int64_t jchunks = (g.m + kColChunk - 1) / kColChunk;
  auto task = [&](size_t i) {
    const int64_t tc = static_cast<int64_t>(i) / jchunks, jc = static_cast<int64_t>(i) % jchunks;
    gemm_task(g, tc * kTokenChunk, std::min(rows, (tc + 1) * kTokenChunk), jc * kColChunk,
              std::min(g.m, (jc + 1) * kColChunk));
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

  run_gemm({a.x, a.h, a.down_w, a.h, r, a.state, r, Epilogue::kDown, a.down_b, a.prev_state, a.prev_per_row,
            a.state_scale},
           n, pfor);
  for_tokens(n, r, pfor, [&](int64_t t0, int64_t t1) {
    rmsnorm_rows(a.state + t0 * r, a.norm_w, buf_a + t0 * r, t1 - t0, r, a.epsilon);
  });
  run_gemm({buf_a, r, a.fc1_w, r, r, buf_b, r, Epilogue::kGelu, a.fc1_b, nullptr, false, nullptr}, n, pfor);
  run_gemm({buf_b, r, a.fc2_w, r, r, buf_a, r, Epilogue::kGelu, a.fc2_b, nullptr, false, nullptr}, n, pfor);
  for_tokens(n, r * a.c, pfor, [&](int64_t t0, int64_t t1) { classify_rows(a, buf_a, t0, t1); });
}

}  // namespace zaya
