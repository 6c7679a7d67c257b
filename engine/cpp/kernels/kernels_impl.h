// Portable elementwise / reduction / depthwise kernels, written as plain loops that GCC
// auto-vectorises. This header is included by kernels_{scalar,avx2,avx512}.cpp, each
// compiled with its own -m flags and inside its own namespace, so one source yields one
// kernel set per SIMD level. Transcendentals use branch-free polynomial forms (Cephes
// style) so they vectorise too; libm calls would not.
//
// Deliberately includes only C headers: no std:: templates may be instantiated here.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace walle {
namespace WALLE_ISA_NS {
namespace {

inline float fmax_(float a, float b) { return a > b ? a : b; }
inline float fmin_(float a, float b) { return a < b ? a : b; }
// numpy's maximum/minimum: a NaN on either side wins (fmax_ above drops a NaN in `a`).
inline float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }
inline float min_nan(float a, float b) { return (a < b || a != a) ? a : b; }
inline float as_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int32_t as_int(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }

// exp: Cody-Waite reduction x = n ln2 + r, degree-6 polynomial for e^r, 2^n via exponent
// bits. Scaling by 2^(n-1) * 2 keeps n = 128 representable near the overflow edge.
inline float exp_(float x) {
  float xc = fmin_(fmax_(x, -87.33654f), 88.72283f);
  float n = (xc * 1.44269504089f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  float scale = as_float((int32_t(n) + 126) << 23);
  y = y * scale * 2.0f;
  y = x > 88.72283f ? INFINITY : y;
  y = x < -87.33654f ? 0.0f : y;
  return x != x ? x : y;  // the clamp above would turn a NaN into a finite value
}

// log: split mantissa/exponent, polynomial on m - 1 with m in [sqrt(1/2), sqrt(2)).
inline float log_(float x) {
  int32_t bits = as_int(x);
  float e = float(((bits >> 23) & 0xff) - 126);
  float m = as_float((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
  bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  float r = m + y + 0.693359375f * e;
  r = x == INFINITY ? INFINITY : r;
  r = x == 0.0f ? -INFINITY : r;
  r = x < 0.0f ? NAN : r;
  r = x != x ? x : r;
  return r;
}

// tanh: odd polynomial near 0 (where 1 - 2/(e^2x + 1) cancels), exp form elsewhere;
// exactly +-1 from |x| = 9 on (float tanh rounds to 1 there), NaN stays NaN.
inline float tanh_(float x) {
  float ax = fmin_(x < 0 ? -x : x, 9.0f);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float big = 1.0f - 2.0f / (exp_(2.0f * ax) + 1.0f);
  big = ax >= 9.0f ? 1.0f : big;
  big = x < 0 ? -big : big;
  const float y = ax < 0.625f ? small : big;
  return x != x ? x : y;
}

// erf: Taylor-like minimax polynomial for |x| < 1 (keeps relative accuracy near 0),
// Abramowitz-Stegun 7.1.26 (abs. error 1.5e-7) beyond.
inline float erf_(float x) {
  float ax = x < 0 ? -x : x;
  float z = x * x;
  float p = 7.853861353153693e-5f;
  p = p * z - 8.010193625184903e-4f;
  p = p * z + 5.188327685732524e-3f;
  p = p * z - 2.685381193529856e-2f;
  p = p * z + 1.128358514861418e-1f;
  p = p * z - 3.761262582423300e-1f;
  p = p * z + 1.128379165726710e+0f;
  float small = x * p;
  float t = 1.0f / (1.0f + 0.3275911f * ax);
  float q = 1.061405429f;
  q = q * t - 1.453152027f;
  q = q * t + 1.421413741f;
  q = q * t - 0.284496736f;
  q = q * t + 0.254829592f;
  float big = 1.0f - q * t * exp_(-z);
  big = x < 0 ? -big : big;
  return ax < 1.0f ? small : big;
}

// log(1 + u) for u >= 0 without losing u when it is far below 1's ulp: with w = 1 + u
// rounded, log(w) * u / (w - 1) cancels the rounding of w (Goldberg's log1p).
inline float log1p_pos_(float u) {
  const float w = 1.0f + u;
  const float d = w - 1.0f;
  const float r = log_(w) * (u / (d == 0.0f ? 1.0f : d));
  return d == 0.0f ? u : (w == INFINITY ? w : r);
}

template <class F>
inline void map(const float* __restrict x, float* __restrict y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

void f32_unary(UnaryOp op, const float* x, float* y, int64_t n, float alpha, float beta) {
  switch (op) {
    case UnaryOp::abs: map(x, y, n, [](float v) { return v < 0 ? -v : v; }); break;
    case UnaryOp::neg: map(x, y, n, [](float v) { return -v; }); break;
    case UnaryOp::exp: map(x, y, n, [](float v) { return exp_(v); }); break;
    case UnaryOp::log: map(x, y, n, [](float v) { return log_(v); }); break;
    case UnaryOp::sqrt: map(x, y, n, [](float v) { return std::sqrt(v); }); break;
    case UnaryOp::rsqrt: map(x, y, n, [](float v) { return 1.0f / std::sqrt(v); }); break;
    case UnaryOp::reciprocal: map(x, y, n, [](float v) { return 1.0f / v; }); break;
    case UnaryOp::sigmoid:
      map(x, y, n, [](float v) { return 1.0f / (1.0f + exp_(-v)); });
      break;
    case UnaryOp::tanh: map(x, y, n, [](float v) { return tanh_(v); }); break;
    case UnaryOp::erf: map(x, y, n, [](float v) { return erf_(v); }); break;
    case UnaryOp::relu: map(x, y, n, [](float v) { return (v > 0 || v != v) ? v : 0.0f; }); break;
    case UnaryOp::floor: map(x, y, n, [](float v) { return std::floor(v); }); break;
    case UnaryOp::ceil: map(x, y, n, [](float v) { return std::ceil(v); }); break;
    case UnaryOp::round: map(x, y, n, [](float v) { return std::nearbyint(v); }); break;
    case UnaryOp::sin: map(x, y, n, [](float v) { return std::sin(v); }); break;
    case UnaryOp::cos: map(x, y, n, [](float v) { return std::cos(v); }); break;
    case UnaryOp::sign:
      map(x, y, n, [](float v) { return v > 0 ? 1.0f : (v < 0 ? -1.0f : (v == 0 ? 0.0f : v)); });
      break;
    case UnaryOp::softplus:
      // log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, and for very
      // negative x the result e^x keeps its relative accuracy (log(1 + tiny) would be 0).
      map(x, y, n, [](float v) {
        const float a = v < 0 ? -v : v;
        const float r = fmax_(v, 0.0f) + log1p_pos_(exp_(-a));
        return v != v ? v : r;
      });
      break;
    case UnaryOp::affine:
      map(x, y, n, [alpha, beta](float v) { return alpha * v + beta; });
      break;
    case UnaryOp::clip:
      map(x, y, n, [alpha, beta](float v) { return min_nan(max_nan(v, alpha), beta); });
      break;
    default: break;
  }
}

template <class F>
inline void zip(const float* __restrict a, int64_t sa, const float* __restrict b, int64_t sb,
                float* __restrict y, int64_t n, F f) {
  // Three specialisations so every inner loop is unit-stride and vectorises.
  if (sa && sb) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
  } else if (sb == 0) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], bv);
  } else {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(av, b[i]);
  }
}

void f32_binary(BinaryOp op, const float* a, int64_t sa, const float* b, int64_t sb, float* y,
                int64_t n) {
  switch (op) {
    case BinaryOp::add: zip(a, sa, b, sb, y, n, [](float p, float q) { return p + q; }); break;
    case BinaryOp::sub: zip(a, sa, b, sb, y, n, [](float p, float q) { return p - q; }); break;
    case BinaryOp::mul: zip(a, sa, b, sb, y, n, [](float p, float q) { return p * q; }); break;
    case BinaryOp::div: zip(a, sa, b, sb, y, n, [](float p, float q) { return p / q; }); break;
    case BinaryOp::max: zip(a, sa, b, sb, y, n, [](float p, float q) { return max_nan(p, q); }); break;
    case BinaryOp::min: zip(a, sa, b, sb, y, n, [](float p, float q) { return min_nan(p, q); }); break;
    case BinaryOp::pow:
      // Squares and square roots dominate real graphs (variance, norms): keep them exact
      // and vectorised instead of calling powf per element.
      if (sb == 0 && b[0] == 2.0f) {
        zip(a, sa, b, sb, y, n, [](float p, float) { return p * p; });
      } else if (sb == 0 && b[0] == 0.5f) {
        zip(a, sa, b, sb, y, n, [](float p, float) { return std::sqrt(p); });
      } else if (sb == 0 && b[0] == 1.0f) {
        zip(a, sa, b, sb, y, n, [](float p, float) { return p; });
      } else {
        zip(a, sa, b, sb, y, n, [](float p, float q) { return std::pow(p, q); });
      }
      break;
    case BinaryOp::mod:
      zip(a, sa, b, sb, y, n, [](float p, float q) { return std::fmod(p, q); });
      break;
    default: break;
  }
}

template <class F>
inline void zipc(const float* __restrict a, int64_t sa, const float* __restrict b, int64_t sb,
                 uint8_t* __restrict y, int64_t n, F f) {
  if (sa && sb) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
  } else if (sb == 0) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], bv);
  } else {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(av, b[i]);
  }
}

