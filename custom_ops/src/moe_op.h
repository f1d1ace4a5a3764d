// Registration hook of ai.zaya::ExpertMoE (moe_op.cc) for custom_ops.cc.
#pragma once

struct OrtCustomOp;

namespace zaya {
constexpr const char* kExpertMoe = "ExpertMoE";
const OrtCustomOp* expert_moe_cpu_op();  // the CPU op, alive for the library's lifetime
}  // namespace zaya
