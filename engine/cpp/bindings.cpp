// Python bindings for walle_engine._core. The public API is the walle_engine package;
// this module is private and may change with it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>

#include "atomic.h"
#include "budget.h"
#include "gemm.h"
#include "graph.h"
#include "isa.h"
#include "model_check.h"
#include "nchwc.h"
#include "threadpool.h"

namespace py = pybind11;
using namespace walle;

void bind_cv(py::module_& m);  // cv.cpp
void bind_rows(py::module_& m);  // rows_bindings.cpp
namespace walle {
double fma_peak_gflops(int reps);  // peak.cpp
}

namespace {

// select(cond, a, b): cond is read as bytes, a and b as the output's type.
void check_select_dtypes(DType c, DType a, DType b) {
  if (c != DType::b8) throw Error(std::string("select needs a bool condition, not ") + dtype_name(c));
  if (a != b)
    throw Error(std::string("select operands have different dtypes (") + dtype_name(a) + " vs " +
                dtype_name(b) + ")");
}

DType dtype_of_format(const std::string& f_in, ssize_t itemsize) {
  std::string f = f_in;
  if (!f.empty() && (f[0] == '<' || f[0] == '=' || f[0] == '@' || f[0] == '|')) f = f.substr(1);
  if (f == "f" && itemsize == 4) return DType::f32;
  if ((f == "i" || f == "l") && itemsize == 4) return DType::i32;
  if ((f == "q" || f == "l") && itemsize == 8) return DType::i64;
  if (f == "?" && itemsize == 1) return DType::b8;
  if (f == "B" && itemsize == 1) return DType::u8;  // numpy uint8, bytes, bytearray
  throw Error("unsupported buffer format '" + f_in + "' (itemsize " + std::to_string(itemsize) +
              "): use float32, int32, int64, bool or uint8");
}

const char* format_of(DType t) {
  switch (t) {
    case DType::f32: return "f";
    case DType::i32: return "i";
    case DType::i64: return "q";
    case DType::b8: return "?";
    case DType::u8: return "B";
  }
  return "B";
}

// Zero-copy: the tensor borrows the buffer and keeps the exporter's Py_buffer alive.
// The deleter runs with the GIL held: tensors that borrow are only created and dropped
// by Python-facing code, never inside a GIL-released run.
Tensor from_buffer(const py::buffer& b) {
  py::buffer_info info = b.request();
  Tensor t;
  t.dtype = dtype_of_format(info.format, info.itemsize);
  t.shape.assign(info.shape.begin(), info.shape.end());
  check_shape(t.shape, "buffer shape");
  // Require C-contiguity; numpy callers go through np.ascontiguousarray first.
  ssize_t expect = info.itemsize;
  for (int d = int(info.ndim) - 1; d >= 0; --d) {
    if (info.shape[d] != 1 && info.strides[d] != expect)
      throw Error("buffer is not C-contiguous: pass numpy.ascontiguousarray(x)");
    expect *= info.shape[d];
  }
  t.data = info.ptr;
  t.readonly = info.readonly;
  t.borrowed = true;
  auto* holder = new py::buffer_info(std::move(info));
  t.owner = std::shared_ptr<void>(holder, [](void* p) { delete static_cast<py::buffer_info*>(p); });
  return t;
}

py::buffer_info to_buffer(Tensor& t) {
  std::vector<ssize_t> shape(t.shape.begin(), t.shape.end()), strides(t.shape.size());
  // The buffer protocol multiplies itemsize by every dim in order (zeros do not stop it),
  // and strides are products of trailing dims: refuse a shape where either overflows.
  ssize_t len = ssize_t(dtype_size(t.dtype)), s = len;
  for (size_t d = 0; d < shape.size(); ++d)
    if (__builtin_mul_overflow(len, shape[d], &len))
      throw Error("tensor shape " + shape_str(t.shape) + " has no buffer: its size overflows");
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    strides[d] = s;
    if (__builtin_mul_overflow(s, shape[d], &s))
      throw Error("tensor shape " + shape_str(t.shape) + " has no buffer: its strides overflow");
  }
  return py::buffer_info(t.data, ssize_t(dtype_size(t.dtype)), format_of(t.dtype),
                         ssize_t(shape.size()), shape, strides, t.readonly);
}