void f32_compare(BinaryOp op, const float* a, int64_t sa, const float* b, int64_t sb, uint8_t* y,
                 int64_t n) {
  switch (op) {
    case BinaryOp::eq: zipc(a, sa, b, sb, y, n, [](float p, float q) { return uint8_t(p == q); }); break;
    case BinaryOp::lt: zipc(a, sa, b, sb, y, n, [](float p, float q) { return uint8_t(p < q); }); break;
    case BinaryOp::gt: zipc(a, sa, b, sb, y, n, [](float p, float q) { return uint8_t(p > q); }); break;
    case BinaryOp::le: zipc(a, sa, b, sb, y, n, [](float p, float q) { return uint8_t(p <= q); }); break;
    case BinaryOp::ge: zipc(a, sa, b, sb, y, n, [](float p, float q) { return uint8_t(p >= q); }); break;
    default: break;
  }
}

void f32_select(const uint8_t* c, int64_t sc, const float* a, int64_t sa, const float* b,
                int64_t sb, float* y, int64_t n) {
  if (sc && sa && sb) {
    for (int64_t i = 0; i < n; ++i) y[i] = c[i] ? a[i] : b[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = c[i * sc] ? a[i * sa] : b[i * sb];
  }
}

// One contiguous row: 16 independent partial accumulators let the loop vectorise without
// -ffast-math reassociation; OP (0 sum, 1 max, 2 min, 3 prod) is a template argument so
// the loop body has no branch. NaN propagates through max/min like numpy and
// onnxruntime: a float check lane (v * 0 is NaN for NaN and inf) rides in the same pass,
// and only a row that trips it is scanned again.
template <int OP>
inline float reduce_row(const float* __restrict x, int64_t r) {
  const float init = OP == 1 ? -INFINITY : OP == 2 ? INFINITY : OP == 3 ? 1.0f : 0.0f;
  float acc[16], chk[16];
  for (int j = 0; j < 16; ++j) {
    acc[j] = init;
    chk[j] = 0.0f;
  }
  int64_t i = 0;
  for (; i + 16 <= r; i += 16)
    for (int j = 0; j < 16; ++j) {
      const float v = x[i + j];
      if (OP == 1) acc[j] = fmax_(acc[j], v);
      else if (OP == 2) acc[j] = fmin_(acc[j], v);
      else if (OP == 3) acc[j] *= v;
      else acc[j] += v;
      if (OP == 1 || OP == 2) chk[j] += v * 0.0f;
    }
  float t = init, c = 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (OP == 1) t = fmax_(t, acc[j]);
    else if (OP == 2) t = fmin_(t, acc[j]);
    else if (OP == 3) t *= acc[j];
    else t += acc[j];
    c += chk[j];
  }
  for (; i < r; ++i) {
    const float v = x[i];
    if (OP == 1) t = fmax_(t, v);
    else if (OP == 2) t = fmin_(t, v);
    else if (OP == 3) t *= v;
    else t += v;
    c += v * 0.0f;
  }
  if ((OP == 1 || OP == 2) && c != c)
    for (int64_t k = 0; k < r; ++k)
      if (x[k] != x[k]) return x[k];
  return t;
}

