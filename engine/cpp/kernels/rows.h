// Fused row kernels: operators that the decomposition would otherwise spell as 5 to 9
// passes of atomic ops over the same rows (Softmax, LayerNormalization, erf-GELU). Each
// is one kernel that keeps a row in L1 between its passes. Like the atomic kernels they
// come per SIMD level (kernels/rows_impl.h, compiled into each kernels_<isa>.cpp) and have
// a scalar double-precision oracle (rows.cpp) that the tests hold them to.
//
//   softmax:    y = e / sum(e), e = exp(scale (x - max x)); log: y = scale (x - max x) - log sum(e)
//               (scale > 0 folds a preceding division of the scores by a constant)
//   layernorm:  y = (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta
//   gelu:       y = x/2 (1 + erf(x / sqrt 2)) = x/2 erfc(-x / sqrt 2)
//
// NaN and infinities give what the decomposition gives: a row holding a NaN (or, for
// softmax and layernorm, an infinity) comes out NaN; gelu(+inf) = inf, gelu(-inf) = NaN.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace walle {

struct RowKernels {
  const char* isa;
  // rows x n, row-major, y may equal x.
  void (*f32_softmax)(const float* x, float* y, int64_t rows, int64_t n, float scale, int log);
  // gamma / beta: n values each, or null.
  void (*f32_layernorm)(const float* x, float* y, int64_t rows, int64_t n, float eps,
                        const float* gamma, const float* beta);
  void (*f32_gelu)(const float* x, float* y, int64_t n);
};

namespace scalar { const RowKernels& row_kernels(); }
namespace avx2 { const RowKernels& row_kernels(); }
namespace avx512 { const RowKernels& row_kernels(); }

const RowKernels& row_kernels_for(Isa isa);

namespace fast {
// The kernels of `rk`, rows split over the thread pool when there is enough work.
void softmax_rows(const RowKernels& rk, const float* x, float* y, int64_t rows, int64_t n,
                  float scale, bool log);
void layernorm_rows(const RowKernels& rk, const float* x, float* y, int64_t rows, int64_t n,
                    float eps, const float* gamma, const float* beta);
void gelu(const RowKernels& rk, const float* x, float* y, int64_t n);
}  // namespace fast

namespace ref {
void softmax_rows(const float* x, float* y, int64_t rows, int64_t n, float scale, bool log);
void layernorm_rows(const float* x, float* y, int64_t rows, int64_t n, float eps,
                    const float* gamma, const float* beta);
void gelu(const float* x, float* y, int64_t n);
}  // namespace ref

}  // namespace walle
