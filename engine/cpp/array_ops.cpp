// Array ops for walle_engine.np (the numpy-like module task scripts use): views that share
// storage, strided copies into existing tensors, gather and scatter by index, nonzero,
// sorting, ranges and conversion from any numeric buffer. Pure data movement dispatches
// on the element size only, so it covers every dtype the engine stores.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "atomic.h"
#include "threadpool.h"

namespace py = pybind11;
using namespace walle;

namespace {

// Calls f(T{}) with the C++ type a dtype is stored as.
template <class F>
void by_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::i32: f(int32_t{}); break;
    case DType::i64: f(int64_t{}); break;
    case DType::b8: f(uint8_t{}); break;
    case DType::u8: f(uint8_t{}); break;
    default: throw py::type_error(std::string("unsupported dtype ") + dtype_name(t));
  }
}

// Calls f(E{}) with an unsigned integer type of the element size: copies move bits only.
template <class F>
void by_size(size_t es, F&& f) {
  switch (es) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: throw Error("unsupported element size " + std::to_string(es));
  }
}

// Runs fn(begin, end) over [0, n) in chunks on the pool when there is enough work.
template <class F>
void parallel_range(int64_t n, int64_t work, F&& fn) {
  const int T = num_threads();
  if (T <= 1 || n < 2 || work < (1 << 16)) {
    fn(int64_t(0), n);
    return;
  }
  const int64_t per = (n + 4 * T - 1) / (4 * T);
  parallel_for((n + per - 1) / per, [&](int64_t c) { fn(c * per, std::min(n, (c + 1) * per)); });
}

bool overlaps(const Tensor& a, const Tensor& b) {
  const char *p = static_cast<const char*>(a.data), *q = static_cast<const char*>(b.data);
  return a.nbytes() && b.nbytes() && p < q + b.nbytes() && q < p + a.nbytes();
}

void check_writable(const Tensor& t) {
  if (t.readonly) throw Error("assignment destination is read-only");
}

std::string index_error(int64_t i, int64_t axis, int64_t n) {
  return "index " + std::to_string(i) + " is out of bounds for axis " + std::to_string(axis) +
         " with size " + std::to_string(n);
}

// Runs without the GIL: the exception is translated once it is re-acquired.
void check_indices(const Tensor& idx, int64_t n, int64_t axis) {
  const int64_t* I = idx.ptr<int64_t>();
  for (int64_t j = 0, m = idx.numel(); j < m; ++j)
    if (I[j] < -n || I[j] >= n) throw py::index_error(index_error(I[j], axis, n));
}

// x viewed as [outer][n][inner] around `axis`.
struct Around {
  int64_t axis, outer = 1, n, inner = 1;
  Around(const Tensor& x, int64_t a) {
    if (x.rank() == 0) throw Error("the operation needs an array of at least one dimension");
    axis = normalize_axes({a}, x.rank())[0];
    for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
    for (int64_t d = axis + 1; d < x.rank(); ++d) inner *= x.shape[d];
    n = x.shape[axis];
  }
};

// A view of `count(shape)` elements of x starting at `offset`, sharing its storage.
Tensor tensor_view(const Tensor& x, int64_t offset, const Shape& shape) {
  const int64_t n = check_shape(shape);
  if (offset < 0 || offset > x.numel() || n > x.numel() - offset)
    throw Error("view of " + shape_str(shape) + " at offset " + std::to_string(offset) +
                " does not fit in a tensor of " + std::to_string(x.numel()) + " elements");
  Tensor y = x;
  y.shape = shape;
  y.data = static_cast<char*>(x.data) + offset * int64_t(dtype_size(x.dtype));
  return y;
}

