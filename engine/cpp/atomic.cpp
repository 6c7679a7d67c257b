// Fast atomic ops: shape bookkeeping (broadcast plans, axis merging, batching) around the
// SIMD kernels of a KernelTable, with work split across the thread pool.
#include <algorithm>
#include <cstring>
#include <map>
#include <type_traits>

#include "atomic.h"
#include "gemm.h"
#include "threadpool.h"

namespace walle {

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      throw Error("shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int rank) {
  std::vector<int64_t> out;
  for (auto a : axes) {
    const int64_t n = a < 0 ? a + rank : a;
    if (n < 0 || n >= std::max(rank, 1))
      throw Error("axis " + std::to_string(a) + " out of range for rank " + std::to_string(rank));
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& axes_in, bool keepdims) {
  auto axes = normalize_axes(axes_in, int(s.size()));
  Shape out;
  for (size_t d = 0; d < s.size(); ++d) {
    const bool r = std::find(axes.begin(), axes.end(), int64_t(d)) != axes.end();
    if (!r) out.push_back(s[d]);
    else if (keepdims) out.push_back(1);
  }
  return out;
}

namespace {

using Plan = BroadcastPlan;

Plan make_plan(const Shape& out, const std::vector<const Shape*>& ins) {
  const size_t r = out.size();
  std::vector<Shape> st(ins.size(), Shape(r, 0));
  for (size_t k = 0; k < ins.size(); ++k) {
    const Shape& s = *ins[k];
    int64_t stride = 1;
    for (int d = int(r) - 1; d >= 0; --d) {
      const int sd = d - int(r - s.size());
      const int64_t size = sd >= 0 ? s[sd] : 1;
      st[k][d] = (size == 1) ? 0 : stride;
      stride *= size;
    }
  }
  Plan p;
  for (size_t d = 0; d < r; ++d) {
    if (out[d] == 1) continue;
    if (!p.dims.empty()) {
      bool merge = true;
      for (size_t k = 0; k < ins.size(); ++k)
        if (p.strides[k].back() != st[k][d] * out[d]) merge = false;
      if (merge) {
        p.dims.back() *= out[d];
        for (size_t k = 0; k < ins.size(); ++k) p.strides[k].back() = st[k][d];
        continue;
      }
    }
    p.dims.push_back(out[d]);
    if (p.strides.empty()) p.strides.resize(ins.size());
    for (size_t k = 0; k < ins.size(); ++k) p.strides[k].push_back(st[k][d]);
  }
  if (p.dims.empty()) {
    p.dims.push_back(1);
    p.strides.assign(ins.size(), Shape{1});
  }
  // A broadcast input whose innermost stride is not 0/1 cannot happen for contiguous
  // inputs: the innermost non-1 dim has stride 1 unless broadcast (0).
  return p;
}

// Runs fn(offsets[k], out_offset, start, len) over the plan, split into tasks.
template <class F>
void run_plan(const Plan& p, size_t n_in, F&& fn) {
  const int64_t rows = p.rows(), inner = p.inner();
  const int64_t total = rows * inner;
  const int T = num_threads();
  int64_t blocks = 1;
  if (T > 1 && total >= (1 << 16) && rows < 4 * T) blocks = std::min<int64_t>(4 * T, inner / 1024 + 1);
  const int64_t block = (inner + blocks - 1) / blocks;
  auto task = [&](int64_t t) {
    const int64_t row = t / blocks, b = t % blocks;
    int64_t off[4] = {0, 0, 0, 0};
    int64_t rem = row;
    for (int d = int(p.dims.size()) - 2; d >= 0; --d) {
      const int64_t i = rem % p.dims[d];
      rem /= p.dims[d];
      for (size_t k = 0; k < n_in; ++k) off[k] += i * p.strides[k][d];
    }
    const int64_t start = b * block, len = std::min(inner, start + block) - start;
    if (len > 0) fn(off, row * inner, start, len);
  };
  const int64_t tasks = rows * blocks;
  if (T > 1 && total >= (1 << 16)) {
    // Coarsen: one task per chunk of rows so tiny rows do not thrash the pool.
    const int64_t chunk = std::max<int64_t>(1, tasks / (4 * T));
    parallel_for((tasks + chunk - 1) / chunk, [&](int64_t c) {
      for (int64_t t = c * chunk; t < std::min(tasks, (c + 1) * chunk); ++t) task(t);
    });
  } else {
    for (int64_t t = 0; t < tasks; ++t) task(t);
  }
}

template <class T, class F>
void binary_generic(const View& a, const View& b, const View& y, F f) {
  const Plan p = make_plan(y.shape, {&a.shape, &b.shape});
  const int64_t sa = p.strides[0].back(), sb = p.strides[1].back();
  const T* A = a.ptr<T>();
  const T* B = b.ptr<T>();
  auto* Y = static_cast<decltype(f(T(), T()))*>(y.data);
  run_plan(p, 2, [&](const int64_t* off, int64_t yo, int64_t s, int64_t n) {
    for (int64_t i = s; i < s + n; ++i) Y[yo + i] = f(A[off[0] + i * sa], B[off[1] + i * sb]);
  });
}

template <class T>
void binary_int(BinaryOp op, const View& a, const View& b, const View& y) {
  using U = std::make_unsigned_t<T>;
  switch (op) {
    // Integer add, sub and mul wrap like numpy: computed unsigned, where overflow is
    // defined (signed overflow is undefined behaviour the optimiser may exploit).
    case BinaryOp::add: binary_generic<T>(a, b, y, [](T p, T q) { return T(U(p) + U(q)); }); break;
    case BinaryOp::sub: binary_generic<T>(a, b, y, [](T p, T q) { return T(U(p) - U(q)); }); break;
    case BinaryOp::mul: binary_generic<T>(a, b, y, [](T p, T q) { return T(U(p) * U(q)); }); break;
    case BinaryOp::div:
      // x / 0 is 0 (ONNX leaves it undefined); MIN / -1 wraps like numpy instead of
      // raising SIGFPE, which would kill every task in the process.
      binary_generic<T>(a, b, y, [](T p, T q) {
        using U = std::make_unsigned_t<T>;
        return T(q == 0 ? 0 : q == -1 ? T(U(0) - U(p)) : p / q);
      });
      break;
    case BinaryOp::max: binary_generic<T>(a, b, y, [](T p, T q) { return std::max(p, q); }); break;
    case BinaryOp::min: binary_generic<T>(a, b, y, [](T p, T q) { return std::min(p, q); }); break;
    case BinaryOp::mod:
      binary_generic<T>(a, b, y, [](T p, T q) {
        if (q == 0 || q == -1) return T(0);  // MIN % -1 raises SIGFPE in hardware
        T r = p % q;
        return T((r != 0 && ((r < 0) != (q < 0))) ? r + q : r);
      });
      break;
    case BinaryOp::pow:
      binary_generic<T>(a, b, y, [](T p, T q) { return T(std::pow(double(p), double(q))); });
      break;
    case BinaryOp::eq: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p == q); }); break;
    case BinaryOp::lt: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p < q); }); break;
    case BinaryOp::gt: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p > q); }); break;
    case BinaryOp::le: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p <= q); }); break;
    case BinaryOp::ge: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p >= q); }); break;
    case BinaryOp::logical_and: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p && q); }); break;
    case BinaryOp::logical_or: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(p || q); }); break;
    case BinaryOp::logical_xor: binary_generic<T>(a, b, y, [](T p, T q) { return uint8_t(!p != !q); }); break;
    default: throw Error("binary op not supported for integer tensors");
  }
}

