// What the ai.zaya ops' ONNX Runtime glue (custom_ops.cc, attention_op.cc, moe_op.cc) shares:
// a shape in an error message, an op's inputs with their shapes, and the kernel context's thread
// pool as a zaya::ParallelFor. Include after onnxruntime_cxx_api.h (ORT_API_MANUAL_INIT).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "router.h"  // ParallelFor

namespace zaya {

// "[2, 3, 4]"
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// The first `count` inputs and their shapes.
inline void read_inputs(Ort::KernelContext& ctx, size_t count, std::vector<Ort::ConstValue>& in,
                        std::vector<std::vector<int64_t>>& shapes) {
  for (size_t i = 0; i < count; ++i) {
    in.push_back(ctx.GetInput(i));
    shapes.push_back(in.back().GetTensorTypeAndShapeInfo().GetShape());
  }
}

// onnxruntime's intra-op thread pool behind the kernels' ParallelFor; valid while ctx lives.
inline ParallelFor ort_parallel_for(Ort::KernelContext& ctx) {
  return [&ctx](size_t total, const std::function<void(size_t)>& fn) {
    ctx.ParallelFor([](void* data, size_t i) { (*static_cast<const std::function<void(size_t)>*>(data))(i); }, total,
                    0, const_cast<std::function<void(size_t)>*>(&fn));
  };
}

}  // namespace zaya
