// ONNX Runtime glue of ai.zaya::ExpertMoE (CPU): attributes, shape checks against the contract
// (export/moe_op.py), the weights' strides, and two C functions zaya_edge/custom_ops.py reads.
//
// The weight inputs are the artifact's initializers, read in place: the kernel keeps no copy.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <atomic>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "moe.h"
#include "moe_op.h"
#include "op_glue.h"

#if defined(_WIN32)
#define ZAYA_MOE_EXPORT extern "C" __declspec(dllexport)
#else
#define ZAYA_MOE_EXPORT extern "C" __attribute__((visibility("default")))
#endif

namespace {

constexpr size_t kInputs = 7;
enum Input { X, SELECT, WEIGHT, FC1, FC1_SCALES, FC2, FC2_SCALES };
const char* const kNames[kInputs] = {"x", "expert_select", "expert_weight", "fc1", "fc1_scales", "fc2", "fc2_scales"};

std::atomic<int64_t> g_kernels{0}, g_computes{0};

using zaya::shape_str;

[[noreturn]] void bad(const std::string& msg) { throw Ort::Exception("ai.zaya::ExpertMoE: " + msg, ORT_INVALID_ARGUMENT); }

struct Config {
  zaya::MoeAct act = zaya::MoeAct::kSwiglu;
  int64_t block = 32;
  bool int8 = true;
};

Config read_config(const OrtKernelInfo* info) {
  Ort::ConstKernelInfo ki(info);
  Config c;
  const std::string act = ki.GetAttribute<std::string>("activation");
  if (act == "swiglu") c.act = zaya::MoeAct::kSwiglu;
  else if (act == "gelu") c.act = zaya::MoeAct::kGelu;
  else if (act == "gelu_tanh") c.act = zaya::MoeAct::kGeluTanh;
  else if (act == "relu") c.act = zaya::MoeAct::kRelu;
  else if (act == "relu2") c.act = zaya::MoeAct::kRelu2;
  else bad("unknown activation '" + act + "' (swiglu, gelu, gelu_tanh, relu, relu2)");
  c.block = ki.GetAttribute<int64_t>("block_size");
  if (c.block < 16 || c.block > 256 || (c.block & (c.block - 1))) bad("block_size must be 16, 32, 64, 128 or 256");
  c.int8 = ki.GetAttribute<int64_t>("accuracy_level") == 4;  // as QMoE and MatMulNBits: 4 = int8 activations
  return c;
}

// Input shapes against the contract; fills the sizes and strides of `a`.
void bind(Ort::KernelContext& ctx, const Config& cfg, zaya::MoeArgs& a) {
  if (ctx.GetInputCount() != kInputs) bad("expects 7 inputs, got " + std::to_string(ctx.GetInputCount()));
  std::vector<Ort::ConstValue> in;
  std::vector<std::vector<int64_t>> s;
  zaya::read_inputs(ctx, kInputs, in, s);
  if (s[X].size() != 2) bad("x must be [N, H], got " + shape_str(s[X]));
  const int64_t n = s[X][0], h = s[X][1], bs = cfg.block;
  if (s[SELECT].size() != 2 || s[SELECT][0] != n || s[SELECT][1] < 1) bad("expert_select must be [N, E], got " + shape_str(s[SELECT]));
  const int64_t e = s[SELECT][1];
  if (s[WEIGHT] != s[SELECT]) bad("expert_weight must be " + shape_str(s[SELECT]) + ", got " + shape_str(s[WEIGHT]));
  if (h % bs) bad("the hidden size " + std::to_string(h) + " is not whole blocks of " + std::to_string(bs));
  const bool swiglu = cfg.act == zaya::MoeAct::kSwiglu;
  const int64_t rows1 = swiglu ? (s[FC1].size() == 3 ? s[FC1][1] : -1) : (s[FC1].size() == 3 ? s[FC1][0] / e : -1);
  const int64_t inter = rows1 / 2;
  if (inter < 1 || inter % bs) bad("fc1 must hold 2·I rows per expert with I whole blocks of " + std::to_string(bs) + ", got " + shape_str(s[FC1]));
  auto expect = [&](int i, std::vector<int64_t> want) {
    if (s[i] != want) bad(std::string(kNames[i]) + " must be " + shape_str(want) + ", got " + shape_str(s[i]));
  };
  if (swiglu) {  // QMoE's layout: [E, rows, K/2] and [E, rows, K/block]
    expect(FC1, {e, 2 * inter, h / 2});
    expect(FC1_SCALES, {e, 2 * inter, h / bs});
    expect(FC2, {e, h, inter / 2});
    expect(FC2_SCALES, {e, h, inter / bs});
  } else {  // MatMulNBits' layout of the dense graph: fc1 [E·2I, H/block, block/2], fc2 [H, E·I/block, block/2]
    expect(FC1, {e * 2 * inter, h / bs, bs / 2});
    expect(FC1_SCALES, {e * 2 * inter, h / bs});
    expect(FC2, {h, e * inter / bs, bs / 2});
    expect(FC2_SCALES, {h, e * inter / bs});
  }
  a.x = in[X].GetTensorData<float>();
  a.select = in[SELECT].GetTensorData<float>();
  a.weight = in[WEIGHT].GetTensorData<float>();
  a.n = n, a.h = h, a.e = e, a.inter = inter, a.block = bs, a.act = cfg.act, a.int8 = cfg.int8;
  a.fc1 = {in[FC1].GetTensorData<uint8_t>(), reinterpret_cast<const uint16_t*>(in[FC1_SCALES].GetTensorRawData()),
           2 * inter, h, 2 * inter * h / 2, h / 2, 2 * inter * (h / bs), h / bs};
  a.fc2 = {in[FC2].GetTensorData<uint8_t>(), reinterpret_cast<const uint16_t*>(in[FC2_SCALES].GetTensorRawData()),
           h, inter, h * inter / 2, inter / 2, h * (inter / bs), inter / bs};
  if (!swiglu) {  // expert e's fc2 columns are a slice of every row
    a.fc2.expert_stride = inter / 2, a.fc2.row_stride = e * inter / 2;
    a.fc2.scale_expert_stride = inter / bs, a.fc2.scale_row_stride = e * inter / bs;
  }
  a.y = ctx.GetOutput(0, {n, h}).GetTensorMutableData<float>();
}

struct MoeKernel {
  Config cfg;

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    try {
      Ort::KernelContext ctx(raw);
      zaya::MoeArgs a;
      bind(ctx, cfg, a);
      g_computes.fetch_add(1, std::memory_order_relaxed);
      const zaya::ParallelFor pfor = zaya::ort_parallel_for(ctx);
      zaya::moe_cpu(a, pfor);
      return nullptr;
    } catch (const Ort::Exception& e) {
      return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, (std::string("ai.zaya::ExpertMoE: ") + e.what()).c_str());
    } catch (...) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, "ai.zaya::ExpertMoE: unknown error");
    }
  }
};

