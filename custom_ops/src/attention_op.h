// The ai.zaya::CachedAttention operator definition (attention_op.cc) for RegisterCustomOps.
#pragma once

#include <cstdint>

struct OrtCustomOp;

namespace zaya {

// The CPU execution provider's CachedAttention op for an fp16 or an fp32 cache (static instances).
const OrtCustomOp* attention_cpu_op(bool half);

// Kernels created and Compute calls so far (what ZayaCustomOpsOpCounters reports).
void attention_counters(int64_t* kernels, int64_t* computes);

}  // namespace zaya
