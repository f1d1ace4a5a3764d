// ONNX Runtime glue of ai.zaya::CachedAttention (CPU): shape checks against the contract
// (attention.h, export/attention_op.py), attributes, and the call into attention_cpu.
//
// One op definition per cache type (fp32, fp16), registered under the same name: onnxruntime
// groups them into one schema and picks the kernel by the graph's types. Everything else is
// fp32 except the int64 mask.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <atomic>
#include <string>
#include <vector>

#include "attention.h"
#include "attention_op.h"
#include "op_glue.h"

namespace {

constexpr const char* kName = "CachedAttention";
enum Input { Q, K, V, PAST_KEY, PAST_VALUE, MASK, kInputs };
std::atomic<int64_t> g_kernels{0}, g_computes{0};

[[noreturn]] void bad(const std::string& msg) {
  throw Ort::Exception(std::string("ai.zaya::CachedAttention: ") + msg, ORT_INVALID_ARGUMENT);
}

struct Attrs {
  int64_t heads = 0, kv_heads = 0, window = -1;
  float scale = 0.0f;
};

int64_t attr_int(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t v = fallback;
  if (OrtStatus* st = api.KernelInfoGetAttribute_int64(info, name, &v)) { api.ReleaseStatus(st); v = fallback; }
  return v;
}

zaya::AttentionArgs bind(Ort::KernelContext& ctx, const Attrs& at) {
  if (ctx.GetInputCount() != kInputs) bad("expects 6 inputs, got " + std::to_string(ctx.GetInputCount()));
  std::vector<Ort::ConstValue> in;
  std::vector<std::vector<int64_t>> s;
  zaya::read_inputs(ctx, kInputs, in, s);
  zaya::AttentionArgs a;
  a.heads = at.heads, a.kv_heads = at.kv_heads, a.window = at.window;
  if (a.heads < 1 || a.kv_heads < 1 || a.heads % a.kv_heads)
    bad("num_heads must be a positive multiple of kv_num_heads >= 1");
  if (s[Q].size() != 3 || s[Q][2] % a.heads) bad("q must be [B, S, num_heads*D], got " + zaya::shape_str(s[Q]));
  a.batch = s[Q][0], a.seq = s[Q][1], a.head_dim = s[Q][2] / a.heads;
  const int64_t D = a.head_dim, H = a.kv_heads;
  if (D % 8) bad("head size must be a multiple of 8, got " + std::to_string(D));
  a.scale = at.scale != 0.0f ? at.scale : 1.0f / std::sqrt(static_cast<float>(D));
  const std::vector<int64_t> kv = {a.batch, a.seq, H * D};
  if (s[K] != kv || s[V] != kv) bad("k and v must be " + zaya::shape_str(kv) + ", got " + zaya::shape_str(s[K]) + " and " + zaya::shape_str(s[V]));
  if (s[MASK].size() != 2 || s[MASK][0] != a.batch || s[MASK][1] < a.seq) bad("attention_mask must be [B, T >= S], got " + zaya::shape_str(s[MASK]));
  a.total = s[MASK][1];
  const auto& pk = s[PAST_KEY];
  if (pk.size() != 4 || pk[0] != a.batch || pk[1] != H || pk[3] != D || pk[2] < a.total - a.seq || s[PAST_VALUE] != pk)
    bad("past key/value must be [B, kv_heads, >= T-S, D] alike, got " + zaya::shape_str(pk) + " and " + zaya::shape_str(s[PAST_VALUE]));
  const auto type = in[PAST_KEY].GetTensorTypeAndShapeInfo().GetElementType();
  if (type != in[PAST_VALUE].GetTensorTypeAndShapeInfo().GetElementType() ||
      (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16))
    bad("past key/value must both be float or both float16");
  a.half = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  a.past_cap = pk[2];
  a.cap = std::max(a.past_cap, a.total);
  a.q = in[Q].GetTensorData<float>(), a.k = in[K].GetTensorData<float>(), a.v = in[V].GetTensorData<float>();
  a.past_key = in[PAST_KEY].GetTensorRawData(), a.past_value = in[PAST_VALUE].GetTensorRawData();
  a.mask = in[MASK].GetTensorData<int64_t>();
  a.out = ctx.GetOutput(0, {a.batch, a.seq, a.heads * D}).GetTensorMutableData<float>();
  a.present_key = ctx.GetOutput(1, {a.batch, H, a.cap, D}).GetTensorMutableRawData();
  a.present_value = ctx.GetOutput(2, {a.batch, H, a.cap, D}).GetTensorMutableRawData();
  return a;
}

struct Kernel {
  Attrs attrs;

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    try {
      Ort::KernelContext ctx(raw);
      const zaya::AttentionArgs a = bind(ctx, attrs);
      g_computes.fetch_add(1, std::memory_order_relaxed);
      const zaya::ParallelFor pfor = zaya::ort_parallel_for(ctx);
      zaya::attention_cpu(a, pfor);
      return nullptr;
    } catch (const Ort::Exception& e) {
      return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, (std::string("ai.zaya::CachedAttention: ") + e.what()).c_str());
    }
  }
};

template <bool Half>
struct Op : Ort::CustomOpBase<Op<Half>, Kernel, true> {
  static constexpr ONNXTensorElementDataType kCache =
      Half ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept {
    try {
      Attrs at;
      at.heads = attr_int(api, info, "num_heads", 0);
      at.kv_heads = attr_int(api, info, "kv_num_heads", 0);
      at.window = attr_int(api, info, "local_window_size", -1);
      if (OrtStatus* st = api.KernelInfoGetAttribute_float(info, "scale", &at.scale)) { api.ReleaseStatus(st); at.scale = 0.0f; }
      *kernel = new Kernel{at};
      g_kernels.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, e.what());
    }
  }
  const char* GetName() const { return kName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return kInputs; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    if (i == MASK) return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    return i == PAST_KEY || i == PAST_VALUE ? kCache : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t i) const {
    return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : kCache;
  }
};

}  // namespace

namespace zaya {

const OrtCustomOp* attention_cpu_op(bool half) {
  static Op<false> f32;
  static Op<true> f16;
  return half ? static_cast<const OrtCustomOp*>(&f16) : &f32;
}

void attention_counters(int64_t* kernels, int64_t* computes) {
  *kernels = g_kernels.load(std::memory_order_relaxed);
  *computes = g_computes.load(std::memory_order_relaxed);
}

}  // namespace zaya
