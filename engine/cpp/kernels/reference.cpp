// The oracle. Every atomic op written the obvious way: one multi-index loop per output
// element, double accumulation, libm for transcendentals. It defines behaviour; every
// fast kernel is tested against it (engine/tests/test_atomic.py). Speed is a non-goal.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "atomic.h"

namespace walle {
namespace ref {
namespace {

double load(const View& v, int64_t i) {
  switch (v.dtype) {
    case DType::f32: return v.ptr<float>()[i];
    case DType::i32: return v.ptr<int32_t>()[i];
    case DType::i64: return double(v.ptr<int64_t>()[i]);
    case DType::b8: return v.ptr<uint8_t>()[i] ? 1.0 : 0.0;
    case DType::u8: return v.ptr<uint8_t>()[i];
  }
  return 0;
}

void store(const View& v, int64_t i, double x) {
  switch (v.dtype) {
    case DType::f32: v.ptr<float>()[i] = float(x); break;
    case DType::i32: v.ptr<int32_t>()[i] = int_from_float<int32_t>(x); break;
    case DType::i64: v.ptr<int64_t>()[i] = int_from_float<int64_t>(x); break;
    case DType::b8: v.ptr<uint8_t>()[i] = x != 0; break;
    case DType::u8: v.ptr<uint8_t>()[i] = u8_from_float(x); break;
  }
}

// Offset of output multi-index `idx` in a tensor of shape `s` broadcast to `out`.
int64_t broadcast_offset(const Shape& s, const Shape& out, const std::vector<int64_t>& idx) {
  int64_t off = 0, stride = 1;
  const int r = int(s.size()), ro = int(out.size());
  for (int d = r - 1; d >= 0; --d) {
    const int64_t i = s[d] == 1 ? 0 : idx[ro - r + d];
    off += i * stride;
    stride *= s[d];
  }
  return off;
}

bool next_index(std::vector<int64_t>& idx, const Shape& s) {
  for (int d = int(s.size()) - 1; d >= 0; --d) {
    if (++idx[d] < s[d]) return true;
    idx[d] = 0;
  }
  return false;
}

double unary_scalar(UnaryOp op, double x, double a, double b) {
  switch (op) {
    case UnaryOp::abs: return std::fabs(x);
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::rsqrt: return 1.0 / std::sqrt(x);
    case UnaryOp::reciprocal: return 1.0 / x;
    case UnaryOp::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case UnaryOp::tanh: return std::tanh(x);
    case UnaryOp::erf: return std::erf(x);
    case UnaryOp::relu: return (x > 0 || x != x) ? x : 0.0;  // NaN stays, like numpy
    case UnaryOp::floor: return std::floor(x);
    case UnaryOp::ceil: return std::ceil(x);
    case UnaryOp::round: return std::nearbyint(x);
    case UnaryOp::sin: return std::sin(x);
    case UnaryOp::cos: return std::cos(x);
    case UnaryOp::sign: return x > 0 ? 1.0 : (x < 0 ? -1.0 : (x == 0 ? 0.0 : x));
    case UnaryOp::softplus: return std::fmax(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
    case UnaryOp::affine: return a * x + b;
    case UnaryOp::clip: return x != x ? x : std::fmin(std::fmax(x, a), b);
    default: return x;
  }
}

double binary_scalar(BinaryOp op, double x, double y, bool integer) {
  switch (op) {
    case BinaryOp::add: return x + y;
    case BinaryOp::sub: return x - y;
    case BinaryOp::mul: return x * y;
    case BinaryOp::div:
      if (integer)
        return y == 0 ? 0 : y == -1 ? -x
                                    : double(int_from_float<int64_t>(x) / int_from_float<int64_t>(y));
      return x / y;
    case BinaryOp::pow: return std::pow(x, y);
    // A NaN on either side wins, as in numpy (std::fmax would drop it).
    case BinaryOp::max: return (x != x || y != y) ? NAN : std::fmax(x, y);
    case BinaryOp::min: return (x != x || y != y) ? NAN : std::fmin(x, y);
    case BinaryOp::eq: return x == y;
    case BinaryOp::lt: return x < y;
    case BinaryOp::gt: return x > y;
    case BinaryOp::le: return x <= y;
    case BinaryOp::ge: return x >= y;
    case BinaryOp::logical_and: return (x != 0) && (y != 0);
    case BinaryOp::logical_or: return (x != 0) || (y != 0);
    case BinaryOp::logical_xor: return (x != 0) != (y != 0);
    case BinaryOp::mod:
      if (integer) {
        // ONNX Mod with fmod=0: the result takes the sign of the divisor (Python %).
        int64_t p = int_from_float<int64_t>(x), q = int_from_float<int64_t>(y);
        if (q == 0 || q == -1) return 0;
        int64_t r = p % q;
        if (r != 0 && ((r < 0) != (q < 0))) r += q;
        return double(r);
      }
      return std::fmod(x, y);
    default: return 0;
  }
}

}  // namespace

void unary(UnaryOp op, const View& x, const View& y, float alpha, float beta) {
  if (x.dtype == DType::u8) u8_unsupported("unary op");
  for (int64_t i = 0; i < x.numel(); ++i) store(y, i, unary_scalar(op, load(x, i), alpha, beta));
}

void binary(BinaryOp op, const View& a, const View& b, const View& y) {
  if (a.dtype == DType::u8 || b.dtype == DType::u8) u8_unsupported("binary op");
  if (y.numel() == 0) return;
  std::vector<int64_t> idx(y.shape.size(), 0);
  const bool integer = a.dtype == DType::i32 || a.dtype == DType::i64;
  int64_t i = 0;
  do {
    const double p = load(a, broadcast_offset(a.shape, y.shape, idx));
    const double q = load(b, broadcast_offset(b.shape, y.shape, idx));
    store(y, i++, binary_scalar(op, p, q, integer));
  } while (next_index(idx, y.shape));
}

void select(const View& c, const View& a, const View& b, const View& y) {
  if (c.dtype != DType::b8 || a.dtype != b.dtype || a.dtype != y.dtype)
    throw Error("select needs a bool condition and operands of the output's dtype");
  if (y.numel() == 0) return;
  std::vector<int64_t> idx(y.shape.size(), 0);
  int64_t i = 0;
  do {
    const bool k = load(c, broadcast_offset(c.shape, y.shape, idx)) != 0;
    const View& src = k ? a : b;
    store(y, i++, load(src, broadcast_offset(src.shape, y.shape, idx)));
  } while (next_index(idx, y.shape));
}

void cast(const View& x, const View& y) {
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (x.dtype == DType::i64 && y.dtype == DType::u8) {  // modular; a double loses low bits
      y.ptr<uint8_t>()[i] = uint8_t(x.ptr<int64_t>()[i]);
      continue;
    }
    double v = load(x, i);
    if (y.dtype != DType::f32 && y.dtype != DType::b8) v = std::trunc(v);
    store(y, i, v);
  }
}

void reduce(ReduceOp op, const View& x, const std::vector<int64_t>& axes_in, const View& y) {
  if (x.dtype == DType::u8) u8_unsupported("reduce");
  const auto axes = normalize_axes(axes_in, x.rank());
  if (x.rank() == 0) {  // a 0-d tensor reduces to itself
    std::memcpy(y.data, x.data, x.nbytes());
    return;
  }
  std::vector<bool> red(x.shape.size(), false);
  for (auto a : axes) red[a] = true;
  const int64_t n_out = y.numel();
  std::vector<double> acc(n_out);
  const double init = op == ReduceOp::max   ? -INFINITY
                      : op == ReduceOp::min ? INFINITY
                      : op == ReduceOp::prod ? 1.0 : 0.0;
  for (auto& v : acc) v = init;
  std::vector<int64_t> cnt(n_out, 0);
  if (x.numel() > 0) {
    std::vector<int64_t> idx(x.shape.size(), 0);
    int64_t i = 0;
    do {
      int64_t o = 0;
      for (size_t d = 0; d < x.shape.size(); ++d)
        if (!red[d]) o = o * x.shape[d] + idx[d];
      const double v = load(x, i++);
      switch (op) {
        case ReduceOp::max: acc[o] = (v != v || acc[o] != acc[o]) ? NAN : std::fmax(acc[o], v); break;
        case ReduceOp::min: acc[o] = (v != v || acc[o] != acc[o]) ? NAN : std::fmin(acc[o], v); break;
        case ReduceOp::prod: acc[o] *= v; break;
        default: acc[o] += v; break;
      }
      ++cnt[o];
    } while (next_index(idx, x.shape));
  }
  for (int64_t o = 0; o < n_out; ++o)
    store(y, o, op == ReduceOp::mean ? acc[o] / double(cnt[o]) : acc[o]);
}

void argmax(const View& x, int64_t axis, bool select_last, const View& y) {
  axis = normalize_axes({axis}, x.rank())[0];
  if (x.rank() == 0) {
    store(y, 0, 0.0);
    return;
  }
  if (x.shape[axis] == 0 && y.numel() > 0) throw Error("argmax of an empty axis");
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int d = int(axis) + 1; d < x.rank(); ++d) inner *= x.shape[d];
  const int64_t r = x.shape[axis];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      int64_t best = 0;
      double bv = load(x, o * r * inner + j);
      for (int64_t k = 1; k < r; ++k) {
        double v = load(x, (o * r + k) * inner + j);
        if (v > bv || (select_last && v == bv)) { bv = v; best = k; }
      }
      store(y, o * inner + j, double(best));
    }
}

