// CPU kernel of ai.zaya::ExpertMoE: routes grouped per expert, then three parallel stages.
//
//   routes   (token, expert, weight) for every token that reaches an expert, sorted by expert
//   fc1      per (expert, block of fc1 rows): all of the expert's tokens against those rows
//   act      per route: activation (SwiGLU / GELU / ReLU / ReLU²), prepared as fc2's input
//   fc2      per (expert, block of fc2 rows), as fc1
//   add      y[token] = Σ its routes (weight × output for SwiGLU, as QMoE mixes)
// So a decode step streams each chosen expert once for all the rows routed to it, and a prefill
// runs each expert as one blocked matmul over its tokens. The matmuls are moe_qgemm.cc's.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_simd.h"
#include "moe.h"
#include "moe_qgemm.h"

namespace zaya {
namespace {

constexpr int64_t kRowsPerTask = 64;
constexpr int64_t kRoutesPerTask = 16;
constexpr float kMinWeight = 1e-8f;  // QMoE drops routes at or below this weight

struct Route {
  int64_t token, expert;
  float w;
};

// Routes sorted by expert (tokens ascending within an expert); start[e]..start[e+1] are expert e's.
struct Routing {
  std::vector<Route> routes;
  std::vector<int64_t> start;
};

Routing route_tokens(const MoeArgs& a) {
  std::vector<Route> all;
  for (int64_t t = 0; t < a.n; ++t) {
    const float* sel = a.select + t * a.e;
    const float* wt = a.weight + t * a.e;
    if (a.act == MoeAct::kSwiglu) {
      int64_t best = 0;  // top-1 of select; a tie goes to the higher index, as QMoE's sort on (value, index)
      for (int64_t e = 1; e < a.e; ++e)
        if (sel[e] >= sel[best]) best = e;
      if (wt[best] > kMinWeight) all.push_back({t, best, wt[best]});
    } else {  // the dense graph weights every expert; all but the chosen one's weights are 0
      for (int64_t e = 0; e < a.e; ++e)
        if (wt[e] != 0.0f) all.push_back({t, e, wt[e]});
    }
  }
  Routing r;
  r.start.assign(static_cast<size_t>(a.e + 1), 0);
  for (const Route& x : all) ++r.start[static_cast<size_t>(x.expert + 1)];
  for (int64_t e = 0; e < a.e; ++e) r.start[static_cast<size_t>(e + 1)] += r.start[static_cast<size_t>(e)];
  r.routes.resize(all.size());
  std::vector<int64_t> next(r.start.begin(), r.start.end() - 1);
  for (const Route& x : all) r.routes[static_cast<size_t>(next[static_cast<size_t>(x.expert)]++)] = x;
  return r;
}

template <typename Fn>
void run_tasks(int64_t count, const ParallelFor& pfor, Fn fn) {
  if (count <= 0) return;
  if (pfor && count > 1) {
    pfor(static_cast<size_t>(count), [&](size_t i) { fn(static_cast<int64_t>(i)); });
  } else {
    for (int64_t i = 0; i < count; ++i) fn(i);
  }
}

// ---- activations --------------------------------------------------------------------------------

float sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

float act_one(MoeAct act, float g) {
  switch (act) {
    case MoeAct::kGelu: return 0.5f * g * (1.0f + std::erf(g * 0.70710678118654752440f));
    case MoeAct::kGeluTanh:
      return 0.5f * g * (1.0f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    case MoeAct::kRelu: return g > 0.0f ? g : 0.0f;
    case MoeAct::kRelu2: { const float r = g > 0.0f ? g : 0.0f; return r * r; }
    case MoeAct::kSwiglu: default: return g * sigmoid(g);
  }
}

// h[j] = act(gate[j]) · up[j] (· w for the dense graph, which weights the intermediate).
ZAYA_CLONES void activate(const float* c1, int64_t inter, MoeAct act, bool weighted, float w, float* h) {
  if (act == MoeAct::kSwiglu) {  // fc1 rows interleaved: gate j at 2j, up j at 2j+1
    for (int64_t j = 0; j < inter; ++j) {
      const float g = c1[2 * j];
      h[j] = (g * sigmoid(g)) * c1[2 * j + 1];
    }
  } else {  // gate rows, then up rows
    for (int64_t j = 0; j < inter; ++j) h[j] = act_one(act, c1[j]) * c1[inter + j];
  }
  if (weighted)
    for (int64_t j = 0; j < inter; ++j) h[j] *= w;
}

// ---- scratch ------------------------------------------------------------------------------------

struct Scratch {
  PreparedRows a1, a2;
  float* c1 = nullptr;  // [routes, 2I]
  float* c2 = nullptr;  // [routes, H]
  int64_t* a1_rows = nullptr;  // per route: its token's prepared row
  int64_t* a2_rows = nullptr;  // per route: its own index
};

Scratch scratch_for(const MoeArgs& a, int64_t tokens, int64_t routes) {
  thread_local std::vector<uint8_t> mem;
  const size_t b1 = prepared_bytes(tokens, a.h, a.int8), b2 = prepared_bytes(routes, a.inter, a.int8);
  const size_t c1 = static_cast<size_t>(routes * 2 * a.inter) * 4, c2 = static_cast<size_t>(routes * a.h) * 4;
  const size_t idx = static_cast<size_t>(routes) * 16;
  mem.resize(b1 + b2 + c1 + c2 + idx + 64);
  uint8_t* p = mem.data();
  Scratch s;
  s.a1 = prepared_view(p, tokens, a.h, a.int8);
  s.a2 = prepared_view(p + b1, routes, a.inter, a.int8);
  auto* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p + b1 + b2) + 63) & ~uintptr_t{63});
  s.c1 = reinterpret_cast<float*>(aligned);
  s.c2 = reinterpret_cast<float*>(aligned + c1);
  s.a1_rows = reinterpret_cast<int64_t*>(aligned + c1 + c2);
  s.a2_rows = s.a1_rows + routes;
  return s;
}

