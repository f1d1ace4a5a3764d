// The ZAYA experts (ai.zaya::ExpertMoE) as plain compute functions, free of ONNX Runtime types.
//
// The operator contract lives in export/moe_op.py. Per token n, the chosen route(s) r = (n, e, w):
//   h   = act(x[n] · fc1_e^T)                       fc1_e [2I, K1] int4 blocks, fp16 scales
//   y[n] = Σ_r  w · (h · fc2_e^T)                    (swiglu: QMoE's semantics)
//   y[n] = Σ_r  (w · h) · fc2_e^T                    (dense activations: the MatMulNBits graph's)
// with every matmul computed as onnxruntime computes it at the graph's accuracy_level:
//   4: the activation row quantized to int8 per block (scale = amax/127, q = rint(a·127/amax)),
//      int32 block dot products, fp32 block sums;  0: fp32 activations, dequantized weights.
// Weights are read where they lie (the artifact's initializers); nothing is repacked at load.
#pragma once

#include <cstdint>

#include "router.h"  // ParallelFor

namespace zaya {

enum class MoeAct { kSwiglu, kGelu, kGeluTanh, kRelu, kRelu2 };

// One int4 matrix per expert: row r of expert e starts at byte e*expert_stride + r*row_stride,
// its fp16 scales at element e*scale_expert_stride + r*scale_row_stride.
struct QWeights {
  const uint8_t* data = nullptr;
  const uint16_t* scales = nullptr;  // fp16 bits
  int64_t rows = 0, k = 0;           // rows x K per expert
  int64_t expert_stride = 0, row_stride = 0;
  int64_t scale_expert_stride = 0, scale_row_stride = 0;
};

struct MoeArgs {
  const float* x = nullptr;       // [N, H]
  const float* select = nullptr;  // [N, E] (swiglu: top-1 is its argmax, as QMoE's router_probs)
  const float* weight = nullptr;  // [N, E]
  float* y = nullptr;             // [N, H]
  int64_t n = 0, h = 0, e = 0, inter = 0, block = 32;
  MoeAct act = MoeAct::kSwiglu;
  bool int8 = true;               // accuracy_level 4 (else 0: fp32 activations)
  QWeights fc1, fc2;              // fc1: 2I rows x H (swiglu: gate/up interleaved, else gate rows then up)
};

void moe_cpu(const MoeArgs& a, const ParallelFor& pfor);

// Name of the int8 kernel this CPU runs ("avx512vnni", "avxvnni", "avx2", "generic"):
// ZAYA_EDGE_CPU_ISA=avxvnni|avx2|generic picks a lower one.
const char* moe_isa();

}  // namespace zaya