void matmul(const View& a, bool trans_a, const View& b, bool trans_b, const View& y,
            const MatmulEpilogue& ep) {
  if (a.dtype != DType::f32 || b.dtype != DType::f32) throw Error("matmul needs float32 tensors");
  const int ra = a.rank(), rb = b.rank();
  const int64_t M = trans_a ? a.shape[ra - 1] : a.shape[ra - 2];
  const int64_t K = trans_a ? a.shape[ra - 2] : a.shape[ra - 1];
  const int64_t N = trans_b ? b.shape[rb - 2] : b.shape[rb - 1];
  Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch = broadcast_shapes(ba, bb);
  std::vector<int64_t> idx(batch.size(), 0);
  int64_t bi = 0;
  do {
    const int64_t oa = broadcast_offset(ba, batch, idx) * M * K;
    const int64_t ob = broadcast_offset(bb, batch, idx) * K * N;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double p = a.ptr<float>()[oa + (trans_a ? k * M + m : m * K + k)];
          const double q = b.ptr<float>()[ob + (trans_b ? n * K + k : k * N + n)];
          s += p * q;
        }
        if (ep.bias_axis == 'm') s += ep.bias[m];
        if (ep.bias_axis == 'n') s += ep.bias[n];
        s = std::fmin(std::fmax(s, double(ep.lo)), double(ep.hi));
        y.ptr<float>()[(bi * M + m) * N + n] = float(s);
      }
    ++bi;
  } while (next_index(idx, batch));
}