struct MoeOp : Ort::CustomOpBase<MoeOp, MoeKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept {
    try {
      *kernel = new MoeKernel{read_config(info)};
      g_kernels.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    } catch (const Ort::Exception& e) {
      return api.CreateStatus(e.GetOrtErrorCode(), e.what());
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, (std::string("ai.zaya::ExpertMoE: ") + e.what()).c_str());
    }
  }
  const char* GetName() const { return zaya::kExpertMoe; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return kInputs; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    if (i == FC1 || i == FC2) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    if (i == FC1_SCALES || i == FC2_SCALES) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace

namespace zaya {
const OrtCustomOp* expert_moe_cpu_op() {
  static MoeOp op;
  return &op;
}
}  // namespace zaya

/// ExpertMoE kernels created and Compute calls so far in this process: out[2] = {kernels, computes}.
ZAYA_MOE_EXPORT void ZayaCustomOpsMoeCounters(int64_t* out) {
  out[0] = g_kernels.load(std::memory_order_relaxed);
  out[1] = g_computes.load(std::memory_order_relaxed);
}

/// The int8 kernel ExpertMoE runs on this CPU ("avx512vnni", "avxvnni", "avx2" or "generic").
ZAYA_MOE_EXPORT const char* ZayaCustomOpsMoeIsa(void) { return zaya::moe_isa(); }
