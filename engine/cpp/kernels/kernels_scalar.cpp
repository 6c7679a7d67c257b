// Baseline kernel set (x86-64 SSE2 only): the portable kernels plus a plain-C GEMM
// micro-kernel. It is the fallback for CPUs without AVX2, not the oracle (that is
// reference.cpp, which shares no code with this file).
#define WALLE_ISA_NS scalar
#include "kernels_impl.h"

namespace walle {
namespace scalar {
namespace {

void f32_gemm_4x8_scalar(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                         int accumulate) {
  float acc[4][8] = {};
  for (int64_t p = 0; p < k; ++p) {
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 8; ++j) acc[i][j] += a[i] * b[j];
    a += 4;
    b += ldb;
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

}  // namespace
}  // namespace scalar

const KernelTable& kernels_scalar() {
  static const KernelTable t = {
      "scalar", 4,
      scalar::f32_unary, scalar::f32_binary, scalar::f32_compare, scalar::f32_select,
      scalar::f32_reduce, scalar::f32_bias_clamp, scalar::f32_dwconv,
      {{"f32_gemm_4x8_scalar", 4, 8, scalar::f32_gemm_4x8_scalar}, {nullptr, 0, 0, nullptr}, {nullptr, 0, 0, nullptr}},
      1,
      0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  return t;
}

}  // namespace walle

#include "rows_impl.h"
