// GPU kernels of ai.zaya::Router, one source for CUDA (nvcc) and HIP (hipcc -x hip).
//
// Two launches on the execution provider's stream, no scratch memory:
//   down_proj:  state = x·down_w + down_b + prev·scale   (block: 32 columns x 8 k-slices, TOK tokens)
//   router_mlp: per group of TT tokens in one block: rmsnorm, fc1+gelu, fc2+gelu, out_proj,
//               softmax, biased argmax, one-hot select / weight
// Reductions use shared memory in a fixed order (no atomics): results do not vary run to run,
// and nothing assumes a warp size (32 on NVIDIA, 64 on AMD).
#include <cstdio>
#include <string>

#include "../router.h"
#include "gpu_compat.h"

namespace zaya {
namespace {

constexpr int kThreads = 256;
constexpr int kCols = 32;                   // down_proj: columns per block
constexpr int kSlices = kThreads / kCols;   // down_proj: k-slices per block

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f)); }

template <int TOK>
__global__ void __launch_bounds__(kThreads) down_proj_kernel(RouterArgs a) {
  __shared__ float part[TOK][kSlices][kCols];
  const int lane = threadIdx.x % kCols, slice = threadIdx.x / kCols;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kCols + lane;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * TOK;
  const int nt = static_cast<int>(min(static_cast<int64_t>(TOK), a.n - row0));
  float acc[TOK];
#pragma unroll
  for (int t = 0; t < TOK; ++t) acc[t] = 0.0f;
  if (col < a.r) {
    const float* x = a.x + row0 * a.h;
    for (int64_t k = slice; k < a.h; k += kSlices) {
      const float w = a.down_w[k * a.r + col];
#pragma unroll
      for (int t = 0; t < TOK; ++t)
        if (t < nt) acc[t] += x[t * a.h + k] * w;
    }
  }
#pragma unroll
  for (int t = 0; t < TOK; ++t) part[t][slice][lane] = acc[t];
  __syncthreads();
  // thread (t, lane) sums the slices of token t in a fixed order
  for (int idx = threadIdx.x; idx < TOK * kCols; idx += kThreads) {
    const int t = idx / kCols, l = idx % kCols;
    const int64_t c = static_cast<int64_t>(blockIdx.y) * kCols + l;
    if (t < nt && c < a.r) {
      float s = 0.0f;
      for (int q = 0; q < kSlices; ++q) s += part[t][q][l];
      const int64_t row = row0 + t;
      const float p = a.prev_state[(a.prev_per_row ? row * a.r : 0) + c];
      a.state[row * a.r + c] = (s + a.down_b[c]) + p * a.state_scale[c];
    }
  }
}

// Sums v[t][0..kThreads) for t < tt into out[t] (tree in shared memory, fixed order).
__device__ void block_sum(float* red, int tt, float* out) {
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    __syncthreads();
    if (threadIdx.x < stride)
      for (int t = 0; t < tt; ++t) red[t * kThreads + threadIdx.x] += red[t * kThreads + threadIdx.x + stride];
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int t = 0; t < tt; ++t) out[t] = red[t * kThreads];
  __syncthreads();
}

// a[t][:] (shared) · w [R, R] + b, gelu -> o[t][:] (shared), for TT tokens
template <int TT>
__device__ void dense_gelu(const float* in, const float* w, const float* bias, float* o, int64_t r, int nt) {
  for (int64_t j = threadIdx.x; j < r; j += kThreads) {
    float acc[TT];
#pragma unroll
    for (int t = 0; t < TT; ++t) acc[t] = 0.0f;
    for (int64_t k = 0; k < r; ++k) {
      const float wv = w[k * r + j];
#pragma unroll
      for (int t = 0; t < TT; ++t) acc[t] += in[t * r + k] * wv;
    }
#pragma unroll
    for (int t = 0; t < TT; ++t) o[t * r + j] = gelu(acc[t] + bias[j]);  // padded rows too: defined
  }
  __syncthreads();
}