void raster(const RasterSpec& spec, const std::vector<View>& inputs, const View& y) {
  const size_t es = dtype_size(y.dtype);
  char* dst = static_cast<char*>(y.data);
  if (spec.has_fill) {
    Tensor one = Tensor::empty(y.dtype, {1});
    store(one, 0, spec.fill);
    for (int64_t i = 0; i < y.numel(); ++i) std::memcpy(dst + i * es, one.data, es);
  }
  for (const Region& r : spec.regions) {
    if (r.count() == 0) continue;
    const char* src = static_cast<const char*>(inputs[r.input].data);
    Shape size(r.size, r.size + r.ndim);
    std::vector<int64_t> idx(r.ndim, 0);
    do {
      int64_t so = r.src_offset, d = r.dst_offset;
      for (int k = 0; k < r.ndim; ++k) {
        so += idx[k] * r.src_stride[k];
        d += idx[k] * r.dst_stride[k];
      }
      std::memcpy(dst + d * es, src + so * es, es);
    } while (next_index(idx, size));
  }
}

}  // namespace ref
}  // namespace walle

#include "nchwc.h"

namespace walle::ref {

void conv2d(const View& x, const View& w, const View& bias, const View& residual, int64_t sh,
            int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t group, float lo,
            float hi, const View& y) {
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t O = w.shape[0], Cg = w.shape[1], KH = w.shape[2], KW = w.shape[3];
  const int64_t OH = y.shape[2], OW = y.shape[3], Og = O / group;
  const float* X = x.ptr<float>();
  const float* Wt = w.ptr<float>();
  float* Y = y.ptr<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < OH; ++i)
        for (int64_t j = 0; j < OW; ++j) {
          double s = bias.data ? bias.ptr<float>()[o] : 0.0;
          const int64_t g = o / Og;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t p = 0; p < KH; ++p)
              for (int64_t q = 0; q < KW; ++q) {
                const int64_t yy = i * sh - ph + p * dh, xx = j * sw - pw + q * dw;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                s += double(X[((n * C + g * Cg + c) * H + yy) * W + xx]) *
                     Wt[((o * Cg + c) * KH + p) * KW + q];
              }
          const int64_t yi = ((n * O + o) * OH + i) * OW + j;
          if (residual.data) s += residual.ptr<float>()[yi];
          Y[yi] = float(std::min<double>(std::max<double>(s, lo), hi));
        }
}

}  // namespace walle::ref
