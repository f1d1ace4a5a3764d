// CPU kernel of ai.zaya::Router: register-blocked fp32 matmuls with fused epilogues.
//
// Stages (each split into tasks for the ORT thread pool when the work is large enough):
//   1. z = x·down_w (+ down_b, + prev·scale)    -> state (output 0)
//   2. a = rmsnorm(z) * norm_w                    (per token)
//   3. b = gelu(a·fc1_w + fc1_b)
//   4. a = gelu(b·fc2_w + fc2_b)
//   5. logits = a·out_w, softmax, biased argmax -> select / weight (per token)
// The matmuls (router_gemm.cc) sum K in blocks of 128 and then add the blocks, the order MLAS
// (the fallback's MatMul) uses: the two agree to the last bit or nearly, and the biased argmax
// keeps ONNX ArgMax's first-index tie rule, so expert choices match.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_simd.h"
#include "router.h"
#include "router_gemm.h"

namespace zaya {
namespace {

// ---- stages -----------------------------------------------------------------------------------

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
  const int64_t jb = panel_cols(), tiles = (m + jb - 1) / jb;
  std::vector<float> out(static_cast<size_t>(tiles * k * jb), 0.0f);
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t q = 0; q < jb && t * jb + q < m; ++q) out[(t * k + kk) * jb + q] = w[kk * m + t * jb + q];
  return out;
}

}  // namespace zaya