template <class T>
void unary_int(UnaryOp op, const View& x, const View& y, float alpha, float beta) {
  const T* X = x.ptr<T>();
  T* Y = y.ptr<T>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) {
    const T v = X[i];
    switch (op) {
      // abs(MIN) and -MIN wrap to MIN, like numpy.
      case UnaryOp::abs: Y[i] = v < 0 ? T(std::make_unsigned_t<T>(0) - std::make_unsigned_t<T>(v)) : v; break;
      case UnaryOp::neg: Y[i] = T(std::make_unsigned_t<T>(0) - std::make_unsigned_t<T>(v)); break;
      case UnaryOp::relu: Y[i] = v > 0 ? v : T(0); break;
      case UnaryOp::sign: Y[i] = T(v > 0 ? 1 : (v < 0 ? -1 : 0)); break;
      case UnaryOp::clip: Y[i] = T(std::min<double>(std::max<double>(v, alpha), beta)); break;
      case UnaryOp::affine: Y[i] = T(alpha * double(v) + beta); break;
      case UnaryOp::floor: case UnaryOp::ceil: case UnaryOp::round: Y[i] = v; break;
      default: throw Error("unary op not supported for integer tensors");
    }
  }
}

template <class S, class D, class F>
void cast_loop(const View& x, const View& y, F f) {
  const S* X = x.ptr<S>();
  D* Y = y.ptr<D>();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) Y[i] = f(X[i]);
}

