// Bindings of the fused row kernels (kernels/rows.h) for tests and experiments:
// `reference=True` runs the double-precision oracle instead of the kernels of the current
// SIMD level. The last axis of x is the row.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "isa.h"
#include "kernels/rows.h"
#include "tensor.h"

namespace py = pybind11;
using namespace walle;

namespace {

int64_t row_length(const Tensor& x, const char* what) {
  if (x.dtype != DType::f32) throw Error(std::string(what) + " needs a float32 tensor");
  return x.rank() == 0 ? 1 : x.shape.back();
}

const float* vector_of(const std::optional<Tensor>& v, int64_t n, const char* what) {
  if (!v) return nullptr;
  if (v->dtype != DType::f32 || v->numel() != n)
    throw Error(std::string(what) + " must be a float32 vector of the row length");
  return v->ptr<float>();
}

}  // namespace

void bind_rows(py::module_& m) {
  m.def("softmax_rows", [](const Tensor& x, double scale, bool log, bool reference) {
    const int64_t n = row_length(x, "softmax");
    Tensor y = Tensor::empty(DType::f32, x.shape);
    const int64_t rows = n ? x.numel() / n : 0;
    py::gil_scoped_release nogil;
    if (reference) ref::softmax_rows(x.ptr<float>(), y.ptr<float>(), rows, n, float(scale), log);
    else fast::softmax_rows(row_kernels_for(current_isa()), x.ptr<float>(), y.ptr<float>(), rows, n,
                            float(scale), log);
    return y;
  }, py::arg("x"), py::arg("scale") = 1.0, py::arg("log") = false, py::arg("reference") = false);
  m.def("layernorm_rows", [](const Tensor& x, std::optional<Tensor> gamma, std::optional<Tensor> beta,
                             double eps, bool reference) {
    const int64_t n = row_length(x, "layernorm");
    const float* g = vector_of(gamma, n, "gamma");
    const float* bt = vector_of(beta, n, "beta");
    Tensor y = Tensor::empty(DType::f32, x.shape);
    const int64_t rows = n ? x.numel() / n : 0;
    py::gil_scoped_release nogil;
    if (reference) ref::layernorm_rows(x.ptr<float>(), y.ptr<float>(), rows, n, float(eps), g, bt);
    else fast::layernorm_rows(row_kernels_for(current_isa()), x.ptr<float>(), y.ptr<float>(), rows,
                              n, float(eps), g, bt);
    return y;
  }, py::arg("x"), py::arg("gamma") = py::none(), py::arg("beta") = py::none(),
     py::arg("eps") = 1e-5, py::arg("reference") = false);
  m.def("gelu", [](const Tensor& x, bool reference) {
    row_length(x, "gelu");
    Tensor y = Tensor::empty(DType::f32, x.shape);
    py::gil_scoped_release nogil;
    if (reference) ref::gelu(x.ptr<float>(), y.ptr<float>(), x.numel());
    else fast::gelu(row_kernels_for(current_isa()), x.ptr<float>(), y.ptr<float>(), x.numel());
    return y;
  }, py::arg("x"), py::arg("reference") = false);
}