void f32_reduce(ReduceOp op, const float* x, float* y, int64_t outer, int64_t r, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    const float* xo = x + o * r * inner;
    float* yo = y + o * inner;
    if (inner == 1) {
      float t;
      switch (op) {
        case ReduceOp::max: t = reduce_row<1>(xo, r); break;
        case ReduceOp::min: t = reduce_row<2>(xo, r); break;
        case ReduceOp::prod: t = reduce_row<3>(xo, r); break;
        default: t = reduce_row<0>(xo, r); break;
      }
      yo[0] = op == ReduceOp::mean ? t / float(r) : t;
      continue;
    }
    for (int64_t j = 0; j < inner; ++j) yo[j] = xo[j];
    for (int64_t i = 1; i < r; ++i) {
      const float* xi = xo + i * inner;
      switch (op) {
        case ReduceOp::max: for (int64_t j = 0; j < inner; ++j) yo[j] = max_nan(yo[j], xi[j]); break;
        case ReduceOp::min: for (int64_t j = 0; j < inner; ++j) yo[j] = min_nan(yo[j], xi[j]); break;
        case ReduceOp::prod: for (int64_t j = 0; j < inner; ++j) yo[j] *= xi[j]; break;
        default: for (int64_t j = 0; j < inner; ++j) yo[j] += xi[j]; break;
      }
    }
    if (r == 0) {
      float init = op == ReduceOp::max ? -INFINITY
                 : op == ReduceOp::min ? INFINITY
                 : op == ReduceOp::prod ? 1.0f : 0.0f;
      for (int64_t j = 0; j < inner; ++j) yo[j] = init;
    }
    if (op == ReduceOp::mean) {
      const float s = 1.0f / float(r);
      for (int64_t j = 0; j < inner; ++j) yo[j] *= s;
    }
  }
}

