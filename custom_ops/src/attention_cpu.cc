// CPU kernel of ai.zaya::CachedAttention (contract: attention.h).
//
//   work item = (row b, kv head g, block of <= 4 query rows, key split)   [decode: here; prompts of
//               8+ tokens take the blocked matmul path of attention_prefill.cc, same items]
//     for each tile of 32 keys:   K tile -> fp32 scratch (read once)  -> scores of the G*rows
//                                 query heads sharing g; online softmax; V tile read once -> acc
//   then per (b, g, block): the key splits' (max, sum, acc) are merged and normalised.
//
// Keys are split only when there are too few items to keep the threads busy (decode at batch
// 1: B*Hkv = 2 items), so a long-context decode step still streams the cache on every thread.
// One templated body is compiled for AVX-512, AVX2+F16C and the baseline, picked at run time
// (ZAYA_EDGE_CPU_ISA=avx2|generic forces a lower one, as for the Router's kernels).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attention_kernels.h"

namespace zaya {
namespace {

// The 8 horizontal sums of a[0..8) as one vector (a pairwise shuffle tree).
ZAYA_INLINE v8 reduce8(const v8* a) {
  v8 s[4], u[2];
  for (int i = 0; i < 4; ++i)
    s[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  for (int i = 0; i < 2; ++i)
    u[i] = __builtin_shufflevector(s[2 * i], s[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(s[2 * i], s[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(u[0], u[1], 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(u[0], u[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

// Scores of every query head against the tile's tn keys (kt: fp32, row-major), 8 keys at a
// time; keys a row may not see get -inf.
ZAYA_INLINE void scores_tile(const AttentionArgs& a, const Item& it, const float* qs, int64_t nq, int64_t t0,
                             int64_t tn, const float* kt, float* s) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads;
  const int64_t* mask = a.mask + it.b * a.total;
  for (int64_t n = 0; n < nq; ++n) {
    const float* qn = qs + n * D;
    for (int64_t j8 = 0; j8 < tn; j8 += 8) {
      v8 acc[8];
      const float* rows[8];  // past the tile's end: its last key again (scores unused, reads in bounds)
      for (int k = 0; k < 8; ++k) acc[k] = splat<v8>(0.0f), rows[k] = kt + std::min(j8 + k, tn - 1) * D;
      for (int64_t d = 0; d < D; d += 8) {
        const v8 qv = load8(qn + d);
        for (int k = 0; k < 8; ++k) acc[k] += qv * load8(rows[k] + d);
      }
      vstore(s + n * kTile + j8, reduce8(acc));
    }
    int64_t lo, hi;
    row_range(a, it.r0 + n / G, &lo, &hi);
    for (int64_t jj = 0; jj < tn; ++jj) {
      const int64_t j = t0 + jj;
      if (j < lo || j > hi || !mask[j]) s[n * kTile + jj] = kNegInf;
    }
  }
}

// acc[n] += sum over the tile's keys of weight[n][jj] * v[jj], one 8-wide slice of D at a time
// for NN heads at once, so their accumulator slices stay in registers across the tile.
template <int NN, typename T>
ZAYA_INLINE void values_heads(const T* values, int64_t tn, int64_t D, const float* s, float* parts) {
  for (int64_t d = 0; d < D; d += 8) {
    v8 acc[NN];
    for (int n = 0; n < NN; ++n) acc[n] = load8(parts + n * (D + 2) + 2 + d);
    for (int64_t jj = 0; jj < tn; ++jj) {
      const v8 vv = load8(values + jj * D + d);
      for (int n = 0; n < NN; ++n) acc[n] += vv * s[n * kTile + jj];
    }
    for (int n = 0; n < NN; ++n) vstore(parts + n * (D + 2) + 2 + d, acc[n]);
  }
}

template <typename T>
ZAYA_INLINE void values_tile(const T* values, int64_t tn, int64_t D, int64_t nq, const float* s, float* parts) {
  int64_t n = 0;
  for (; n + 4 <= nq; n += 4) values_heads<4>(values, tn, D, s + n * kTile, parts + n * (D + 2));
  for (; n < nq; ++n) values_heads<1>(values, tn, D, s + n * kTile, parts + n * (D + 2));
}

// Online softmax over one tile: rescales each head's state and turns its scores into weights.
ZAYA_INLINE void softmax_tile(int64_t nq, int64_t tn, int64_t D, float* s, float* parts) {
  for (int64_t n = 0; n < nq; ++n) {
    float* sn = s + n * kTile;
    float mt = kNegInf;
    for (int64_t jj = 0; jj < tn; ++jj) mt = std::max(mt, sn[jj]);
    Part st{parts + n * (D + 2)};
    if (mt == kNegInf) {
      for (int64_t jj = 0; jj < tn; ++jj) sn[jj] = 0.0f;
      continue;
    }
    const float m_new = std::max(st.m(), mt);
    if (st.m() != m_new) {
      const float corr = st.m() == kNegInf ? 0.0f : std::exp(st.m() - m_new);
      st.l() *= corr;
      float* acc = st.acc();
      for (int64_t d = 0; d < D; d += 8) store8(acc + d, load8(acc + d) * corr);
      st.m() = m_new;
    }
    alignas(32) float tile[kTile];
    for (int64_t jj = 0; jj < kTile; ++jj) tile[jj] = jj < tn ? sn[jj] - m_new : kNegInf;
    float sum = 0.0f;
    for (int64_t jj = 0; jj < kTile; jj += 8) {
      const v8 y = vload<v8>(tile + jj);
      const v8 p = y == kNegInf ? splat<v8>(0.0f) : exp_le0(y);  // masked keys weigh exactly 0
      vstore(sn + jj, p);
      sum += hsum(p);
    }
    st.l() += sum;
  }
}

template <typename T>
ZAYA_INLINE void attend_item(const AttentionArgs& a, const Item& it, float* parts, float* scratch, Widen widen) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, nq = (it.r1 - it.r0) * G;
  float* qs = scratch;                 // [nq, D] scaled queries
  float* kbuf = qs + nq * D;           // [kTile, D] fp32 keys of the tile (fp16 cache)
  float* vbuf = kbuf + kTile * D;      // [kTile, D] fp32 values of the tile (fp16 cache)
  float* s = vbuf + kTile * D;         // [nq, kTile] scores, then weights
  for (int64_t n = 0; n < nq; ++n) {
    const float* src = a.q + ((it.b * a.seq + it.r0 + n / G) * a.heads + it.g * G + n % G) * D;
    for (int64_t d = 0; d < D; ++d) qs[n * D + d] = src[d] * a.scale;
    Part st{parts + n * (D + 2)};
    st.m() = kNegInf, st.l() = 0.0f;
    std::fill(st.acc(), st.acc() + D, 0.0f);
  }
  const T* keys = static_cast<const T*>(a.present_key) + (it.b * a.kv_heads + it.g) * a.cap * D;
  const T* values = static_cast<const T*>(a.present_value) + (it.b * a.kv_heads + it.g) * a.cap * D;
  for (int64_t t0 = it.j0; t0 < it.j1; t0 += kTile) {
    const int64_t tn = std::min(kTile, it.j1 - t0);
    const float* kt = as_f32(keys + t0 * D, kbuf, tn * D, widen);
    scores_tile(a, it, qs, nq, t0, tn, kt, s);
    softmax_tile(nq, tn, D, s, parts);
    values_tile(as_f32(values + t0 * D, vbuf, tn * D, widen), tn, D, nq, s, parts);
  }
}

#define ZAYA_ATTEND_CLONE(name, target, widen)                                              \
  target void name##_f32(const AttentionArgs& a, const Item& it, float* p, float* s) {       \
    attend_item<float>(a, it, p, s, widen);                                                  \
  }                                                                                          \
  target void name##_f16(const AttentionArgs& a, const Item& it, float* p, float* s) {       \
    attend_item<_Float16>(a, it, p, s, widen);                                               \
  }
ZAYA_ATTEND_CLONE(attend_generic, , widen_generic)
#if defined(ZAYA_X86_DISPATCH)
ZAYA_ATTEND_CLONE(attend_avx2, ZAYA_TARGET_V3, widen_f16c)
ZAYA_ATTEND_CLONE(attend_avx512, ZAYA_TARGET_V4, widen_f16c)
#endif

struct Kernel {
  const char* isa;
  ItemFn f32, f16;
};

ZAYA_NOINLINE const Kernel& kernel() {
  static const Kernel chosen = [] {
    const char* env = std::getenv("ZAYA_EDGE_CPU_ISA");
    const std::string want = env ? env : "";
#if defined(ZAYA_X86_DISPATCH)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx512 && avx2 && want != "avx2" && want != "generic") return Kernel{"avx512", attend_avx512_f32, attend_avx512_f16};
    if (avx2 && want != "generic") return Kernel{"avx2", attend_avx2_f32, attend_avx2_f16};
#endif
    return Kernel{"generic", attend_generic_f32, attend_generic_f16};
  }();
  return chosen;
}

// present = past (unless one buffer) with the new keys/values in columns [T-S, T).
template <typename T>
void write_new(const AttentionArgs& a, int64_t b, int64_t g) {
  const int64_t D = a.head_dim, start = a.total - a.seq;
  for (int pass = 0; pass < 2; ++pass) {
    const T* past = static_cast<const T*>(pass ? a.past_value : a.past_key) + (b * a.kv_heads + g) * a.past_cap * D;
    T* present = static_cast<T*>(pass ? a.present_value : a.present_key) + (b * a.kv_heads + g) * a.cap * D;
    const float* src = pass ? a.v : a.k;
    if (static_cast<const void*>(past) != static_cast<const void*>(present) && start > 0)
      std::memcpy(present, past, static_cast<size_t>(start * D) * sizeof(T));
    for (int64_t i = 0; i < a.seq; ++i) {
      const float* row = src + ((b * a.seq + i) * a.kv_heads + g) * D;
      for (int64_t d = 0; d < D; d += 8) store8(present + (start + i) * D + d, load8(row + d));
    }
  }
}

// out rows of one (b, g, block): the splits' states merged and normalised.
void merge_block(const AttentionArgs& a, int64_t b, int64_t g, int64_t r0, int64_t r1, const float* parts,
                 int64_t splits, int64_t stride) {
  const int64_t D = a.head_dim, G = a.heads / a.kv_heads, nq = (r1 - r0) * G;
  for (int64_t n = 0; n < nq; ++n) {
    float m = kNegInf;
    for (int64_t sp = 0; sp < splits; ++sp) m = std::max(m, parts[sp * stride + n * (D + 2)]);
    float* out = a.out + ((b * a.seq + r0 + n / G) * a.heads + g * G + n % G) * D;
    std::fill(out, out + D, 0.0f);
    if (m == kNegInf) continue;  // sees no key
    float l = 0.0f;
    for (int64_t sp = 0; sp < splits; ++sp) {
      const float* p = parts + sp * stride + n * (D + 2);
      if (p[0] == kNegInf) continue;
      const float w = std::exp(p[0] - m);
      l += p[1] * w;
      for (int64_t d = 0; d < D; ++d) out[d] += p[2 + d] * w;
    }
    for (int64_t d = 0; d < D; ++d) out[d] /= l;
  }
}

template <typename Fn>
void run(size_t n, const ParallelFor& pfor, Fn fn) {
  if (pfor && n > 1) {
    pfor(n, [&](size_t i) { fn(static_cast<int64_t>(i)); });
  } else {
    for (size_t i = 0; i < n; ++i) fn(static_cast<int64_t>(i));
  }
}

}  // namespace

const char* attention_isa() { return kernel().isa; }

void attention_cpu(const AttentionArgs& a, const ParallelFor& pfor) {
  const int64_t B = a.batch, H = a.kv_heads, D = a.head_dim, G = a.heads / a.kv_heads;
  if (B == 0 || a.seq == 0) return;
  run(static_cast<size_t>(B * H), pfor, [&](int64_t i) {
    if (a.half) write_new<_Float16>(a, i / H, i % H); else write_new<float>(a, i / H, i % H);
  });
  // a prompt's rows go through the blocked matmul path, a decode step's through the streaming one
  const bool prefill = a.seq >= kPrefillFrom;
  const int64_t rows = prefill ? kPrefillRows : kRowBlock;
  const PrefillKernels pk = prefill_kernels(kernel().isa);
  const ItemFn fn = prefill ? (a.half ? pk.f16 : pk.f32) : (a.half ? kernel().f16 : kernel().f32);
  const int64_t scratch_floats = prefill ? prefill_scratch(G, D) : (rows * G + 2 * kTile) * D + rows * G * kTile;
  const int64_t blocks = (a.seq + rows - 1) / rows, groups = B * H * blocks;
  int64_t lo_all, hi_all, unused;
  row_range(a, 0, &lo_all, &unused);
  row_range(a, a.seq - 1, &unused, &hi_all);
  const int64_t span = hi_all + 1 - lo_all;
  const int64_t splits = groups >= kWantItems ? 1 : std::max<int64_t>(1, std::min((kWantItems + groups - 1) / groups, span / kSplitMin));
  const int64_t chunk = (span + splits - 1) / splits, stride = rows * G * (D + 2);
  thread_local std::vector<float> parts_buf;
  parts_buf.resize(static_cast<size_t>(groups * splits * stride));
  float* parts = parts_buf.data();
  run(static_cast<size_t>(groups * splits), pfor, [&](int64_t idx) {
    const int64_t sp = idx % splits, grp = idx / splits, blk = grp % blocks, bg = grp / blocks;
    Item it{bg / H, bg % H, blk * rows, std::min(a.seq, (blk + 1) * rows), 0, 0};
    int64_t lo, hi;
    row_range(a, it.r0, &lo, &unused);
    row_range(a, it.r1 - 1, &unused, &hi);
    it.j0 = std::max(lo, lo_all + sp * chunk);
    it.j1 = std::min(hi + 1, lo_all + (sp + 1) * chunk);
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(scratch_floats));
    float* p = parts + idx * stride;
    if (it.j0 >= it.j1) {  // nothing of this split is visible to the block
      for (int64_t n = 0; n < (it.r1 - it.r0) * G; ++n) p[n * (D + 2)] = kNegInf;
      return;
    }
    fn(a, it, p, scratch.data());
  });
  run(static_cast<size_t>(groups), pfor, [&](int64_t grp) {
    const int64_t blk = grp % blocks, bg = grp / blocks;
    merge_block(a, bg / H, bg % H, blk * rows, std::min(a.seq, (blk + 1) * rows), parts + grp * splits * stride,
                splits, stride);
  });
}

}  // namespace zaya
