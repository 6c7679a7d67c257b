// Softmax family, stabilised by the row maximum.
//
//   Softmax(x)    = e / sum(e),          e = exp(x - max(x))
//   LogSoftmax(x) = (x - max(x)) - log(sum(exp(x - max(x))))
// The reduction covers one axis (opset >= 13) or, for models converted from older
// opsets, every axis from `axis` on (the converter sets legacy_axes).
#include "ops/common.h"

namespace walle::ops {
namespace {

std::vector<int> Softmax(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const int x = in[0];
  const int64_t rank = b.shape(x).size();
  const int64_t axis = norm_axis(nd.get_int("axis", -1), rank);
  std::vector<int64_t> axes = {axis};
  if (nd.get_int("legacy_axes", 0))
    for (int64_t d = axis + 1; d < rank; ++d) axes.push_back(d);
  // d = x - max(x)
  const int m = b.reduce(ReduceOp::max, x, axes, true);
  const int d = b.binary(BinaryOp::sub, x, m);
  // e = exp(d); s = sum(e)
  const int e = b.unary(UnaryOp::exp, d);
  const int s = b.reduce(ReduceOp::sum, e, axes, true);
  if (nd.op == "Softmax") {  // e * (1 / s): one divide per row, not per element
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