// dst[dst_offset + i . dst_strides] = src[src_offset + i . src_strides] for every index i
// of `shape` (strides in elements, 0 broadcasts). Runs as raster regions of rank <= 6.
void strided_copy(Tensor& dst, int64_t dst_offset, const Shape& dst_strides, const Tensor& src_in,
                  int64_t src_offset, const Shape& src_strides, const Shape& shape) {
  if (dst.dtype != src_in.dtype)
    throw Error(std::string("copy from ") + dtype_name(src_in.dtype) + " to " + dtype_name(dst.dtype));
  check_writable(dst);
  if (dst_strides.size() != shape.size() || src_strides.size() != shape.size())
    throw Error("strided copy needs one stride per dimension");
  if (check_shape(shape) == 0) return;
  auto check = [&](const Tensor& t, int64_t off, const Shape& st, const char* what) {
    int64_t lo = off, hi = off;
    for (size_t d = 0; d < shape.size(); ++d) {
      const int64_t ext = checked_mul(shape[d] - 1, st[d], "strided copy extent");
      int64_t& end = ext > 0 ? hi : lo;
      end = checked_add(end, ext, "strided copy extent");
    }
    if (lo < 0 || hi >= t.numel()) throw Error(std::string("strided copy ") + what + " out of bounds");
  };
  check(dst, dst_offset, dst_strides, "writes");
  check(src_in, src_offset, src_strides, "reads");
  const Tensor src = overlaps(src_in, dst) ? src_in.clone() : src_in;  // x[1:] = x[:-1]
  // Drop unit dims; dims beyond the raster's six become one region per leading index.
  Shape size, ss, ds;
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] != 1) {
      size.push_back(shape[d]);
      ss.push_back(src_strides[d]);
      ds.push_back(dst_strides[d]);
    }
  const int lead = std::max(0, int(size.size()) - kMaxRasterDims);
  RasterSpec spec;
  Shape idx(lead, 0);
  do {
    Region r;
    r.src_offset = src_offset;
    r.dst_offset = dst_offset;
    for (int d = 0; d < lead; ++d) {
      r.src_offset += idx[d] * ss[d];
      r.dst_offset += idx[d] * ds[d];
    }
    r.ndim = std::max(1, int(size.size()) - lead);
    r.size[0] = 1;
    for (int d = lead; d < int(size.size()); ++d) {
      r.size[d - lead] = size[d];
      r.src_stride[d - lead] = ss[d];
      r.dst_stride[d - lead] = ds[d];
    }
    spec.regions.push_back(r);
    int d = lead - 1;
    for (; d >= 0 && ++idx[d] == size[d]; --d) idx[d] = 0;
    if (d < 0) break;
  } while (true);
  const std::vector<View> inputs{src};
  py::gil_scoped_release nogil;
  fast::raster(spec, inputs, dst);
}

// Gathers along `axis`: y[o, j..., i] = x[o, indices[j...], i]; negative indices count from
// the end. The result's shape is x's with dim `axis` replaced by the indices' shape.
Tensor take(const Tensor& x, const Tensor& indices, int64_t axis_in) {
  const Around a(x, axis_in);
  if (indices.dtype != DType::i64) throw py::type_error("indices must be int64");
  Shape out(x.shape.begin(), x.shape.begin() + a.axis);
  out.insert(out.end(), indices.shape.begin(), indices.shape.end());
  out.insert(out.end(), x.shape.begin() + a.axis + 1, x.shape.end());
  Tensor y = Tensor::empty(x.dtype, out);
  const int64_t m = indices.numel();
  const int64_t* I = indices.ptr<int64_t>();
  py::gil_scoped_release nogil;
  check_indices(indices, a.n, a.axis);
  if (y.numel() == 0) return y;
  by_size(dtype_size(x.dtype), [&](auto e) {
    using E = decltype(e);
    const E* X = x.ptr<E>();
    E* Y = y.ptr<E>();
    parallel_range(a.outer * m, y.numel(), [&](int64_t b, int64_t end) {
      for (int64_t r = b, o = b / m, j = b % m; r < end; ++r) {
        const int64_t i = I[j] < 0 ? I[j] + a.n : I[j];
        const E* s = X + (o * a.n + i) * a.inner;
        if (a.inner == 1) Y[r] = *s;
        else std::memcpy(Y + r * a.inner, s, sizeof(E) * a.inner);
        if (++j == m) j = 0, ++o;
      }
    });
  });
  return y;
}