Attr to_attr(const py::handle& v) {
  Attr a;
  if (py::isinstance<py::bool_>(v) || py::isinstance<py::int_>(v)) {
    a.kind = Attr::kInt;
    a.i = v.cast<int64_t>();
  } else if (py::isinstance<py::float_>(v)) {
    a.kind = Attr::kFloat;
    a.f = v.cast<double>();
  } else if (py::isinstance<py::str>(v)) {
    a.kind = Attr::kString;
    a.s = v.cast<std::string>();
  } else if (py::isinstance<Tensor>(v)) {
    a.kind = Attr::kTensor;
    a.t = v.cast<Tensor>();
  } else if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
    py::sequence seq = v.cast<py::sequence>();
    bool all_int = true;
    for (auto x : seq)
      if (!py::isinstance<py::int_>(x)) all_int = false;
    if (all_int) {
      a.kind = Attr::kInts;
      for (auto x : seq) a.ints.push_back(x.cast<int64_t>());
    } else {
      a.kind = Attr::kFloats;
      for (auto x : seq) a.floats.push_back(x.cast<double>());
    }
  } else {
    throw Error("unsupported attribute value of type " +
                std::string(py::str(py::type::handle_of(v))));
  }
  return a;
}

GraphDef to_graph(const py::dict& g) {
  GraphDef d;
  for (auto item : g["inputs"].cast<py::list>()) {
    auto t = item.cast<py::tuple>();
    d.inputs.push_back({t[0].cast<std::string>(), dtype_from_name(t[1].cast<std::string>()),
                        t[2].cast<Shape>()});
  }
  d.outputs = g["outputs"].cast<std::vector<std::string>>();
  for (auto [k, v] : g["constants"].cast<py::dict>())
    d.constants[k.cast<std::string>()] = v.cast<Tensor>();
  for (auto item : g["nodes"].cast<py::list>()) {
    auto t = item.cast<py::tuple>();
    NodeDef n;
    n.op = t[0].cast<std::string>();
    n.name = t[1].cast<std::string>();
    n.inputs = t[2].cast<std::vector<std::string>>();
    n.outputs = t[3].cast<std::vector<std::string>>();
    for (auto [k, v] : t[4].cast<py::dict>()) n.attrs[k.cast<std::string>()] = to_attr(v);
    d.nodes.push_back(std::move(n));
  }
  return d;
}

using RegionTuple = std::tuple<int, int64_t, int64_t, Shape, Shape, Shape>;

RasterSpec to_spec(const std::vector<RegionTuple>& regions, std::optional<double> fill) {
  RasterSpec spec;
  for (const auto& [input, so, dof, size, ss, ds] : regions) {
    if (size.size() > size_t(kMaxRasterDims) || ss.size() != size.size() || ds.size() != size.size())
      throw Error("region needs size, src_stride and dst_stride of equal rank <= 6");
    for (auto d : size)
      if (d < 0) throw Error("raster region has a negative size");
    Region r;
    r.input = input;
    r.src_offset = so;
    r.dst_offset = dof;
    r.ndim = int(size.size());
    for (int d = 0; d < r.ndim; ++d) {
      r.size[d] = size[d];
      r.src_stride[d] = ss[d];
      r.dst_stride[d] = ds[d];
    }
    spec.regions.push_back(r);
  }
  spec.has_fill = fill.has_value();
  spec.fill = fill.value_or(0.0);
  return spec;
}

std::vector<RegionTuple> from_spec(const RasterSpec& s) {
  std::vector<RegionTuple> v;
  for (const auto& r : s.regions)
    v.emplace_back(r.input, r.src_offset, r.dst_offset, Shape(r.size, r.size + r.ndim),
                   Shape(r.src_stride, r.src_stride + r.ndim), Shape(r.dst_stride, r.dst_stride + r.ndim));
  return v;
}

}  // namespace

void bind_array_ops(py::module_& m);  // array_ops.cpp