template <int TT>
__global__ void __launch_bounds__(kThreads) router_mlp_kernel(RouterArgs a, int slices) {
  extern __shared__ float smem[];
  const int64_t r = a.r, c = a.c, e = a.c - 1;
  float* buf_a = smem;                    // [TT][R]
  float* buf_b = buf_a + TT * r;          // [TT][R]
  float* red = buf_b + TT * r;            // [TT][kThreads]
  float* part = red + TT * kThreads;      // [TT][slices][C]
  float* logits = part + TT * slices * c; // [TT][C]
  __shared__ float scal[TT];
  __shared__ int best_s[TT];

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * TT;
  const int nt = static_cast<int>(min(static_cast<int64_t>(TT), a.n - row0));

  // rmsnorm(z) * norm_w
  for (int t = 0; t < TT; ++t) {
    float ss = 0.0f;
    if (t < nt)
      for (int64_t j = threadIdx.x; j < r; j += kThreads) {
        const float z = a.state[(row0 + t) * r + j];
        buf_b[t * r + j] = z;
        ss += z * z;
      }
    else
      for (int64_t j = threadIdx.x; j < r; j += kThreads) buf_b[t * r + j] = 0.0f;
    red[t * kThreads + threadIdx.x] = ss;
  }
  block_sum(red, TT, scal);
  for (int t = 0; t < TT; ++t) {
    const float inv = 1.0f / sqrtf(scal[t] / static_cast<float>(r) + a.epsilon);
    for (int64_t j = threadIdx.x; j < r; j += kThreads) buf_a[t * r + j] = (buf_b[t * r + j] * inv) * a.norm_w[j];
  }
  __syncthreads();
  dense_gelu<TT>(buf_a, a.fc1_w, a.fc1_b, buf_b, r, nt);
  dense_gelu<TT>(buf_b, a.fc2_w, a.fc2_b, buf_a, r, nt);

  // out_proj: thread (slice, class) sums k = slice, slice + slices, ...
  for (int idx = threadIdx.x; idx < slices * c; idx += kThreads) {
    const int s = idx / static_cast<int>(c), q = idx % static_cast<int>(c);
    float acc[TT];
#pragma unroll
    for (int t = 0; t < TT; ++t) acc[t] = 0.0f;
    for (int64_t k = s; k < r; k += slices) {
      const float wv = a.out_w[k * c + q];
#pragma unroll
      for (int t = 0; t < TT; ++t) acc[t] += buf_a[t * r + k] * wv;
    }
#pragma unroll
    for (int t = 0; t < TT; ++t) part[(t * slices + s) * c + q] = acc[t];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < TT * c; idx += kThreads) {
    const int t = idx / static_cast<int>(c), q = idx % static_cast<int>(c);
    float s = 0.0f;
    for (int k = 0; k < slices; ++k) s += part[(t * slices + k) * c + q];
    logits[t * c + q] = s;
  }
  __syncthreads();
  // softmax + biased argmax (first index wins ties), one thread per token
  if (threadIdx.x < nt) {
    float* l = logits + threadIdx.x * c;
    float mx = l[0];
    for (int64_t q = 1; q < c; ++q) mx = fmaxf(mx, l[q]);
    float sum = 0.0f;
    for (int64_t q = 0; q < c; ++q) {
      l[q] = expf(l[q] - mx);
      sum += l[q];
    }
    int best = 0;
    float best_v = 0.0f;
    for (int64_t q = 0; q < c; ++q) {
      l[q] = l[q] / sum;
      const float v = l[q] + a.balancing_bias[q];
      if (q == 0 || v > best_v) { best = static_cast<int>(q); best_v = v; }
    }
    best_s[threadIdx.x] = best;
    scal[threadIdx.x] = best < e ? l[best] : 0.0f;
  }
  __syncthreads();
  for (int64_t idx = threadIdx.x; idx < static_cast<int64_t>(nt) * e; idx += kThreads) {
    const int t = static_cast<int>(idx / e);
    const int64_t q = idx % e;
    const int best = best_s[t];
    const int64_t expert = best < e ? best : 0;
    const float sel = q == expert ? 1.0f : 0.0f;
    a.select[(row0 + t) * e + q] = sel;
    a.weight[(row0 + t) * e + q] = sel * scal[t];
  }
}

thread_local std::string g_error;

const char* fail(const std::string& what) {
  g_error = "ai.zaya::Router (" ZAYA_GPU_NAME "): " + what;
  return g_error.c_str();
}

template <int TT>
const char* launch_mlp(const RouterArgs& a, gpuStream_t stream) {
  const int slices = a.c >= kThreads ? 1 : kThreads / static_cast<int>(a.c);
  const size_t shmem = sizeof(float) * (TT * (2 * a.r + kThreads + slices * a.c + a.c));
  if (shmem > 48 * 1024) {
    if (gpuFuncSetAttribute(router_mlp_kernel<TT>, gpuFuncAttributeMaxDynamicSharedMemorySize,
                            static_cast<int>(shmem)) != gpuSuccess)
      return fail("router hidden size " + std::to_string(a.r) + " needs " + std::to_string(shmem) +
                  " bytes of shared memory, more than this GPU gives a block");
  }
  const unsigned blocks = static_cast<unsigned>((a.n + TT - 1) / TT);
  router_mlp_kernel<TT><<<blocks, kThreads, shmem, stream>>>(a, slices);
  return nullptr;
}

}  // namespace

const char* router_gpu(const RouterArgs& a, void* stream_ptr) {
  if (a.n == 0) return nullptr;
  gpuStream_t stream = static_cast<gpuStream_t>(stream_ptr);
  const int64_t col_blocks = (a.r + kCols - 1) / kCols;
  if (col_blocks > 65535) return fail("router hidden size " + std::to_string(a.r) + " is too large");
  // grid: x = token groups (up to 2^31-1), y = column groups
  const unsigned cy = static_cast<unsigned>(col_blocks);
  if (a.n == 1) {
    down_proj_kernel<1><<<dim3(1, cy), kThreads, 0, stream>>>(a);
  } else if (a.n < 64) {
    down_proj_kernel<4><<<dim3(static_cast<unsigned>((a.n + 3) / 4), cy), kThreads, 0, stream>>>(a);
  } else {
    down_proj_kernel<8><<<dim3(static_cast<unsigned>((a.n + 7) / 8), cy), kThreads, 0, stream>>>(a);
  }
  gpuError_t err = gpuGetLastError();
  if (err != gpuSuccess) return fail(std::string("down_proj launch failed: ") + gpuGetErrorString(err));
  const char* msg = a.n == 1 ? launch_mlp<1>(a, stream) : launch_mlp<4>(a, stream);
  if (msg) return msg;
  err = gpuGetLastError();
  if (err != gpuSuccess) return fail(std::string("router_mlp launch failed: ") + gpuGetErrorString(err));
  return nullptr;
}

}  // namespace zaya
