// Softmax family, stabilised by the row maximum.
//
//   Softmax(x)    = e / sum(e),          e = exp(x - max(x))
//   LogSoftmax(x) = (x - max(x)) - log(sum(exp(x - max(x))))
// The reduction covers one axis (opset >= 13) or, for models converted from older
// opsets, every axis from `axis` on (the converter sets legacy_axes). A `scale` attribute
// (the converter folds a preceding division by a positive constant into it) multiplies x
// first. When the reduced axes are the trailing ones, all of it is one fused row kernel
// (kernels/rows.h); otherwise the decomposition below.
#include "kernels/rows.h"
#include "ops/common.h"

namespace walle::ops {
namespace {

std::vector<int> Softmax(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  int x = in[0];
  const int64_t rank = b.shape(x).size();
  const int64_t axis = norm_axis(nd.get_int("axis", -1), rank);
  std::vector<int64_t> axes = {axis};
  const bool legacy = nd.get_int("legacy_axes", 0);
  if (legacy)
    for (int64_t d = axis + 1; d < rank; ++d) axes.push_back(d);
  const float scale = float(nd.get_float("scale", 1.0));
  const bool log = nd.op == "LogSoftmax";
  const Shape shape = b.shape(x);
  if (b.dtype(x) == DType::f32 && (legacy || axis == rank - 1) && numel(shape) > 0) {
    int64_t n = 1;
    for (int64_t d = axis; d < rank; ++d) n *= shape[d];
    const int64_t rows = numel(shape) / n;
    const int y = b.temp(DType::f32, shape);
    const RowKernels* rk = &row_kernels_for(b.isa());
    b.custom(log ? "fused:log_softmax" : "fused:softmax", {x}, {y}, [=](const ExecCtx& c) {
      fast::softmax_rows(*rk, static_cast<const float*>(c.ptr[x]), static_cast<float*>(c.ptr[y]),
                         rows, n, scale, log);
    });
    return {y};
  }
  if (scale != 1.0f) x = b.unary(UnaryOp::affine, x, scale, 0.0f);
  // d = x - max(x)
  const int m = b.reduce(ReduceOp::max, x, axes, true);
  const int d = b.binary(BinaryOp::sub, x, m);
  // e = exp(d); s = sum(e)
  const int e = b.unary(UnaryOp::exp, d);
  const int s = b.reduce(ReduceOp::sum, e, axes, true);
  if (!log) {  // e * (1 / s): one divide per row, not per element
    b.unary(UnaryOp::reciprocal, s, s);
    b.binary(BinaryOp::mul, e, s, e);
    return {e};
  }
  // d - log(s)
  b.unary(UnaryOp::log, s, s);
  b.binary(BinaryOp::sub, d, s, d);
  return {d};
}

}  // namespace

WALLE_REGISTER_OPS(reg_softmax, Softmax, "Softmax", "LogSoftmax");

}  // namespace walle::ops
