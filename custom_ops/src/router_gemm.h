// The CPU router's fp32 matmul engine (router_gemm.cc): y = epilogue(x·W) over a batch of tokens,
// split into tasks for the ORT thread pool when the work is large enough.
#pragma once

#include <cstdint>

#include "router.h"

namespace zaya {

constexpr int64_t kTokenChunk = 64;            // tokens per task of the row-wise stages
constexpr int64_t kMinParallelMacs = 1 << 16;  // below this a stage runs on the calling thread

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

// y[rows, M] = epilogue(x[rows, K]·w): kDown: (acc + bias) + prev*scale; kGelu: gelu(acc + bias).
void run_gemm(const GemmTask& g, int64_t rows, const ParallelFor& pfor);

// Column-tile width of the panel kernel this CPU runs: the tile width of pack_weight's layout.
int64_t panel_cols();

}  // namespace zaya
