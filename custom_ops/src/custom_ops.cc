// ONNX Runtime glue for the ai.zaya custom-op library: op definitions, shape checks, the
// RegisterCustomOps entry point and a few C functions zaya_edge/custom_ops.py reads with ctypes.
//
// Everything goes through the OrtApi table handed to RegisterCustomOps (ORT_API_MANUAL_INIT),
// so the library never links libonnxruntime and loads into any onnxruntime at least as new as
// the headers it was built against.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <atomic>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "attention.h"
#include "attention_op.h"
#include "moe_op.h"
#include "op_glue.h"
#include "router.h"

#if defined(_WIN32)
#define ZAYA_EXPORT extern "C" __declspec(dllexport)
#else
#define ZAYA_EXPORT extern "C" __attribute__((visibility("default")))
#endif

#ifndef ZAYA_CUSTOM_OPS_VERSION
#define ZAYA_CUSTOM_OPS_VERSION "0.0.0"
#endif

// Bumped whenever an exported C function or an operator contract changes: the Python loader
// refuses a library whose number differs from its own.
#define ZAYA_CUSTOM_OPS_ABI 2

namespace {

constexpr const char* kDomain = "ai.zaya";
constexpr const char* kRouter = "Router";
constexpr size_t kRouterInputs = 12;
constexpr size_t kRouterOutputs = 3;

enum Provider { kCpu = 0, kCuda = 1, kRocm = 2, kProviders = 3 };
const char* const kProviderNames[kProviders] = {"CPUExecutionProvider", "CUDAExecutionProvider",
                                                "ROCMExecutionProvider"};

std::atomic<int64_t> g_kernels[kProviders];
std::atomic<int64_t> g_computes[kProviders];

enum RouterInput { X, PREV, DOWN_W, DOWN_B, SCALE, NORM_W, FC1_W, FC1_B, FC2_W, FC2_B, OUT_W, BIAS };
const char* const kInputNames[kRouterInputs] = {"x", "prev_state", "down_w", "down_b", "state_scale", "norm_w",
                                                "fc1_w", "fc1_b", "fc2_w", "fc2_b", "out_w", "balancing_bias"};

using zaya::shape_str;

[[noreturn]] void bad(const std::string& msg) {
  throw Ort::Exception("ai.zaya::Router: " + msg, ORT_INVALID_ARGUMENT);
}

// Checks every input's shape against the contract (export/router_op.py), fills `a` with the
// input pointers and sizes, allocates the three outputs.
zaya::RouterArgs bind(Ort::KernelContext& ctx, float epsilon) {
  if (ctx.GetInputCount() != kRouterInputs) bad("expects 12 inputs, got " + std::to_string(ctx.GetInputCount()));
  std::vector<Ort::ConstValue> in;
  std::vector<std::vector<int64_t>> shape;
  zaya::read_inputs(ctx, kRouterInputs, in, shape);
  if (shape[X].size() != 2) bad("x must be [N, H], got " + shape_str(shape[X]));
  const int64_t n = shape[X][0], h = shape[X][1];
  if (shape[DOWN_W].size() != 2 || shape[DOWN_W][0] != h)
    bad("down_w must be [H=" + std::to_string(h) + ", R], got " + shape_str(shape[DOWN_W]));
  const int64_t r = shape[DOWN_W][1];
  if (shape[OUT_W].size() != 2 || shape[OUT_W][0] != r || shape[OUT_W][1] < 2)
    bad("out_w must be [R=" + std::to_string(r) + ", E+1 >= 2], got " + shape_str(shape[OUT_W]));
  const int64_t c = shape[OUT_W][1];
  auto expect = [&](int i, std::vector<int64_t> want) {
    if (shape[i] != want) bad(std::string(kInputNames[i]) + " must be " + shape_str(want) + ", got " + shape_str(shape[i]));
  };
  for (int i : {DOWN_B, SCALE, NORM_W, FC1_B, FC2_B}) expect(i, {r});
  for (int i : {FC1_W, FC2_W}) expect(i, {r, r});
  expect(BIAS, {c});
  const auto& ps = shape[PREV];
  if (ps.size() != 2 || ps[1] != r || (ps[0] != 1 && ps[0] != n))
    bad("prev_state must be [1, " + std::to_string(r) + "] or [N=" + std::to_string(n) + ", " + std::to_string(r) +
        "], got " + shape_str(ps));

  zaya::RouterArgs a;
  a.n = n, a.h = h, a.r = r, a.c = c;
  a.epsilon = epsilon;
  a.prev_per_row = ps[0] == n && n != 1;
  const float** ptrs[kRouterInputs] = {&a.x, &a.prev_state, &a.down_w, &a.down_b, &a.state_scale, &a.norm_w,
                                       &a.fc1_w, &a.fc1_b, &a.fc2_w, &a.fc2_b, &a.out_w, &a.balancing_bias};
  for (size_t i = 0; i < kRouterInputs; ++i) *ptrs[i] = in[i].GetTensorData<float>();
  a.state = ctx.GetOutput(0, {n, r}).GetTensorMutableData<float>();
  a.select = ctx.GetOutput(1, {n, c - 1}).GetTensorMutableData<float>();
  a.weight = ctx.GetOutput(2, {n, c - 1}).GetTensorMutableData<float>();
  return a;
}

float read_epsilon(const OrtApi& api, const OrtKernelInfo* info) {
  float eps = 1e-5f;  // the function body's default
  OrtStatus* st = api.KernelInfoGetAttribute_float(info, "epsilon", &eps);
  if (st) {
    api.ReleaseStatus(st);
    eps = 1e-5f;
  }
  return eps;
}

OrtStatusPtr to_status(const OrtApi& api, const char* msg, OrtErrorCode code = ORT_FAIL) {
  return api.CreateStatus(code, msg);
}

// A constant [K, M] weight copied once into the CPU kernel's panel layout.
struct PackedWeight {
  std::vector<float> data;
  int64_t k = 0, m = 0;

