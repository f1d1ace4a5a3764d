// The ZAYA router (ai.zaya::Router) as plain compute functions, free of ONNX Runtime types.
//
// The operator contract lives in export/router_op.py; in short, per token n:
//   z = x[n]·down_w + down_b + prev_state[n or 0] * state_scale      -> state [N, R]
//   p = softmax( gelu(gelu(rmsnorm(z)*norm_w · fc1_w + fc1_b) · fc2_w + fc2_b) · out_w )   (C = E+1 classes)
//   c = argmax(p + balancing_bias)        (first index wins ties, like ONNX ArgMax)
//   select[n] = one_hot(c < E ? c : 0, E) ;  weight[n] = select[n] * (c < E ? p[c] : 0)
// Weights are [in, out] row-major; every tensor is fp32 and contiguous.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace zaya {

struct RouterArgs {
  const float* x = nullptr;           // [N, H]
  const float* prev_state = nullptr;  // [N, R] or [1, R]
  bool prev_per_row = false;          // true: [N, R]; false: [1, R] broadcast to every row
  const float* down_w = nullptr;      // [H, R]
  const float* down_b = nullptr;      // [R]
  const float* state_scale = nullptr; // [R]
  const float* norm_w = nullptr;      // [R]
  const float* fc1_w = nullptr;       // [R, R]
  const float* fc1_b = nullptr;       // [R]
  const float* fc2_w = nullptr;       // [R, R]
  const float* fc2_b = nullptr;       // [R]
  const float* out_w = nullptr;       // [R, C]
  const float* balancing_bias = nullptr;  // [C]
  float* state = nullptr;             // [N, R]
  float* select = nullptr;            // [N, C-1]
  float* weight = nullptr;            // [N, C-1]
  int64_t n = 0, h = 0, r = 0, c = 0;
  float epsilon = 1e-5f;
  // Optional CPU copies of down_w / fc1_w / fc2_w in panel layout (pack_weight), made once
  // when the weights are constant initializers: the matmuls then stream them contiguously.
  const float* down_w_packed = nullptr;
  const float* fc1_w_packed = nullptr;
  const float* fc2_w_packed = nullptr;
};

// Runs fn(i) for every i in [0, total), possibly on several threads (the ORT thread pool).
using ParallelFor = std::function<void(size_t total, const std::function<void(size_t)>& fn)>;

// CPU kernel. `pfor` may be null (single thread).
void router_cpu(const RouterArgs& a, const ParallelFor& pfor);

// A [K, M] weight in the CPU kernel's panel layout: column tiles of panel width (chosen for this
// CPU), each tile K rows of contiguous, zero-padded columns.
std::vector<float> pack_weight(const float* w, int64_t k, int64_t m);

// GPU kernel (CUDA or HIP build): enqueues on `stream` (the execution provider's); returns
// nullptr on success or a one-line error message (valid until the next call on this thread).
const char* router_gpu(const RouterArgs& a, void* stream);

}  // namespace zaya
