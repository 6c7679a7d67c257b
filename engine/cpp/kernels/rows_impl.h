// The fused row kernels of rows.h, written once as loops GCC vectorises, like
// kernels_impl.h (whose exp_/log_ they use). Included at the end of each
// kernels_<isa>.cpp, after kernels_impl.h, so each SIMD level gets its own copy.
// Only C headers: no std:: templates may be instantiated here (see CMakeLists.txt).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "rows.h"

namespace walle {
namespace WALLE_ISA_NS {
namespace {

// One register of independent partial results per pass, so the loops vectorise without
// reassociation flags: 16 floats (one zmm) on AVX-512, 8 (one ymm) below. A 64-byte vector
// on AVX2 was lowered to scalar code for the selects and conversions: the softmax ran at
// 8 ns an element, 13x onnxruntime's (bench/README.md, Engine).
#ifdef __AVX512F__
constexpr int kRowBytes = 64;
#else
constexpr int kRowBytes = 32;
#endif
constexpr int kRowLanes = kRowBytes / 4;

// GCC vector extension: loads and stores of any alignment. The vectoriser does not turn a
// NaN-propagating max into SIMD, so row_max spells it out.
typedef float RowVec __attribute__((vector_size(kRowBytes), aligned(4), may_alias));
typedef int32_t RowMask __attribute__((vector_size(kRowBytes), aligned(4), may_alias));

// Whole-vector loads and stores at any float address. (A memcpy into a vector temporary
// became two 16-byte stores and one 32-byte reload on AVX2: a store-forwarding stall in
// every pass of the softmax loop.)
inline RowVec load_v(const float* p) { return *reinterpret_cast<const RowVec*>(p); }
inline void store_v(float* p, RowVec v) { *reinterpret_cast<RowVec*>(p) = v; }

inline float row_max(const float* __restrict x, int64_t n) {  // NaN wins, like numpy
  RowVec acc, v;
  RowMask nan = {};
  for (int j = 0; j < kRowLanes; ++j) acc[j] = -INFINITY;
  int64_t i = 0;
  for (; i + kRowLanes <= n; i += kRowLanes) {
    v = load_v(x + i);
    acc = acc > v ? acc : v;
    nan |= v != v;
  }
  float m = -INFINITY;
  bool any_nan = false;
  for (int j = 0; j < kRowLanes; ++j) {
    m = fmax_(m, acc[j]);
    any_nan = any_nan || nan[j] != 0;
  }
  for (; i < n; ++i) {
    m = fmax_(m, x[i]);
    any_nan = any_nan || x[i] != x[i];
  }
  return any_nan ? NAN : m;
}

inline float row_sum(const float* __restrict x, int64_t n) {
  float acc[kRowLanes];
  for (int j = 0; j < kRowLanes; ++j) acc[j] = 0.0f;
  int64_t i = 0;
  for (; i + kRowLanes <= n; i += kRowLanes)
    for (int j = 0; j < kRowLanes; ++j) acc[j] += x[i + j];
  float s = 0.0f;
  for (int j = 0; j < kRowLanes; ++j) s += acc[j];
  for (; i < n; ++i) s += x[i];
  return s;
}

inline float row_sum_squares(const float* __restrict x, int64_t n) {
  float acc[kRowLanes];
  for (int j = 0; j < kRowLanes; ++j) acc[j] = 0.0f;
  int64_t i = 0;
  for (; i + kRowLanes <= n; i += kRowLanes)
    for (int j = 0; j < kRowLanes; ++j) acc[j] += x[i + j] * x[i + j];
  float s = 0.0f;
  for (int j = 0; j < kRowLanes; ++j) s += acc[j];
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

// exp_ of kernels_impl.h on a whole RowVec (same reduction and polynomial), so the
// softmax pass computes, stores and sums its exponentials in one vector loop.
inline RowVec exp_v(RowVec x) {
  const RowVec lo = RowVec{} - 87.33654f, hi = RowVec{} + 88.72283f;
  RowVec xc = x > lo ? x : lo;
  xc = xc < hi ? xc : hi;
  const RowVec n = (xc * 1.44269504089f + 12582912.0f) - 12582912.0f;
  RowVec r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  RowVec p = RowVec{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  RowVec y = p * r * r + r + 1.0f;
  const RowMask bits = (__builtin_convertvector(n, RowMask) + 126) << 23;
  const RowVec scale = reinterpret_cast<const RowVec&>(bits);
  y = y * scale * 2.0f;
  y = x > hi ? RowVec{} + INFINITY : y;
  y = x < lo ? RowVec{} : y;
  return x != x ? x : y;
}

void f32_softmax_rows(const float* x, float* y, int64_t rows, int64_t n, float scale, int log) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float m = row_max(xr, n);
    // The row is in L1 from here on: exponentials and their sum, then one scaling pass.
    RowVec acc = {}, v;
    int64_t i = 0;
    for (; i + kRowLanes <= n; i += kRowLanes) {
      v = load_v(xr + i);
      v = exp_v((v - m) * scale);
      acc += v;
      if (!log) store_v(yr + i, v);
    }
    float s = 0.0f;
    for (int j = 0; j < kRowLanes; ++j) s += acc[j];
    for (; i < n; ++i) {
      const float e = exp_((xr[i] - m) * scale);
      s += e;
      if (!log) yr[i] = e;
    }
    if (log) {
      const float ls = log_(s);
      for (int64_t k = 0; k < n; ++k) yr[k] = (xr[k] - m) * scale - ls;
    } else {
      const float inv = 1.0f / s;
      for (int64_t k = 0; k < n; ++k) yr[k] *= inv;
    }
  }
}

void f32_layernorm_rows(const float* x, float* y, int64_t rows, int64_t n, float eps,
                        const float* gamma, const float* beta) {
  const float inv_n = 1.0f / float(n);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float mean = row_sum(xr, n) * inv_n;
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] - mean;
    const float ss = row_sum_squares(yr, n);
    float rstd = 1.0f / std::sqrt(ss * inv_n + eps);
    if (ss == INFINITY) {  // |x| beyond ~1e19: square (x - mean) / max|x - mean| instead
      float a = 0.0f;
      for (int64_t i = 0; i < n; ++i) a = fmax_(a, yr[i] < 0 ? -yr[i] : yr[i]);
      float t = 0.0f;
      const float inv_a = 1.0f / a;
      for (int64_t i = 0; i < n; ++i) t += (yr[i] * inv_a) * (yr[i] * inv_a);
      rstd = inv_a / std::sqrt(t * inv_n + eps * inv_a * inv_a);
    }
    if (gamma && beta) {
      for (int64_t i = 0; i < n; ++i) yr[i] = yr[i] * rstd * gamma[i] + beta[i];
    } else if (gamma) {
      for (int64_t i = 0; i < n; ++i) yr[i] = yr[i] * rstd * gamma[i];
    } else if (beta) {
      for (int64_t i = 0; i < n; ++i) yr[i] = yr[i] * rstd + beta[i];
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] *= rstd;
    }
  }
}