template <class S>
void cast_from(const View& x, const View& y) {
  switch (y.dtype) {
    case DType::f32: return cast_loop<S, float>(x, y, [](S v) { return float(v); });
    case DType::i32: return cast_loop<S, int32_t>(x, y, [](S v) { return int32_t(v); });
    case DType::i64: return cast_loop<S, int64_t>(x, y, [](S v) { return int64_t(v); });
    case DType::b8: return cast_loop<S, uint8_t>(x, y, [](S v) { return uint8_t(v != 0); });
    case DType::u8:
      return cast_loop<S, uint8_t>(x, y, [](S v) {
        if constexpr (std::is_floating_point_v<S>) return u8_from_float(v);
        else return uint8_t(v);  // modular, like numpy
      });
  }
}

template <class T>
void select_generic(const View& c, const View& a, const View& b, const View& y) {
  const Plan p = make_plan(y.shape, {&c.shape, &a.shape, &b.shape});
  const uint8_t* C = c.ptr<uint8_t>();
  const T* A = a.ptr<T>();
  const T* B = b.ptr<T>();
  T* Y = y.ptr<T>();
  const int64_t sc = p.strides[0].back(), sa = p.strides[1].back(), sb = p.strides[2].back();
  run_plan(p, 3, [&](const int64_t* off, int64_t yo, int64_t s, int64_t n) {
    for (int64_t i = s; i < s + n; ++i)
      Y[yo + i] = C[off[0] + i * sc] ? A[off[1] + i * sa] : B[off[2] + i * sb];
  });
}

template <class T>
void argmax_loop(const View& x, int64_t outer, int64_t r, int64_t inner, bool last, int64_t* y) {
  const T* X = x.ptr<T>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      int64_t best = 0;
      T bv = X[o * r * inner + j];
      for (int64_t k = 1; k < r; ++k) {
        const T v = X[(o * r + k) * inner + j];
        if (v > bv || (last && v == bv)) { bv = v; best = k; }
      }
      y[o * inner + j] = best;
    }
}

}  // namespace