PYBIND11_MODULE(_core, m, py::mod_gil_not_used(), py::multiple_interpreters::per_interpreter_gil()) {
  m.doc() = "walle_engine's compiled core (private: use the walle_engine package)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ModelError& e) {
      // Defined in Python (one class for every interpreter): walle_engine._errors.
      py::object cls = py::module_::import("walle_engine._errors").attr("ModelError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const ModelTooLarge& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const MemoryCapExceeded& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const Cancelled& e) {
      PyErr_SetString(PyExc_TimeoutError, e.what());
    }
  });

  // Budgets (budget.h). Process-wide by name: every interpreter sees the same accounts.
  py::class_<Account, std::shared_ptr<Account>>(m, "Account")
      .def_property_readonly("name", [](const Account& a) { return a.name; })
      .def_property("cap", [](const Account& a) { return a.cap.load(); },
                    [](Account& a, int64_t v) {
                      if (v < 0) throw Error("cap must be >= 0 bytes (0 = no cap)");
                      a.cap.store(v);
                    })
      .def_property_readonly("used", [](const Account& a) { return a.used.load(); })
      .def_property_readonly("peak", [](const Account& a) { return a.peak.load(); })
      .def_property_readonly("refused", [](const Account& a) { return a.refused.load(); })
      .def_property_readonly("stopped", [](const Account& a) { return a.stopped.load(); })
      .def("reset_peak", [](Account& a) { a.peak.store(a.used.load()); })
      .def("__repr__", [](const Account& a) {
        return "Account('" + a.name + "', used=" + std::to_string(a.used.load()) +
               ", peak=" + std::to_string(a.peak.load()) + ", cap=" + std::to_string(a.cap.load()) + ")";
      });
  m.def("account", &account, py::arg("name"));
  py::class_<CancelToken, std::shared_ptr<CancelToken>>(m, "CancelToken")
      .def(py::init<>())
      .def_property_readonly("cancelled", [](const CancelToken& t) { return t.cancelled.load(); })
      .def("cancel", [](CancelToken& t) { t.cancelled.store(true); });
  m.def("bound", [] { return std::make_pair(bound().account, bound().token); });
  m.def("bind", [](std::shared_ptr<Account> a, std::shared_ptr<CancelToken> t) {
    Binding prev = bind({std::move(a), std::move(t)});
    return std::make_pair(prev.account, prev.token);
  }, py::arg("account").none(true), py::arg("token").none(true));

  py::class_<Tensor>(m, "Tensor", py::buffer_protocol())
      .def(py::init([](const py::buffer& b) { return from_buffer(b); }), py::arg("buffer"))
      .def_static("empty", [](const std::string& dt, const Shape& s) {
        return Tensor::zeros(dtype_from_name(dt), s);
      })
      .def_buffer(&to_buffer)
      .def_property_readonly("dtype", [](const Tensor& t) { return dtype_name(t.dtype); })
      .def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape)); })
      // No raw address is exposed (task code must not learn where memory lives): tests of
      // zero-copy ask whether two tensors share storage, and at which byte offset.
      .def("shares_storage", [](const Tensor& t, const Tensor& o) {
        const char *p = static_cast<const char*>(t.data), *q = static_cast<const char*>(o.data);
        if (p == q && p) return true;
        return t.nbytes() && o.nbytes() && p < q + o.nbytes() && q < p + t.nbytes();
      }, py::arg("other"))
      .def("offset_in", [](const Tensor& t, const Tensor& base) -> std::optional<int64_t> {
        // Byte offset of t's first element inside base's elements, or None.
        const char *p = static_cast<const char*>(t.data), *q = static_cast<const char*>(base.data);
        if (!p || !q || p < q || p > q + base.nbytes()) return std::nullopt;
        return int64_t(p - q);
      }, py::arg("base"))
      .def("__repr__", [](const Tensor& t) {
        return "Tensor(" + std::string(dtype_name(t.dtype)) + ", " + shape_str(t.shape) + ")";
      });

  m.def("export_tensor", &export_tensor, py::arg("tensor"), py::arg("owner") = 0);
  m.def("import_tensor", &import_tensor, py::arg("handle"), py::arg("owner") = 0);
  m.def("drop_exported", &drop_exported, py::arg("handle"), py::arg("owner") = 0);

  m.def("detect_isa", [] { return isa_name(detect_isa()); });
  m.def("isa", [] { return isa_name(current_isa()); });
  m.def("set_isa", [](const std::string& s) { set_isa(isa_from_name(s)); });
  m.def("supported_isas", [] {
    std::vector<std::string> v;
    for (Isa i : supported_isas()) v.push_back(isa_name(i));
    return v;
  });
  m.def("cpu_signature", &cpu_signature);
  m.def("set_num_threads", &set_num_threads);
  m.def("num_threads", &num_threads);
  m.def("gemm_kernels", [](const std::string& isa) {
    const KernelTable& kt = kernels_for(isa_from_name(isa));
    std::vector<std::string> v;
    for (int i = 0; i < kt.gemm_count; ++i) v.push_back(kt.gemm[i].name);
    return v;
  });

  // Atomic ops on tensors: `reference=True` runs the scalar oracle instead of the kernels.
  m.def("unary", [](const std::string& op, const Tensor& x, double alpha, double beta, bool reference) {
    const UnaryOp u = unary_op_from_name(op);
    Tensor y = Tensor::empty(x.dtype, x.shape);
    py::gil_scoped_release nogil;
    if (reference) ref::unary(u, x, y, float(alpha), float(beta));
    else fast::unary(kernels(), u, x, y, float(alpha), float(beta));
    return y;
  }, py::arg("op"), py::arg("x"), py::arg("alpha") = 0.0, py::arg("beta") = 0.0, py::arg("reference") = false);
  m.def("binary", [](const std::string& op, const Tensor& a, const Tensor& b, bool reference) {
    const BinaryOp o = binary_op_from_name(op);
    if (a.dtype != b.dtype) throw Error("binary op on mixed dtypes");
    const DType out = (is_compare(o) || is_logical(o)) ? DType::b8 : a.dtype;
    Tensor y = Tensor::empty(out, broadcast_shapes(a.shape, b.shape));
    py::gil_scoped_release nogil;
    if (reference) ref::binary(o, a, b, y);
    else fast::binary(kernels(), o, a, b, y);
    return y;
  }, py::arg("op"), py::arg("a"), py::arg("b"), py::arg("reference") = false);
  m.def("select", [](const Tensor& c, const Tensor& a, const Tensor& b, bool reference) {
    check_select_dtypes(c.dtype, a.dtype, b.dtype);
    Tensor y = Tensor::empty(a.dtype, broadcast_shapes(c.shape, broadcast_shapes(a.shape, b.shape)));
    py::gil_scoped_release nogil;
    if (reference) ref::select(c, a, b, y);
    else fast::select(kernels(), c, a, b, y);
    return y;
  }, py::arg("cond"), py::arg("a"), py::arg("b"), py::arg("reference") = false);
  m.def("cast", [](const Tensor& x, const std::string& dt, bool reference) {
    Tensor y = Tensor::empty(dtype_from_name(dt), x.shape);
    py::gil_scoped_release nogil;
    if (reference) ref::cast(x, y);
    else fast::cast(x, y);
    return y;
  }, py::arg("x"), py::arg("dtype"), py::arg("reference") = false);
  m.def("reduce", [](const std::string& op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdims, bool reference) {
    const ReduceOp r = reduce_op_from_name(op);
    Tensor y = Tensor::empty(x.dtype, reduced_shape(x.shape, axes, keepdims));
    py::gil_scoped_release nogil;
    if (reference) ref::reduce(r, x, axes, y);
    else fast::reduce(kernels(), r, x, axes, y);
    return y;
  }, py::arg("op"), py::arg("x"), py::arg("axes"), py::arg("keepdims") = true, py::arg("reference") = false);
  m.def("argmax", [](const Tensor& x, int64_t axis, bool keepdims, bool select_last, bool reference) {
    Tensor y = Tensor::empty(DType::i64, reduced_shape(x.shape, {axis}, keepdims));
    py::gil_scoped_release nogil;
    if (reference) ref::argmax(x, axis, select_last, y);
    else fast::argmax(x, axis, select_last, y);
    return y;
  }, py::arg("x"), py::arg("axis"), py::arg("keepdims") = true, py::arg("select_last") = false, py::arg("reference") = false);
  m.def("matmul", [](const Tensor& a, const Tensor& b, bool ta, bool tb, int variant, bool reference) {
    if (a.dtype != DType::f32 || b.dtype != DType::f32) throw Error("matmul needs float32");
    if (a.rank() < 2 || b.rank() < 2) throw Error("matmul needs rank >= 2 operands");
    const int64_t M = ta ? a.dim(-1) : a.dim(-2), K = ta ? a.dim(-2) : a.dim(-1);
    const int64_t K2 = tb ? b.dim(-1) : b.dim(-2), N = tb ? b.dim(-2) : b.dim(-1);
    if (K != K2) throw Error("matmul inner dimensions differ");
    if (variant < 0) throw Error("matmul variant must be >= 0");
    Shape batch = broadcast_shapes(Shape(a.shape.begin(), a.shape.end() - 2), Shape(b.shape.begin(), b.shape.end() - 2));
    batch.push_back(M);
    batch.push_back(N);
    Tensor y = Tensor::empty(DType::f32, batch);
    py::gil_scoped_release nogil;
    if (reference) ref::matmul(a, ta, b, tb, y);
    else fast::matmul(kernels(), variant, a, ta, b, tb, y);
    return y;
  }, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
     py::arg("variant") = 0, py::arg("reference") = false);
  m.def("raster", [](const std::vector<Tensor>& inputs, const std::vector<RegionTuple>& regions,
                     const Shape& shape, std::optional<double> fill, bool reference) {
    if (inputs.empty()) throw Error("raster needs at least one input");
    const RasterSpec spec = to_spec(regions, fill);
    std::vector<int64_t> numels;
    for (const auto& t : inputs) {
      // The copy moves elements of the output's type: a narrower input would be over-read.
      if (t.dtype != inputs[0].dtype)
        throw Error(std::string("raster inputs must share one dtype, got ") + dtype_name(inputs[0].dtype) +
                    " and " + dtype_name(t.dtype));
      numels.push_back(t.numel());
    }
    check_raster(spec, numels, check_shape(shape, "raster output shape"));
    std::vector<View> views(inputs.begin(), inputs.end());
    Tensor y = Tensor::zeros(inputs[0].dtype, shape);
    py::gil_scoped_release nogil;
    if (reference) ref::raster(spec, views, y);
    else fast::raster(spec, views, y);
    return y;
  }, py::arg("inputs"), py::arg("regions"), py::arg("shape"), py::arg("fill") = py::none(), py::arg("reference") = false);
  m.def("compose_raster", [](const std::vector<RegionTuple>& inner, const Shape& inner_shape,
                             const std::vector<RegionTuple>& outer) -> std::optional<std::vector<RegionTuple>> {
    check_shape(inner_shape, "inner raster shape");
    RasterSpec merged;
    if (!compose_raster(to_spec(inner, std::nullopt), inner_shape, to_spec(outer, std::nullopt), &merged))
      return std::nullopt;
    return from_spec(merged);
  });
  m.def("conv2d_reference", [](const Tensor& x, const Tensor& w, std::optional<Tensor> bias,
                               std::optional<Tensor> residual, std::vector<int64_t> s,
                               std::vector<int64_t> p, std::vector<int64_t> d, int64_t group,
                               double lo, double hi) {
    // The convolution oracle (tests compare every conv kernel with it): NCHW, symmetric pads.
    if (x.rank() != 4 || w.rank() != 4 || x.dtype != DType::f32 || w.dtype != DType::f32 ||
        s.size() != 2 || p.size() != 2 || d.size() != 2 || group < 1 || x.dim(1) != w.dim(1) * group ||
        w.dim(0) % group != 0)
      throw Error("conv2d_reference needs float32 x [N, C, H, W], w [O, C/group, KH, KW], 2 strides, pads, dilations");
    for (int i = 0; i < 2; ++i)
      if (s[i] < 1 || d[i] < 1 || p[i] < 0 || s[i] > kMaxElements || d[i] > kMaxElements ||
          p[i] > kMaxElements)
        throw Error("conv2d_reference needs strides and dilations >= 1 and pads >= 0 (at most 2**40)");
    if (w.dim(2) < 1 || w.dim(3) < 1) throw Error("conv2d_reference needs a non-empty kernel");
    const int64_t oh = (x.dim(2) + 2 * p[0] - (w.dim(2) - 1) * d[0] - 1) / s[0] + 1;
    const int64_t ow = (x.dim(3) + 2 * p[1] - (w.dim(3) - 1) * d[1] - 1) / s[1] + 1;
    if (oh < 1 || ow < 1) throw Error("conv2d_reference: the output would be empty");
    Tensor y = Tensor::empty(DType::f32, {x.dim(0), w.dim(0), oh, ow});
    const View none;
    if (bias && bias->numel() != w.dim(0)) throw Error("bias must have one value per output channel");
    if (residual && residual->shape != y.shape) throw Error("residual must have the output shape");
    py::gil_scoped_release nogil;
    ref::conv2d(x, w, bias ? View(*bias) : none, residual ? View(*residual) : none, s[0], s[1], p[0],
                p[1], d[0], d[1], group, float(lo), float(hi), y);
    return y;
  }, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("residual") = py::none(),
     py::arg("strides"), py::arg("pads"), py::arg("dilations"), py::arg("group") = 1,
     py::arg("lo") = -INFINITY, py::arg("hi") = INFINITY);
  m.def("fma_peak_gflops", [](int reps) {
    py::gil_scoped_release nogil;
    return fma_peak_gflops(reps);
  }, py::arg("reps") = 3);
  m.def("gemm_seconds", [](int64_t M, int64_t N, int64_t K, int reps, int variant, bool prepack_b) {
    // Best-of-`reps` time of one f32 GEMM on the current ISA (benchmarks only).
    if (variant < 0) throw Error("gemm variant must be >= 0");
    Tensor a = Tensor::empty(DType::f32, {M, K}), b = Tensor::empty(DType::f32, {K, N}),
           c = Tensor::empty(DType::f32, {M, N});
    for (int64_t i = 0; i < M * K; ++i) a.ptr<float>()[i] = float(i % 7) * 0.1f;
    for (int64_t i = 0; i < K * N; ++i) b.ptr<float>()[i] = float(i % 5) * 0.1f;
    py::gil_scoped_release nogil;
    const KernelTable& kt = kernels();
    PackedMatrix pb;
    if (prepack_b) pb = pack_b(b.ptr<float>(), 1, 0, K, N, N, 1, kt.gemm[std::min(variant, kt.gemm_count - 1)].nr);
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      fast::matmul(kt, variant, a, false, b, false, c, {}, nullptr, prepack_b ? &pb : nullptr);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  }, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("reps") = 5, py::arg("variant") = 0, py::arg("prepack_b") = false);

  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def(py::init([](const py::dict& g, bool tune, int tune_top, const std::string& max_isa,
                       const std::map<std::string, std::string>& forced) {
             ModelOptions o;
             o.tune = tune;
             o.tune_top = tune_top;
             o.max_isa = isa_from_name(max_isa);
             o.forced = forced;
             // Whatever is wrong with the graph is a model error (a ValueError naming it).
             GraphDef gd;
             try {
               gd = to_graph(g);
             } catch (const ModelError&) {
               throw;
             } catch (const Error& e) {
               throw ModelError(std::string("model graph: ") + e.what());
             } catch (const py::cast_error& e) {
               throw ModelError(std::string("model graph: a field has the wrong type (") +
                                e.what() + ")");
             } catch (const py::error_already_set& e) {
               if (!e.matches(PyExc_KeyError) && !e.matches(PyExc_IndexError) &&
                   !e.matches(PyExc_TypeError) && !e.matches(PyExc_OverflowError))
                 throw;
               throw ModelError(std::string("model graph: malformed (") + e.what() + ")");
             }
             py::gil_scoped_release nogil;  // search may time candidates for a while
             try {
               return std::make_shared<Model>(gd, o);
             } catch (const ModelError&) {
               throw;
             } catch (const ModelTooLarge&) {
               throw;
             } catch (const Error& e) {
               throw ModelError(e.what());
             } catch (const std::out_of_range& e) {
               throw ModelError(std::string("model graph: index out of range (") + e.what() + ")");
             } catch (const std::length_error& e) {
               throw ModelTooLarge(std::string("model graph: a size is too large (") + e.what() + ")");
             }
           }),
           py::arg("graph"), py::arg("tune") = true, py::arg("tune_top") = 3,
           py::arg("max_isa") = "avx512", py::arg("forced") = std::map<std::string, std::string>{})
      .def("run", [](const Model& m, const std::vector<Tensor>& inputs) {
        std::vector<Tensor> out;
        {
          py::gil_scoped_release nogil;
          out = m.run(inputs);
        }
        return out;
      }, py::arg("inputs"))
      .def_property_readonly("inputs", [](const Model& m) {
        std::vector<std::tuple<std::string, std::string, Shape>> v;
        for (const auto& i : m.inputs()) v.emplace_back(i.name, dtype_name(i.dtype), i.shape);
        return v;
      })
      .def_property_readonly("outputs", [](const Model& m) {
        std::vector<std::tuple<std::string, std::string, Shape>> v;
        for (const auto& i : m.outputs()) v.emplace_back(i.name, dtype_name(i.dtype), i.shape);
        return v;
      })
      .def("plan", [](const Model& m) {
        py::list l;
        for (const auto& p : m.plan()) {
          py::dict d;
          d["node"] = p.node;
          d["op"] = p.op;
          d["signature"] = p.signature;
          d["choice"] = p.choice;
          d["source"] = p.source;
          d["estimated_us"] = p.cost * 1e6;
          d["measured_us"] = p.measured * 1e6;
          d["candidates"] = p.candidates;
          l.append(d);
        }
        return l;
      })
      .def("profile", [](const Model& m, const std::vector<Tensor>& inputs, int reps) {
        // Per step, the fastest of `reps` runs: on a shared machine a descheduled run
        // would otherwise charge its stall to whichever step it hit.
        std::vector<double> best;
        {
          py::gil_scoped_release nogil;
          for (int r = 0; r < std::max(reps, 1); ++r) {
            std::vector<double> secs;
            m.run_timed(inputs, &secs);
            if (best.empty()) best = secs;
            for (size_t i = 0; i < secs.size(); ++i) best[i] = std::min(best[i], secs[i]);
          }
        }
        std::vector<std::pair<std::string, double>> v;
        const auto names = m.steps();
        for (size_t i = 0; i < names.size(); ++i) v.emplace_back(names[i], best[i]);
        return v;
      }, py::arg("inputs"), py::arg("reps") = 10)
      .def("steps", &Model::steps)
      .def_property_readonly("arena_bytes", &Model::arena_bytes)
      .def_property_readonly("unplanned_bytes", &Model::unplanned_bytes)
      .def_property_readonly("merged_rasters", &Model::merged_rasters);

  m.def("tuning_records", [] {
    std::vector<std::tuple<std::string, std::string, std::string, double>> v;
    for (const auto& r : tuning_records()) v.emplace_back(r.cpu, r.op, r.choice, r.micros);
    return v;
  });
  m.def("tuning_add", [](const std::vector<std::tuple<std::string, std::string, std::string, double>>& recs) {
    std::vector<TuningRecord> v;
    for (const auto& [c, o, ch, us] : recs) v.push_back({c, o, ch, us});
    tuning_add(v);
  });
  m.def("tuning_clear", &tuning_clear);
  m.def("model_limits", [] {
    const ModelLimits l = model_limits();
    return std::make_pair(l.total_bytes, l.value_bytes);
  });
  m.def("set_model_limits", [](int64_t total_bytes, int64_t value_bytes) {
    set_model_limits({total_bytes, value_bytes});
  }, py::arg("total_bytes"), py::arg("value_bytes"));
  m.def("supported_ops", [] {
    std::vector<std::string> v;
    for (const auto& [k, f] : op_registry()) v.push_back(k);
    return v;
  });

  bind_cv(m);  // image pre-processing: walle_engine.cv
  bind_rows(m);  // fused row kernels, for tests
  bind_array_ops(m);
}