// erf-GELU as x/2 erfc(-x / sqrt 2), which has no cancellation on either side: for
// x >= 0 it is x (1 - erfc(t)/2), for x < 0 x erfc(t)/2, with t = |x| / sqrt 2 and
//   erfc(t) = exp(-x^2 / 2) q P(q),  q = 1 / (1 + t / 2),
// P of degree 10 fitted (weighted least squares on the relative error) to
// erfc(t) exp(t^2) / q over all t >= 0: under 1.1e-8 relative in exact arithmetic,
// under 5e-7 in float. x^2 / 2 keeps the rounding error of x^2 (an FMA, or Dekker's
// product without one), which exp would otherwise scale by x^2 / 2.
inline float gelu_(float x) {
  const float ax = x < 0 ? -x : x;
  const float q = 1.0f / (1.0f + 0.35355339059327373f * ax);  // 1 / (1 + t/2)
  float p = 4.2367241024e-02f;
  p = p * q - 2.3092973053e-01f;
  p = p * q + 4.8632997112e-01f;
  p = p * q - 4.4715356587e-01f;
  p = p * q + 1.2721437715e-01f;
  p = p * q - 5.7287958349e-02f;
  p = p * q + 9.3015887044e-02f;
  p = p * q + 1.7537431880e-01f;
  p = p * q + 2.4688081045e-01f;
  p = p * q + 2.8209384361e-01f;
  p = p * q + 2.8209479490e-01f;
  const float s = x * x;
#ifdef __FMA__
  float e = std::fma(x, x, -s);
#else
  const float c = 4097.0f * x;  // Veltkamp split: x = hi + lo, hi with 12 bits
  const float hi = c - (c - x), lo = x - hi;
  float e = ((hi * hi - s) + 2.0f * hi * lo) + lo * lo;
#endif
  e = ax < 1e18f ? e : 0.0f;  // x^2 overflows there: no correction (inf - inf is NaN)
  const float ec = q * p * exp_(-0.5f * s) * (1.0f - 0.5f * e);  // erfc(|x| / sqrt 2)
  return x >= 0 ? x * (1.0f - 0.5f * ec) : 0.5f * x * ec;
}

void f32_gelu(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = gelu_(x[i]);
}

void f32_gelu_inplace(const float* x, float* y, int64_t n) {
  if (x == y) {
    for (int64_t i = 0; i < n; ++i) y[i] = gelu_(y[i]);
  } else {
    f32_gelu(x, y, n);
  }
}

}  // namespace

#define WALLE_ROWS_STR2(s) #s
#define WALLE_ROWS_STR(s) WALLE_ROWS_STR2(s)
const RowKernels& row_kernels() {
  static const RowKernels t = {WALLE_ROWS_STR(WALLE_ISA_NS), f32_softmax_rows, f32_layernorm_rows,
                               f32_gelu_inplace};
  return t;
}

}  // namespace WALLE_ISA_NS
}  // namespace walle