namespace fast {

void unary(const KernelTable& kt, UnaryOp op, const View& x, const View& y, float alpha,
           float beta) {
  if (x.dtype == DType::u8) u8_unsupported("unary op");
  if (x.dtype == DType::i32) return unary_int<int32_t>(op, x, y, alpha, beta);
  if (x.dtype == DType::i64) return unary_int<int64_t>(op, x, y, alpha, beta);
  if (x.dtype != DType::f32) throw Error("unary op needs a numeric tensor");
  unary_f32(kt, op, x.ptr<float>(), y.ptr<float>(), x.numel(), alpha, beta);
}

void unary_f32(const KernelTable& kt, UnaryOp op, const float* X, float* Y, int64_t n,
               float alpha, float beta) {
  const int T = num_threads();
  if (T > 1 && n >= (1 << 16)) {
    const int64_t chunks = 4 * T, per = ((n + chunks - 1) / chunks + 15) / 16 * 16;
    parallel_for((n + per - 1) / per, [&](int64_t i) {
      const int64_t s = i * per;
      kt.f32_unary(op, X + s, Y + s, std::min(n, s + per) - s, alpha, beta);
    });
  } else {
    kt.f32_unary(op, X, Y, n, alpha, beta);
  }
}

void binary(const KernelTable& kt, BinaryOp op, const View& a, const View& b, const View& y) {
  if (a.dtype != b.dtype) throw Error("binary op on mixed dtypes");
  switch (a.dtype) {
    case DType::i32: return binary_int<int32_t>(op, a, b, y);
    case DType::i64: return binary_int<int64_t>(op, a, b, y);
    case DType::b8: return binary_int<uint8_t>(op, a, b, y);
    case DType::u8: u8_unsupported("binary op");
    case DType::f32: break;
  }
  if (is_logical(op)) throw Error("logical ops need bool tensors");
  const Plan p = make_plan(y.shape, {&a.shape, &b.shape});
  if (!is_compare(op)) return binary_f32(kt, op, p, a.ptr<float>(), b.ptr<float>(), y.ptr<float>());
  const int64_t sa = p.strides[0].back(), sb = p.strides[1].back();
  const float* A = a.ptr<float>();
  const float* B = b.ptr<float>();
  if (is_compare(op)) {
    uint8_t* Y = y.ptr<uint8_t>();
    run_plan(p, 2, [&](const int64_t* off, int64_t yo, int64_t s, int64_t n) {
      kt.f32_compare(op, A + off[0] + s * sa, sa, B + off[1] + s * sb, sb, Y + yo + s, n);
    });
    return;
  }
}

BroadcastPlan plan_broadcast(const Shape& y, const Shape& a, const Shape& b) {
  return make_plan(y, {&a, &b});
}

void binary_f32(const KernelTable& kt, BinaryOp op, const BroadcastPlan& p, const float* A,
                const float* B, float* Y) {
  const int64_t sa = p.strides[0].back(), sb = p.strides[1].back();
  run_plan(p, 2, [&](const int64_t* off, int64_t yo, int64_t s, int64_t n) {
    kt.f32_binary(op, A + off[0] + s * sa, sa, B + off[1] + s * sb, sb, Y + yo + s, n);
  });
}

void select(const KernelTable& kt, const View& c, const View& a, const View& b, const View& y) {
  switch (a.dtype) {
    case DType::i32: return select_generic<int32_t>(c, a, b, y);
    case DType::i64: return select_generic<int64_t>(c, a, b, y);
    case DType::b8:
    case DType::u8: return select_generic<uint8_t>(c, a, b, y);
    case DType::f32: break;
  }
  const Plan p = make_plan(y.shape, {&c.shape, &a.shape, &b.shape});
  const int64_t sc = p.strides[0].back(), sa = p.strides[1].back(), sb = p.strides[2].back();
  run_plan(p, 3, [&](const int64_t* off, int64_t yo, int64_t s, int64_t n) {
    kt.f32_select(c.ptr<uint8_t>() + off[0] + s * sc, sc, a.ptr<float>() + off[1] + s * sa, sa,
                  b.ptr<float>() + off[2] + s * sb, sb, y.ptr<float>() + yo + s, n);
  });
}

void cast(const View& x, const View& y) {
  if (x.dtype == y.dtype) {
    if (x.data != y.data) std::memcpy(y.data, x.data, x.nbytes());
    return;
  }
  switch (x.dtype) {
    case DType::f32: cast_from<float>(x, y); break;
    case DType::i32: cast_from<int32_t>(x, y); break;
    case DType::i64: cast_from<int64_t>(x, y); break;
    case DType::b8: cast_from<uint8_t>(x, y); break;  // bool is stored as 0/1 bytes
    case DType::u8: cast_from<uint8_t>(x, y); break;
  }
}

void reduce(const KernelTable& kt, ReduceOp op, const View& x, const std::vector<int64_t>& axes_in,
            const View& y) {
  if (x.dtype == DType::u8) u8_unsupported("reduce");
  if (x.dtype != DType::f32) {
    ref::reduce(op, x, axes_in, y);  // integer reductions only occur on tiny shape tensors
    return;
  }
  auto axes = normalize_axes(axes_in, x.rank());
  if (axes.empty() || x.numel() == 0) {
    if (x.numel() == y.numel()) std::memcpy(y.data, x.data, x.nbytes());
    else ref::reduce(op, x, axes, y);
    return;
  }
  // Group consecutive axes; reduce one group at a time, innermost first.
  std::vector<std::pair<int64_t, int64_t>> groups;  // [first, last]
  for (auto a : axes) {
    if (!groups.empty() && groups.back().second + 1 == a) groups.back().second = a;
    else groups.push_back({a, a});
  }
  Shape cur = x.shape;
  const float* src = x.ptr<float>();
  Tensor tmp[2];
  for (size_t gi = groups.size(); gi-- > 0;) {
    const auto [f, l] = groups[gi];
    int64_t outer = 1, r = 1, inner = 1;
    for (int64_t d = 0; d < f; ++d) outer *= cur[d];
    for (int64_t d = f; d <= l; ++d) r *= cur[d];
    for (size_t d = l + 1; d < cur.size(); ++d) inner *= cur[d];
    for (int64_t d = f; d <= l; ++d) cur[d] = 1;
    float* dst;
    if (gi == 0) {
      dst = y.ptr<float>();
    } else {
      tmp[gi & 1] = Tensor::empty(DType::f32, {outer * inner});
      dst = tmp[gi & 1].ptr<float>();
    }
    const int T = num_threads();
    if (T > 1 && outer >= 2 * T && outer * r * inner >= (1 << 16)) {
      const int64_t per = (outer + 4 * T - 1) / (4 * T);
      parallel_for((outer + per - 1) / per, [&](int64_t i) {
        const int64_t o0 = i * per, o1 = std::min(outer, o0 + per);
        kt.f32_reduce(op, src + o0 * r * inner, dst + o0 * inner, o1 - o0, r, inner);
      });
    } else {
      kt.f32_reduce(op, src, dst, outer, r, inner);
    }
    src = dst;
  }
}

void argmax(const View& x, int64_t axis, bool select_last, const View& y) {
  axis = normalize_axes({axis}, x.rank())[0];
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int d = int(axis) + 1; d < x.rank(); ++d) inner *= x.shape[d];
  const int64_t r = x.shape[axis];
  switch (x.dtype) {
    case DType::f32: argmax_loop<float>(x, outer, r, inner, select_last, y.ptr<int64_t>()); break;
    case DType::i32: argmax_loop<int32_t>(x, outer, r, inner, select_last, y.ptr<int64_t>()); break;
    case DType::i64: argmax_loop<int64_t>(x, outer, r, inner, select_last, y.ptr<int64_t>()); break;
    case DType::b8:
    case DType::u8: argmax_loop<uint8_t>(x, outer, r, inner, select_last, y.ptr<int64_t>()); break;
  }
}

