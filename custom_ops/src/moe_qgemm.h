// int4-weight matmuls of the expert kernel (moe_qgemm.cc): out[j, r] = a[rows[j]] · W_e[r] for a
// few or many activation rows j and weight rows r of one expert, reading W where it is stored.
//
// Activations are prepared once per matmul input (prepare_int8 / prepare_fp32) in chunks of 128
// values: the 64 even-index values, then the 64 odd-index ones, so the low and high nibbles of 64
// stored weight bytes meet their activations without shuffling. Lane l of a chunk (values
// 8l..8l+7) lies in one quantization block (blocks are multiples of 8).
#pragma once

#include <cstddef>
#include <cstdint>

#include "moe.h"

namespace zaya {

constexpr int64_t kChunk = 128;       // values per activation chunk
constexpr int64_t kLanes = kChunk / 8;

inline int64_t chunked(int64_t k) { return (k + kChunk - 1) / kChunk * kChunk; }

// Prepared activation rows. int8: q [rows, kpad] int8, corr [rows, kpad/8] = -8·(sum of the
// lane's 8 values), scale [rows, kpad/8] = the lane's block scale (amax/127); for the blocked
// kernels (moe_panel.cc) also per block: bcorr [rows, kpad/16] = -8·(sum of the block's values)
// and bscale [rows, kpad/16]. fp32: f [rows, kpad].
struct PreparedRows {
  int8_t* q = nullptr;
  int32_t* corr = nullptr;
  float* scale = nullptr;
  int32_t* bcorr = nullptr;
  float* bscale = nullptr;
  float* f = nullptr;
  int64_t kpad = 0;
};

enum class Isa { kGeneric, kAvx2, kAvxVnni, kAvx512Vnni };
Isa int8_isa();  // the int8 kernels this CPU runs (ZAYA_EDGE_CPU_ISA may force a lower one)

constexpr int64_t kPanelMin = 6;  // from this many rows of one expert, the blocked kernel runs

// Activation rows of one expert regrouped for the blocked kernel (moe_panel.cc): tiles of `tile`
// rows (the last one zero-padded), per tile and 8-value step the rows' even then odd 4-byte groups
// next to each other, and per block their corrections and scales.
struct PackedRows {
  const int8_t* q = nullptr;        // [tiles][K/8][tile][8]
  const int32_t* bcorr = nullptr;   // [tiles][blocks][tile]
  const float* bscale = nullptr;    // [tiles][blocks][tile]
  int64_t count = 0, tile = 0, steps = 0, nb = 0;
};

// Rows per tile of this CPU's blocked kernel (0: none, the row kernels run everything).
int64_t panel_tile();
size_t packed_bytes(int64_t count, int64_t k, int64_t block);
PackedRows pack_rows(const PreparedRows& a, const int64_t* rows, int64_t count, int64_t k, int64_t block, void* mem);

// The blocked int8 kernel: the task's stored weight rows [r0, r1) are gathered once into
// row-interleaved panels (scratch of the calling thread, not a copy kept), then every tile of
// activation rows runs against them. out as qgemm's.
void panel_gemm(const QWeights& w, int64_t e, int64_t r0, int64_t r1, int64_t block, const PackedRows& a,
                float* out, int64_t ldo);

// Bytes prepare_* need for `rows` rows of k values (int8 or fp32), and the layout in `mem`.
size_t prepared_bytes(int64_t rows, int64_t k, bool int8);
PreparedRows prepared_view(void* mem, int64_t rows, int64_t k, bool int8);

// Row i of `src` (stride lda, k values) into prepared row `dst_row`; blocks of `block` values
// quantized exactly as onnxruntime's MLAS int8 kernels do.
void prepare_int8(const float* src, int64_t k, int64_t block, const PreparedRows& p, int64_t dst_row);
void prepare_fp32(const float* src, int64_t k, const PreparedRows& p, int64_t dst_row);

// out[j * ldo + r] for j < count, r in [r0, r1): prepared row rows[j] times row r of expert e.
void qgemm(const QWeights& w, int64_t e, int64_t r0, int64_t r1, int64_t block, const PreparedRows& a, bool int8,
           const int64_t* rows, int64_t count, float* out, int64_t ldo);

}  // namespace zaya