void f32_bias_clamp(float* y, int64_t ldy, int64_t m, int64_t n, const float* bias_m,
                    const float* bias_n, float lo, float hi) {
  for (int64_t i = 0; i < m; ++i) {
    float* yi = y + i * ldy;
    const float bm = bias_m ? bias_m[i] : 0.0f;
    if (bias_n) {
      for (int64_t j = 0; j < n; ++j) yi[j] = fmin_(fmax_(yi[j] + bm + bias_n[j], lo), hi);
    } else {
      for (int64_t j = 0; j < n; ++j) yi[j] = fmin_(fmax_(yi[j] + bm, lo), hi);
    }
  }
}

// Direct depthwise convolution. Each channel is first copied into a zero-padded scratch
// image, so every output takes one branch-free loop over output columns with the result
// accumulated in registers over all taps and stored once; the compiler vectorises it
// (fully unrolled for the 3x3 undilated filters of MobileNet-style models).
template <int S>
inline void dw3x3_row(const float* __restrict r0, const float* __restrict r1,
                      const float* __restrict r2, const float* w, float b, float lo, float hi,
                      float* __restrict y, int64_t n) {
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6],
              w7 = w[7], w8 = w[8];
  for (int64_t ox = 0; ox < n; ++ox) {
    const int64_t i = ox * S;
    float acc = b + w0 * r0[i] + w1 * r0[i + 1] + w2 * r0[i + 2];
    acc += w3 * r1[i] + w4 * r1[i + 1] + w5 * r1[i + 2];
    acc += w6 * r2[i] + w7 * r2[i + 1] + w8 * r2[i + 2];
    y[ox] = fmin_(fmax_(acc, lo), hi);
  }
}

void f32_dwconv(const DwConvArgs& a) {
  const int64_t hp = dwconv_padded_h(a), wp = dwconv_padded_w(a);
  const bool k3 = a.kh == 3 && a.kw == 3 && a.dh == 1 && a.dw == 1;
  float* pad = a.scratch;
  for (int64_t i = 0; i < hp * wp; ++i) pad[i] = 0.0f;  // borders stay zero for all channels
  for (int64_t c = a.c0; c < a.c1; ++c) {
    const float* xc = a.x + c * a.h * a.w_in;
    for (int64_t y = 0; y < a.h; ++y)
      std::memcpy(pad + (y + a.ph) * wp + a.pw, xc + y * a.w_in, sizeof(float) * a.w_in);
    const float* wc = a.w + c * a.kh * a.kw;
    float* yc = a.y + c * a.oh * a.ow;
    const float b = a.bias ? a.bias[c] : 0.0f;
    for (int64_t oy = 0; oy < a.oh; ++oy) {
      float* yr = yc + oy * a.ow;
      const float* r0 = pad + oy * a.sh * wp;
      if (k3 && a.sw == 1) {
        dw3x3_row<1>(r0, r0 + wp, r0 + 2 * wp, wc, b, a.lo, a.hi, yr, a.ow);
      } else if (k3 && a.sw == 2) {
        dw3x3_row<2>(r0, r0 + wp, r0 + 2 * wp, wc, b, a.lo, a.hi, yr, a.ow);
      } else {
        for (int64_t ox = 0; ox < a.ow; ++ox) {
          float acc = b;
          for (int64_t ky = 0; ky < a.kh; ++ky) {
            const float* xr = r0 + ky * a.dh * wp + ox * a.sw;
            for (int64_t kx = 0; kx < a.kw; ++kx) acc += wc[ky * a.kw + kx] * xr[kx * a.dw];
          }
          yr[ox] = fmin_(fmax_(acc, a.lo), a.hi);
        }
      }
    }
  }
}

}  // namespace
}  // namespace WALLE_ISA_NS
}  // namespace walle