// Scatters into x viewed flat: x[indices[j]] = values[j] (or values[0] for a single value).
// With repeated indices the last write wins, as in numpy.
void put(Tensor& x, const Tensor& indices, const Tensor& values_in) {
  if (x.dtype != values_in.dtype)
    throw Error(std::string("put of ") + dtype_name(values_in.dtype) + " into " + dtype_name(x.dtype));
  check_writable(x);
  if (indices.dtype != DType::i64) throw py::type_error("indices must be int64");
  const int64_t n = x.numel(), m = indices.numel();
  if (values_in.numel() != m && values_in.numel() != 1)
    throw Error("put needs one value per index, or a single value");
  const Tensor values = overlaps(values_in, x) ? values_in.clone() : values_in;
  const int64_t* I = indices.ptr<int64_t>();
  const int64_t vs = values.numel() == 1 ? 0 : 1;
  py::gil_scoped_release nogil;
  check_indices(indices, n, 0);
  by_size(dtype_size(x.dtype), [&](auto e) {
    using E = decltype(e);
    const E* V = values.ptr<E>();
    E* X = x.ptr<E>();
    for (int64_t j = 0; j < m; ++j) X[I[j] < 0 ? I[j] + n : I[j]] = V[j * vs];
  });
}

// Flat indices of the nonzero elements, ascending (NaN counts as nonzero).
Tensor flatnonzero(const Tensor& x) {
  Tensor y;
  py::gil_scoped_release nogil;
  by_dtype(x.dtype, [&](auto z) {
    using T = decltype(z);
    const T* X = x.ptr<T>();
    const int64_t n = x.numel();
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += X[i] != T(0);
    y = Tensor::empty(DType::i64, {count});
    int64_t* Y = y.ptr<int64_t>();
    for (int64_t i = 0, k = 0; i < n; ++i) {  // branch-free: masks are often random
      if (k < count) Y[k] = i;
      k += X[i] != T(0);
    }
  });
  return y;
}

// The first k (all when k < 0) of every line along `axis` in sorted order, and their
// indices: ascending with NaN last, or descending with NaN first. Equal keys keep their
// index order, so the result is that of a stable sort.
std::pair<Tensor, Tensor> sort_lines(const Tensor& x, int64_t axis_in, int64_t k, bool descending) {
  const Around a(x, axis_in);
  if (k < 0) k = a.n;
  if (k > a.n)
    throw Error("k = " + std::to_string(k) + " is out of range for axis " + std::to_string(a.axis) +
                " of size " + std::to_string(a.n));
  Shape out = x.shape;
  out[a.axis] = k;
  Tensor values = Tensor::empty(x.dtype, out), indices = Tensor::empty(DType::i64, out);
  py::gil_scoped_release nogil;
  by_dtype(x.dtype, [&](auto z) {
    using T = decltype(z);
    parallel_range(a.outer * a.inner, x.numel() * 8, [&](int64_t b, int64_t e) {
      std::vector<int64_t> order(a.n);
      for (int64_t line = b; line < e; ++line) {
        const int64_t o = line / a.inner, j = line % a.inner;
        const T* X = x.ptr<T>() + o * a.n * a.inner + j;
        auto less = [](T p, T q) { return p < q || (q != q && p == p); };  // NaN is largest
        auto before = [&](int64_t p, int64_t q) {
          const T u = X[p * a.inner], v = X[q * a.inner];
          if (descending ? less(v, u) : less(u, v)) return true;
          if (descending ? less(u, v) : less(v, u)) return false;
          return p < q;
        };
        std::iota(order.begin(), order.end(), int64_t(0));
        if (k < a.n) std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
        else std::sort(order.begin(), order.end(), before);
        T* V = values.ptr<T>() + o * k * a.inner + j;
        int64_t* I = indices.ptr<int64_t>() + o * k * a.inner + j;
        for (int64_t t = 0; t < k; ++t) {
          V[t * a.inner] = X[order[t] * a.inner];
          I[t * a.inner] = order[t];
        }
      }
    });
  });
  return {values, indices};
}

// [start, start + step, ...] with n elements, computed in double and converted.
Tensor arange(double start, double step, int64_t n, const std::string& dtype) {
  if (n < 0) throw Error("arange needs a non-negative length");
  Tensor y = Tensor::empty(dtype_from_name(dtype), {n});
  py::gil_scoped_release nogil;
  by_dtype(y.dtype, [&](auto z) {
    using T = decltype(z);
    T* Y = y.ptr<T>();
    for (int64_t i = 0; i < n; ++i) Y[i] = from_double<T>(start + double(i) * step);
  });
  return y;
}

struct Half {
  uint16_t bits;
};

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(man), -24);  // zero and subnormals
  } else if (exp == 31) {
    const uint32_t bits = 0x7f800000u | (man << 13);
    std::memcpy(&f, &bits, 4);
  } else {
    const uint32_t bits = ((exp + 112) << 23) | (man << 13);
    std::memcpy(&f, &bits, 4);
  }
  return sign ? -f : f;
}

