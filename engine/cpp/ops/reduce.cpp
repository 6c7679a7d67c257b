// Reductions.
//
//   ReduceSum/Mean/Max/Min/Prod(x) = reduce over `axes` (attribute, or input 1 from
//       opset 13/18); empty axes reduce everything unless noop_with_empty_axes
//   ReduceSumSquare(x) = sum(x * x);  ReduceL2(x) = sqrt(sum(x * x));  ReduceL1 = sum|x|
//   ReduceLogSumExp(x) = m + log(sum(exp(x - m))), m = max(x)
//   ArgMax(x) / ArgMin(x) = index of the max of x / of -x along one axis
#include "ops/common.h"

namespace walle::ops {
namespace {

std::vector<int> Reduce(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const int x = in[0];
  const int64_t rank = b.shape(x).size();
  std::vector<int64_t> axes = nd.get_ints("axes");
  if (opt(in, 1) >= 0) axes = b.const_ints(in[1]);
  const bool keep = nd.get_int("keepdims", 1);
  if (axes.empty()) {
    if (nd.get_int("noop_with_empty_axes", 0)) return {b.alias(x, b.shape(x))};
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  const std::string& op = nd.op;
  if (op == "ReduceSum") return {b.reduce(ReduceOp::sum, x, axes, keep)};
  if (op == "ReduceMean") return {b.reduce(ReduceOp::mean, x, axes, keep)};
  if (op == "ReduceMax") return {b.reduce(ReduceOp::max, x, axes, keep)};
  if (op == "ReduceMin") return {b.reduce(ReduceOp::min, x, axes, keep)};
  if (op == "ReduceProd") return {b.reduce(ReduceOp::prod, x, axes, keep)};
  if (op == "ReduceL1") return {b.reduce(ReduceOp::sum, b.unary(UnaryOp::abs, x), axes, keep)};
  // x * x
  if (op == "ReduceSumSquare" || op == "ReduceL2") {
    const int s = b.reduce(ReduceOp::sum, b.binary(BinaryOp::mul, x, x), axes, keep);
    if (op == "ReduceL2") b.unary(UnaryOp::sqrt, s, s);
    return {s};
  }
  // ReduceLogSumExp: m + log(sum(exp(x - m)))
  const int m = b.reduce(ReduceOp::max, x, axes, true);
  const int e = b.unary(UnaryOp::exp, b.binary(BinaryOp::sub, x, m));
  const int s = b.reduce(ReduceOp::sum, e, axes, true);
  b.unary(UnaryOp::log, s, s);
  b.binary(BinaryOp::add, s, m, s);
  return {b.alias(s, reduced_shape(b.shape(x), axes, keep))};
}

std::vector<int> ArgMax(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  int x = in[0];
  if (nd.op == "ArgMin") x = b.unary(UnaryOp::neg, x);
  return {b.argmax(x, nd.get_int("axis", 0), nd.get_int("keepdims", 1),
                   nd.get_int("select_last_index", 0))};
}

}  // namespace

WALLE_REGISTER_OPS(reg_reduce, Reduce, "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
                   "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp");
WALLE_REGISTER_OPS(reg_argmax, ArgMax, "ArgMax", "ArgMin");

}  // namespace walle::ops