struct MatTask {
  int64_t expert, r0, r1;
};

std::vector<MatTask> mat_tasks(const Routing& rt, int64_t experts, int64_t rows) {
  std::vector<MatTask> tasks;
  for (int64_t e = 0; e < experts; ++e) {
    if (rt.start[static_cast<size_t>(e + 1)] == rt.start[static_cast<size_t>(e)]) continue;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerTask) tasks.push_back({e, r0, std::min(rows, r0 + kRowsPerTask)});
  }
  return tasks;
}

// Experts with many routes get their input rows packed for the blocked kernel (int8 only).
std::vector<PackedRows> pack_experts(const MoeArgs& a, const Routing& rt, const PreparedRows& in, const int64_t* idx,
                                     int64_t k, std::vector<uint8_t>& mem, const ParallelFor& pfor) {
  std::vector<PackedRows> packed(static_cast<size_t>(a.e));
  if (!a.int8 || panel_tile() == 0) return packed;
  std::vector<size_t> offset(static_cast<size_t>(a.e + 1), 0);
  for (int64_t e = 0; e < a.e; ++e) {
    const int64_t count = rt.start[static_cast<size_t>(e + 1)] - rt.start[static_cast<size_t>(e)];
    offset[static_cast<size_t>(e + 1)] = offset[static_cast<size_t>(e)] + (count >= kPanelMin ? packed_bytes(count, k, a.block) : 0);
  }
  mem.resize(offset.back());
  run_tasks(a.e, pfor, [&](int64_t e) {
    const int64_t s0 = rt.start[static_cast<size_t>(e)], count = rt.start[static_cast<size_t>(e + 1)] - s0;
    if (count >= kPanelMin)
      packed[static_cast<size_t>(e)] = pack_rows(in, idx + s0, count, k, a.block, mem.data() + offset[static_cast<size_t>(e)]);
  });
  return packed;
}