  const float* get(const std::vector<int64_t>& shape) const {
    return !data.empty() && shape.size() == 2 && shape[0] == k && shape[1] == m ? data.data() : nullptr;
  }
};

PackedWeight pack_if_constant(const OrtKernelInfo* info, int index) {
  PackedWeight p;
  int is_constant = 0;
  Ort::ConstValue value = Ort::ConstKernelInfo(info).GetTensorConstantInput(index, &is_constant);
  if (!is_constant || !value) return p;
  auto type_shape = value.GetTensorTypeAndShapeInfo();
  const auto shape = type_shape.GetShape();
  if (type_shape.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || shape.size() != 2) return p;
  p.k = shape[0], p.m = shape[1];
  p.data = zaya::pack_weight(value.GetTensorData<float>(), p.k, p.m);
  return p;
}

template <Provider P>
struct RouterKernel {
  float epsilon;
  PackedWeight down_w, fc1_w, fc2_w;  // CPU only: constant weights in panel layout

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    try {
      Ort::KernelContext ctx(raw);
      zaya::RouterArgs a = bind(ctx, epsilon);
      g_computes[P].fetch_add(1, std::memory_order_relaxed);
      if constexpr (P == kCpu) {
        a.down_w_packed = down_w.get({a.h, a.r});
        a.fc1_w_packed = fc1_w.get({a.r, a.r});
        a.fc2_w_packed = fc2_w.get({a.r, a.r});
        const zaya::ParallelFor pfor = zaya::ort_parallel_for(ctx);
        zaya::router_cpu(a, pfor);
      } else {
#if defined(ZAYA_WITH_GPU)
        if (const char* msg = zaya::router_gpu(a, ctx.GetGPUComputeStream())) return to_status(Ort::GetApi(), msg);
#endif
      }
      return nullptr;
    } catch (const Ort::Exception& e) {
      return to_status(Ort::GetApi(), e.what(), e.GetOrtErrorCode());
    } catch (const std::exception& e) {
      return to_status(Ort::GetApi(), (std::string("ai.zaya::Router: ") + e.what()).c_str());
    } catch (...) {
      return to_status(Ort::GetApi(), "ai.zaya::Router: unknown error");
    }
  }
};