MatmulPlan plan_matmul(const Shape& as, bool trans_a, const Shape& bs, bool trans_b) {
  MatmulPlan mp;
  const int ra = int(as.size()), rb = int(bs.size());
  mp.m = trans_a ? as[ra - 1] : as[ra - 2];
  mp.k = trans_a ? as[ra - 2] : as[ra - 1];
  mp.n = trans_b ? bs[rb - 2] : bs[rb - 1];
  mp.trans_a = trans_a;
  mp.trans_b = trans_b;
  const Shape ba(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const Shape batch = broadcast_shapes(ba, bb);
  const int64_t nb = numel(batch);
  // Batch offsets of a and b for each output batch (broadcast over leading dims).
  mp.oa.resize(nb);
  mp.ob.resize(nb);
  const Plan p = make_plan(batch.empty() ? Shape{1} : batch, {&ba, &bb});
  for (int64_t i = 0; i < nb; ++i) {
    int64_t rem = i, x = 0, z = 0;
    for (int d = int(p.dims.size()) - 1; d >= 0; --d) {
      const int64_t k = rem % p.dims[d];
      rem /= p.dims[d];
      x += k * p.strides[0][d];
      z += k * p.strides[1][d];
    }
    mp.oa[i] = x;
    mp.ob[i] = z;
  }
  return mp;
}

void matmul_f32(const KernelTable& kt, int variant, const MatmulPlan& mp, const float* A,
                const float* B, float* Y, const MatmulEpilogue& ep, const PackedMatrix* packed_a,
                const PackedMatrix* packed_b) {
  const int64_t M = mp.m, N = mp.n, K = mp.k, nb = int64_t(mp.oa.size());
  const bool trans_a = mp.trans_a, trans_b = mp.trans_b;
  auto call = [&](int64_t i, bool threads) {
    GemmCall g;
    g.m = M; g.n = N; g.k = K;
    g.a = A + mp.oa[i] * M * K;
    g.a_rs = trans_a ? 1 : K; g.a_cs = trans_a ? M : 1;
    g.b = B + mp.ob[i] * K * N;
    g.b_rs = trans_b ? 1 : N; g.b_cs = trans_b ? K : 1;
    g.c = Y + i * M * N;
    g.ldc = N;
    g.ep = ep;
    if (ep.addend) g.ep.addend = ep.addend + i * M * N;
    if (packed_a) g.packed_a = packed_a->batch(packed_a->batches == 1 ? 0 : mp.oa[i]);
    if (packed_b) g.packed_b = packed_b->batch(packed_b->batches == 1 ? 0 : mp.ob[i]);
    f32_gemm(kt, variant, g, threads);
  };
  const int T = num_threads();
  if (nb >= 2 * T && T > 1 && double(M) * N * K < 4e6) {
    parallel_for(nb, [&](int64_t i) { call(i, false); });
  } else {
    for (int64_t i = 0; i < nb; ++i) call(i, true);
  }
}

void matmul(const KernelTable& kt, int variant, const View& a, bool trans_a, const View& b,
            bool trans_b, const View& y, const MatmulEpilogue& ep, const PackedMatrix* packed_a,
            const PackedMatrix* packed_b) {
  if (a.dtype != DType::f32 || b.dtype != DType::f32) throw Error("matmul needs float32 tensors");
  matmul_f32(kt, variant, plan_matmul(a.shape, trans_a, b.shape, trans_b), a.ptr<float>(),
             b.ptr<float>(), y.ptr<float>(), ep, packed_a, packed_b);
}

}  // namespace fast

