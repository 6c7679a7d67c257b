// AVX2 + FMA kernel set: portable kernels compiled with -mavx2 -mfma, plus GEMM
// micro-kernels with 6x16 and 4x24 register tiles (16 ymm registers available).
#define WALLE_ISA_NS avx2
#include "kernels_impl.h"

#include <immintrin.h>

namespace walle {
namespace avx2 {
namespace {

template <int MR, int NV>
void f32_gemm_avx2(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                   int accumulate) {
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    __m256 bv[NV];
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + 8 * j);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 3
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
    a += MR;
    b += ldb;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) {
      float* cij = c + i * ldc + 8 * j;
      __m256 v = acc[i][j];
      if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(cij));
      _mm256_storeu_ps(cij, v);
    }
}

void f32_gemm_6x16_avx2(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                        int accumulate) {
  f32_gemm_avx2<6, 2>(k, a, b, ldb, c, ldc, accumulate);
}

void f32_gemm_4x24_avx2(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                        int accumulate) {
  f32_gemm_avx2<4, 3>(k, a, b, ldb, c, ldc, accumulate);
}


// The vector type the NCHWc kernels (conv_nchwc_impl.h) are written over. max_owt: the
// widest register tile per output-block count (1, 2, 4) that fits the 16 registers.
struct Vec {
  using T = __m256;
  static constexpr int n = 8;
  static constexpr int max_owt[3] = {12, 6, 2};
  static constexpr int max_owt_dw = 12;
  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static T min(T a, T b) { return _mm256_min_ps(a, b); }
};
// C[1 x 32] (+)= a[k] * B[k][32] with two k-steps in flight (8 accumulators): the
// single-row (GEMV) kernel, see kernels.h.
void f32_gemm_1x32_avx2(int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                        int64_t ldc, int accumulate) {
  __m256 s[2][4];
  for (int u = 0; u < 2; ++u)
    for (int j = 0; j < 4; ++j) s[u][j] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 2 <= k; p += 2) {
#pragma GCC unroll 2
    for (int u = 0; u < 2; ++u) {
      const __m256 av = _mm256_broadcast_ss(a + p + u);
      const float* bp = b + (p + u) * ldb;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) s[u][j] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp + 8 * j), s[u][j]);
    }
  }
  for (; p < k; ++p) {
    const __m256 av = _mm256_broadcast_ss(a + p);
    for (int j = 0; j < 4; ++j)
      s[0][j] = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + p * ldb + 8 * j), s[0][j]);
  }
  for (int j = 0; j < 4; ++j) {
    __m256 v = _mm256_add_ps(s[0][j], s[1][j]);
    if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(c + 8 * j));
    _mm256_storeu_ps(c + 8 * j, v);
  }
}

}  // namespace
}  // namespace avx2
}  // namespace walle

#include "conv_nchwc_impl.h"

namespace walle {

const KernelTable& kernels_avx2() {
  static const KernelTable t = {
      "avx2", 8,
      avx2::f32_unary, avx2::f32_binary, avx2::f32_compare, avx2::f32_select,
      avx2::f32_reduce, avx2::f32_bias_clamp, avx2::f32_dwconv,
      {{"f32_gemm_6x16_avx2", 6, 16, avx2::f32_gemm_6x16_avx2},
       {"f32_gemm_4x24_avx2", 4, 24, avx2::f32_gemm_4x24_avx2},
       {"f32_gemm_1x32_avx2", 1, 32, avx2::f32_gemm_1x32_avx2}},
      3,
      8, avx2::f32_conv_nchwc, avx2::f32_dwconv_nchwc, avx2::f32_pool_nchwc,
      avx2::f32_winograd_in_nchwc, avx2::f32_winograd_out_nchwc,
      "f32_conv_nchw8c_avx2", "f32_dwconv_nchw8c_avx2"};
  return t;
}

}  // namespace walle

#include "rows_impl.h"
