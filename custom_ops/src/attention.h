// ZAYA's cached attention (ai.zaya::CachedAttention) as plain compute functions, free of ONNX
// Runtime types. The operator contract lives in export/attention_op.py; in short:
//
//   q [B,S,Hq*D], k/v [B,S,Hkv*D] (fp32, after RoPE), past key/value [B,Hkv,C,D] (fp32 or fp16),
//   attention_mask [B,T] (1 = real token; all rows share columns, the S new tokens sit in
//   columns [T-S, T)).  present = past with k/v written into columns [T-S, T) -- in place when
//   present and past are one buffer (the runtime binds them so), else past's first T-S columns
//   are copied first (and present's columns from T on are left undefined).  Query i (column c = T-S+i) of head h sees key j of kv head h/(Hq/Hkv) iff
//   j <= c, mask[j] == 1 and, with a window w > 0, j > c - w.  out = softmax(scale*q.k) . v;
//   a query that sees no key gets zeros.
//
// Each kv head's keys and values are read once per step for all the query heads that share it
// (onnxruntime's GroupQueryAttention reads them once per query head), in key tiles with an
// online softmax, so decode at long context costs about one read of the cache.
#pragma once

#include <cstdint>

#include "router.h"  // ParallelFor

namespace zaya {

struct AttentionArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const void* past_key = nullptr;    // [B, Hkv, past_cap, D]
  const void* past_value = nullptr;
  const int64_t* mask = nullptr;     // [B, T]
  void* present_key = nullptr;       // [B, Hkv, cap, D]; may be past_key
  void* present_value = nullptr;
  float* out = nullptr;              // [B, S, Hq*D]
  int64_t batch = 0, seq = 0, total = 0, past_cap = 0, cap = 0;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  int64_t window = -1;               // keys a query sees, itself included; <= 0: no window
  bool half = false;                 // cache elements are IEEE fp16 (else fp32)
};

// CPU kernel; `pfor` may be null (single thread). head_dim must be a multiple of 8.
void attention_cpu(const AttentionArgs& a, const ParallelFor& pfor);

// The kernel this CPU runs ("avx512", "avx2" or "generic"; ZAYA_EDGE_CPU_ISA picks a lower one).
const char* attention_isa();

}  // namespace zaya