UnaryOp unary_op_from_name(const std::string& s) {
  static const std::map<std::string, UnaryOp> m = {
      {"abs", UnaryOp::abs}, {"neg", UnaryOp::neg}, {"exp", UnaryOp::exp},
      {"log", UnaryOp::log}, {"sqrt", UnaryOp::sqrt}, {"rsqrt", UnaryOp::rsqrt},
      {"reciprocal", UnaryOp::reciprocal}, {"sigmoid", UnaryOp::sigmoid},
      {"tanh", UnaryOp::tanh}, {"erf", UnaryOp::erf}, {"relu", UnaryOp::relu},
      {"floor", UnaryOp::floor}, {"ceil", UnaryOp::ceil}, {"round", UnaryOp::round},
      {"sin", UnaryOp::sin}, {"cos", UnaryOp::cos}, {"sign", UnaryOp::sign},
      {"softplus", UnaryOp::softplus}, {"affine", UnaryOp::affine}, {"clip", UnaryOp::clip}};
  auto it = m.find(s);
  if (it == m.end()) throw Error("unknown unary op '" + s + "'");
  return it->second;
}

BinaryOp binary_op_from_name(const std::string& s) {
  static const std::map<std::string, BinaryOp> m = {
      {"add", BinaryOp::add}, {"sub", BinaryOp::sub}, {"mul", BinaryOp::mul},
      {"div", BinaryOp::div}, {"pow", BinaryOp::pow}, {"max", BinaryOp::max},
      {"min", BinaryOp::min}, {"eq", BinaryOp::eq}, {"lt", BinaryOp::lt},
      {"gt", BinaryOp::gt}, {"le", BinaryOp::le}, {"ge", BinaryOp::ge},
      {"and", BinaryOp::logical_and}, {"or", BinaryOp::logical_or},
      {"xor", BinaryOp::logical_xor}, {"mod", BinaryOp::mod}};
  auto it = m.find(s);
  if (it == m.end()) throw Error("unknown binary op '" + s + "'");
  return it->second;
}

ReduceOp reduce_op_from_name(const std::string& s) {
  static const std::map<std::string, ReduceOp> m = {{"sum", ReduceOp::sum},
                                                    {"mean", ReduceOp::mean},
                                                    {"max", ReduceOp::max},
                                                    {"min", ReduceOp::min},
                                                    {"prod", ReduceOp::prod}};
  auto it = m.find(s);
  if (it == m.end()) throw Error("unknown reduction '" + s + "'");
  return it->second;
}

}  // namespace walle