template <class S, class D>
void convert_loop(const py::buffer_info& info, D* out, bool to_bool) {
  const int nd = int(info.ndim);
  const int64_t n = info.size;
  if (n == 0) return;
  const int64_t inner = nd ? info.shape[nd - 1] : 1, is = nd ? info.strides[nd - 1] : 0;
  const char* base = static_cast<const char*>(info.ptr);
  std::vector<int64_t> idx(std::max(nd - 1, 0), 0);
  for (int64_t k = 0; k < n;) {
    int64_t off = 0;
    for (int d = 0; d + 1 < nd; ++d) off += idx[d] * info.strides[d];
    for (int64_t i = 0; i < inner; ++i, ++k) {
      S s;
      std::memcpy(&s, base + off + i * is, sizeof(S));
      if constexpr (std::is_same_v<S, Half>) {
        const float v = half_to_float(s.bits);
        out[k] = to_bool ? D(v != 0) : from_double<D>(v);
      } else if constexpr (std::is_floating_point_v<S>) {
        out[k] = to_bool ? D(s != S(0)) : from_double<D>(double(s));  // no undefined casts
      } else {
        out[k] = to_bool ? D(s != S(0)) : D(s);
      }
    }
    for (int d = nd - 2; d >= 0 && ++idx[d] == info.shape[d]; --d) idx[d] = 0;
  }
}

// A new tensor of `dtype` from any numeric buffer (strided or not, any itemsize).
Tensor convert(const py::buffer& b, const std::string& dtype) {
  const py::buffer_info info = b.request();
  std::string f = info.format;
  if (!f.empty() && (f[0] == '<' || f[0] == '=' || f[0] == '@' || f[0] == '|')) f = f.substr(1);
  const char c = f.size() == 1 ? f[0] : 0;
  const ssize_t size = info.itemsize;
  Tensor y = Tensor::empty(dtype_from_name(dtype), Shape(info.shape.begin(), info.shape.end()));
  const bool to_bool = y.dtype == DType::b8;
  auto run = [&](auto s) {
    using S = decltype(s);
    py::gil_scoped_release nogil;
    by_dtype(y.dtype, [&](auto d) { convert_loop<S>(info, y.ptr<decltype(d)>(), to_bool); });
  };
  const bool is_signed = c == 'b' || c == 'h' || c == 'i' || c == 'l' || c == 'q';
  const bool is_unsigned = c == 'B' || c == 'H' || c == 'I' || c == 'L' || c == 'Q' || c == '?';
  if (c == 'f' && size == 4) run(float{});
  else if (c == 'd' && size == 8) run(double{});
  else if (c == 'e' && size == 2) run(Half{});
  else if (is_signed && size == 1) run(int8_t{});
  else if (is_signed && size == 2) run(int16_t{});
  else if (is_signed && size == 4) run(int32_t{});
  else if (is_signed && size == 8) run(int64_t{});
  else if (is_unsigned && size == 1) run(uint8_t{});
  else if (is_unsigned && size == 2) run(uint16_t{});
  else if (is_unsigned && size == 4) run(uint32_t{});
  else if (is_unsigned && size == 8) run(uint64_t{});
  else throw py::type_error("unsupported buffer format '" + info.format + "'");
  return y;
}

}  // namespace

void bind_array_ops(py::module_& m) {
  m.def("view", &tensor_view, py::arg("x"), py::arg("offset"), py::arg("shape"));
  m.def("strided_copy", &strided_copy, py::arg("dst"), py::arg("dst_offset"), py::arg("dst_strides"),
        py::arg("src"), py::arg("src_offset"), py::arg("src_strides"), py::arg("shape"));
  m.def("take", &take, py::arg("x"), py::arg("indices"), py::arg("axis"));
  m.def("put", &put, py::arg("x"), py::arg("indices"), py::arg("values"));
  m.def("flatnonzero", &flatnonzero, py::arg("x"));
  m.def("sort", &sort_lines, py::arg("x"), py::arg("axis"), py::arg("k") = -1, py::arg("descending") = false);
  m.def("arange", &arange, py::arg("start"), py::arg("step"), py::arg("n"), py::arg("dtype"));
  m.def("convert", &convert, py::arg("buffer"), py::arg("dtype"));
}
