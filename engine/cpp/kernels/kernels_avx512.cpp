// AVX-512 kernel set: the portable kernels compiled with -mavx512f, plus hand-written
// GEMM micro-kernels. Only called after cpuid reports AVX-512F/BW/DQ/VL (see isa.cpp).
#define WALLE_ISA_NS avx512
#include "kernels_impl.h"

#include <immintrin.h>

namespace walle {
namespace avx512 {
namespace {

// C[MR x 32] (+)= A[k][MR] * B[k][32]. MR rows x 2 zmm accumulators; B is two aligned
// loads per k, A one broadcast per row, so 2*MR FMAs hide the FMA latency with MR >= 4.
template <int MR>
void f32_gemm_avx512(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int accumulate) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = _mm512_loadu_ps(b + 16);
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * ldb), _MM_HINT_T0);
    // Prepacked weights stream from memory when N is small (late conv layers): fetch
    // the A panel a few k-steps ahead too.
    _mm_prefetch(reinterpret_cast<const char*>(a + 16 * MR), _MM_HINT_T0);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
    }
    a += MR;
    b += ldb;
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      acc0[i] = _mm512_add_ps(acc0[i], _mm512_loadu_ps(ci));
      acc1[i] = _mm512_add_ps(acc1[i], _mm512_loadu_ps(ci + 16));
    }
    _mm512_storeu_ps(ci, acc0[i]);
    _mm512_storeu_ps(ci + 16, acc1[i]);
  }
}

void f32_gemm_8x32_avx512(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                          int accumulate) {
  f32_gemm_avx512<8>(k, a, b, ldb, c, ldc, accumulate);
}

void f32_gemm_12x32_avx512(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                           int accumulate) {
  f32_gemm_avx512<12>(k, a, b, ldb, c, ldc, accumulate);
}


// The vector type the NCHWc kernels (conv_nchwc_impl.h) are written over. max_owt: the
// widest register tile per output-block count (1, 2, 4) that fits the 32 registers.
struct Vec {
  using T = __m512;
  static constexpr int n = 16;
  static constexpr int max_owt[3] = {16, 14, 6};
  static constexpr int max_owt_dw = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T bcast(const float* p) { return _mm512_set1_ps(*p); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static T min(T a, T b) { return _mm512_min_ps(a, b); }
};
// C[1 x 32] (+)= a[k] * B[k][32]: four k-steps in flight (8 accumulators) so the FMA
// latency is hidden without a second row; B streams once, which bounds it anyway.
void f32_gemm_1x32_avx512(int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                          int64_t ldc, int accumulate) {
  __m512 s0[4], s1[4];
  for (int u = 0; u < 4; ++u) s0[u] = s1[u] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m512 av = _mm512_set1_ps(a[p + u]);
      const float* bp = b + (p + u) * ldb;
      s0[u] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp), s0[u]);
      s1[u] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp + 16), s1[u]);
    }
  }
  for (; p < k; ++p) {
    const __m512 av = _mm512_set1_ps(a[p]);
    s0[0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(b + p * ldb), s0[0]);
    s1[0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(b + p * ldb + 16), s1[0]);
  }
  __m512 r0 = _mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), _mm512_add_ps(s0[2], s0[3]));
  __m512 r1 = _mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), _mm512_add_ps(s1[2], s1[3]));
  if (accumulate) {
    r0 = _mm512_add_ps(r0, _mm512_loadu_ps(c));
    r1 = _mm512_add_ps(r1, _mm512_loadu_ps(c + 16));
  }
  _mm512_storeu_ps(c, r0);
  _mm512_storeu_ps(c + 16, r1);
}

}  // namespace
}  // namespace avx512
}  // namespace walle

#include "conv_nchwc_impl.h"

namespace walle {

const KernelTable& kernels_avx512() {
  static const KernelTable t = {
      "avx512", 16,
      avx512::f32_unary, avx512::f32_binary, avx512::f32_compare, avx512::f32_select,
      avx512::f32_reduce, avx512::f32_bias_clamp, avx512::f32_dwconv,
      {{"f32_gemm_12x32_avx512", 12, 32, avx512::f32_gemm_12x32_avx512},
       {"f32_gemm_8x32_avx512", 8, 32, avx512::f32_gemm_8x32_avx512},
       {"f32_gemm_1x32_avx512", 1, 32, avx512::f32_gemm_1x32_avx512}},
      3,
      16, avx512::f32_conv_nchwc, avx512::f32_dwconv_nchwc, avx512::f32_pool_nchwc,
      avx512::f32_winograd_in_nchwc, avx512::f32_winograd_out_nchwc,
      "f32_conv_nchw16c_avx512", "f32_dwconv_nchw16c_avx512"};
  return t;
}

}  // namespace walle

#include "rows_impl.h"