template <Provider P>
struct RouterOp : Ort::CustomOpBase<RouterOp<P>, RouterKernel<P>, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept {
    try {
      auto* k = new RouterKernel<P>{read_epsilon(api, info), {}, {}, {}};
      if constexpr (P == kCpu) {
        k->down_w = pack_if_constant(info, DOWN_W);
        k->fc1_w = pack_if_constant(info, FC1_W);
        k->fc2_w = pack_if_constant(info, FC2_W);
      }
      *kernel = k;
      g_kernels[P].fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, e.what());
    }
  }
  const char* GetName() const { return kRouter; }
  const char* GetExecutionProviderType() const { return kProviderNames[P]; }
  size_t GetInputTypeCount() const { return kRouterInputs; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return kRouterOutputs; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

#if defined(ZAYA_WITH_CUDA)
constexpr Provider kGpuProvider = kCuda;
#elif defined(ZAYA_WITH_HIP)
constexpr Provider kGpuProvider = kRocm;
#endif

// Domains must outlive every session that uses them: kept until the library is unloaded.
std::mutex g_domains_mutex;
std::vector<Ort::CustomOpDomain>& domains() {
  static auto* d = new std::vector<Ort::CustomOpDomain>();  // never destroyed: no release after ORT's teardown
  return *d;
}

std::string build_info() {
  std::ostringstream o;
  o << "{\"version\": \"" << ZAYA_CUSTOM_OPS_VERSION << "\", \"abi\": " << ZAYA_CUSTOM_OPS_ABI
    << ", \"ort_api_version\": " << ORT_API_VERSION << ", \"domain\": \"" << kDomain << "\", \"ops\": [\"" << kRouter
#if !defined(ZAYA_WITH_GPU)
    << "\", \"CachedAttention"
#endif
    << "\", \"" << zaya::kExpertMoe << "\"], \"providers\": [\"CPUExecutionProvider\"";
#if defined(ZAYA_WITH_GPU)
  o << ", \"" << kProviderNames[kGpuProvider] << "\"";
#endif
  o << "], \"gpu\": "
#if defined(ZAYA_WITH_CUDA)
    << "\"cuda\""
#elif defined(ZAYA_WITH_HIP)
    << "\"hip\""
#else
    << "null"
#endif
    << "}";
  return o.str();
}

}  // namespace

// ---- exported C functions ---------------------------------------------------------------------

/// ONNX Runtime's entry point (SessionOptions.register_custom_ops_library): adds the ai.zaya domain.
ZAYA_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // CreateStatus sits in the first version of the table: always there.
    const OrtApi* v1 = api_base->GetApi(1);
    std::string msg = std::string("zaya custom ops need ONNX Runtime API ") + std::to_string(ORT_API_VERSION) +
                      " (onnxruntime 1." + std::to_string(ORT_API_VERSION) + "+), this onnxruntime is " +
                      api_base->GetVersionString();
    return v1 ? v1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  static RouterOp<kCpu> router_cpu;
#if defined(ZAYA_WITH_GPU)
  static RouterOp<kGpuProvider> router_gpu;
#endif
  try {
    Ort::CustomOpDomain domain{kDomain};
    domain.Add(&router_cpu);
#if !defined(ZAYA_WITH_GPU)
    // CPU-only builds: a GPU library leaves CachedAttention to its function body, so a GPU session
    // runs GroupQueryAttention on the GPU instead of this CPU kernel behind two cache copies.
    domain.Add(zaya::attention_cpu_op(false));
    domain.Add(zaya::attention_cpu_op(true));
#endif
    domain.Add(zaya::expert_moe_cpu_op());
#if defined(ZAYA_WITH_GPU)
    domain.Add(&router_gpu);
#endif
    Ort::ThrowOnError(api->AddCustomOpDomain(options, domain));
    std::lock_guard<std::mutex> lock(g_domains_mutex);
    domains().push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}

/// The loader's compatibility check: must equal zaya_edge.custom_ops.ABI_VERSION.
ZAYA_EXPORT int ZayaCustomOpsAbiVersion(void) { return ZAYA_CUSTOM_OPS_ABI; }

/// JSON: version, abi, ort_api_version (headers built against), domain, ops, providers, gpu.
ZAYA_EXPORT const char* ZayaCustomOpsBuildInfo(void) {
  static const std::string info = build_info();
  return info.c_str();
}

/// CachedAttention's kernels created and Compute calls so far (CPU): out[2].
ZAYA_EXPORT void ZayaCustomOpsAttentionCounters(int64_t* out) { zaya::attention_counters(out, out + 1); }

/// The CPU kernel CachedAttention runs on this machine: "avx512", "avx2" or "generic".
ZAYA_EXPORT const char* ZayaCustomOpsAttentionIsa(void) { return zaya::attention_isa(); }

/// Kernels created and Compute calls so far, per provider (CPU, CUDA, ROCm): out[6] =
/// {kernels cpu, cuda, rocm, computes cpu, cuda, rocm}. Proves the native path ran.
ZAYA_EXPORT void ZayaCustomOpsCounters(int64_t* out) {
  for (int p = 0; p < kProviders; ++p) {
    out[p] = g_kernels[p].load(std::memory_order_relaxed);
    out[kProviders + p] = g_computes[p].load(std::memory_order_relaxed);
  }
}