// out[route, rows] for every task: the expert's routes (prepared rows `idx`) times W's rows.
void run_matmul(const MoeArgs& a, const QWeights& w, const Routing& rt, const std::vector<MatTask>& tasks,
                const PreparedRows& in, const int64_t* idx, float* out, int64_t ldo, const ParallelFor& pfor) {
  thread_local std::vector<uint8_t> mem;
  const std::vector<PackedRows> packed = pack_experts(a, rt, in, idx, w.k, mem, pfor);
  run_tasks(static_cast<int64_t>(tasks.size()), pfor, [&](int64_t i) {
    const MatTask& t = tasks[static_cast<size_t>(i)];
    const int64_t s0 = rt.start[static_cast<size_t>(t.expert)], s1 = rt.start[static_cast<size_t>(t.expert + 1)];
    const PackedRows& p = packed[static_cast<size_t>(t.expert)];
    if (p.count) {
      panel_gemm(w, t.expert, t.r0, t.r1, a.block, p, out + s0 * ldo, ldo);
    } else {
      qgemm(w, t.expert, t.r0, t.r1, a.block, in, a.int8, idx + s0, s1 - s0, out + s0 * ldo, ldo);
    }
  });
}

}  // namespace

void moe_cpu(const MoeArgs& a, const ParallelFor& pfor) {
  std::fill(a.y, a.y + a.n * a.h, 0.0f);
  const Routing rt = route_tokens(a);
  const int64_t routes = static_cast<int64_t>(rt.routes.size()), inter = a.inter;
  if (routes == 0) return;
  // the tokens that reach an expert, each prepared once as fc1's input
  std::vector<int64_t> token_row(static_cast<size_t>(a.n), -1), tokens;
  for (const Route& r : rt.routes)
    if (token_row[static_cast<size_t>(r.token)] < 0) {
      token_row[static_cast<size_t>(r.token)] = static_cast<int64_t>(tokens.size());
      tokens.push_back(r.token);
    }
  Scratch s = scratch_for(a, static_cast<int64_t>(tokens.size()), routes);
  for (int64_t i = 0; i < routes; ++i) {
    s.a1_rows[i] = token_row[static_cast<size_t>(rt.routes[static_cast<size_t>(i)].token)];
    s.a2_rows[i] = i;
  }
  const int64_t ntok = static_cast<int64_t>(tokens.size());
  run_tasks((ntok + kRoutesPerTask - 1) / kRoutesPerTask, ntok > kRoutesPerTask ? pfor : nullptr, [&](int64_t c) {
    for (int64_t i = c * kRoutesPerTask; i < std::min(ntok, (c + 1) * kRoutesPerTask); ++i) {
      const float* x = a.x + tokens[static_cast<size_t>(i)] * a.h;
      a.int8 ? prepare_int8(x, a.h, a.block, s.a1, i) : prepare_fp32(x, a.h, s.a1, i);
    }
  });
  run_matmul(a, a.fc1, rt, mat_tasks(rt, a.e, 2 * inter), s.a1, s.a1_rows, s.c1, 2 * inter, pfor);
  const bool weighted = a.act != MoeAct::kSwiglu;
  run_tasks((routes + kRoutesPerTask - 1) / kRoutesPerTask, routes > kRoutesPerTask ? pfor : nullptr, [&](int64_t c) {
    thread_local std::vector<float> h;
    h.resize(static_cast<size_t>(inter));
    for (int64_t i = c * kRoutesPerTask; i < std::min(routes, (c + 1) * kRoutesPerTask); ++i) {
      activate(s.c1 + i * 2 * inter, inter, a.act, weighted, rt.routes[static_cast<size_t>(i)].w, h.data());
      a.int8 ? prepare_int8(h.data(), inter, a.block, s.a2, i) : prepare_fp32(h.data(), inter, s.a2, i);
    }
  });
  run_matmul(a, a.fc2, rt, mat_tasks(rt, a.e, a.h), s.a2, s.a2_rows, s.c2, a.h, pfor);
  for (int64_t i = 0; i < routes; ++i) {  // in expert order per token: one route each for SwiGLU
    const Route& r = rt.routes[static_cast<size_t>(i)];
    const float scale = weighted ? 1.0f : r.w;
    float* y = a.y + r.token * a.h;
    const float* c = s.c2 + i * a.h;
    for (int64_t j = 0; j < a.h; ++j) y[j] += scale * c[j];
  }
}

}  // namespace zaya
