// Blocked, packed SGEMM driver (Goto/BLIS loop order) around the ISA micro-kernels.
// C[M x N] = A[M x K] * B[K x N] with arbitrary element strides on A and B (so
// transposes are free), then a fused bias + clamp epilogue while each tile is in L1.
// Constant operands (weights) are packed once at load into a PackedMatrix.
#pragma once
#include <memory>

#include "atomic.h"

namespace walle {

// Panels of `width` rows (A, width = MR) or columns (B, width = NR) over the full K;
// panel p, k index q starts at data + (p * k + q) * width. `batches` copies follow each
// other (grouped convolution packs one per group).
struct PackedMatrix {
  std::shared_ptr<void> owner;
  float* data = nullptr;
  int64_t k = 0, extent = 0;  // K and M (for A) or N (for B)
  int width = 0;
  int64_t batches = 1;
  int64_t batch_stride = 0;  // floats
  const float* batch(int64_t i) const { return data + i * batch_stride; }
};

PackedMatrix pack_a(const float* a, int64_t batches, int64_t batch_stride, int64_t m, int64_t k,
                    int64_t rs, int64_t cs, int mr);
PackedMatrix pack_b(const float* b, int64_t batches, int64_t batch_stride, int64_t k, int64_t n,
                    int64_t rs, int64_t cs, int nr);

struct GemmCall {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;
  const float* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  MatmulEpilogue ep;  // ep.addend points at this call's [m x n] block (stride ldc)
  const float* packed_a = nullptr;  // this batch's prepacked A (width = micro-kernel MR)
  const float* packed_b = nullptr;
};

void f32_gemm(const KernelTable& kt, int variant, const GemmCall& g, bool allow_threads);

}  // namespace walle
