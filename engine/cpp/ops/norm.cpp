// Normalisation.
//
//   LayerNormalization(x)    = (x - mean) * rsqrt(var + eps) * scale + bias
//                              over axes [axis, rank); var = mean((x - mean)^2)
//   InstanceNormalization(x) = the same over spatial axes, scale/bias per channel
//   BatchNormalization(x)    = x * s + t per channel, s = gamma / sqrt(var + eps),
//                              t = beta - mean * s: s and t are computed here at load
//                              (the converter folds it into a preceding Conv instead).
//   RMSNormalization(x)      = x * rsqrt(mean(x^2) + eps) * scale over axes [axis, rank)
//   LRN(x)                   = x / (bias + alpha/size * sum_{window} x^2)^beta, the
//                              window over channels c - (size-1)/2 .. c + size/2:
//                              a raster stacks the shifted squares [N, size, C, HW]
//                              (zero outside), then one sum over the stack axis.
#include <cmath>

#include "kernels/rows.h"
#include "ops/common.h"

namespace walle::ops {
namespace {

int normalize(Builder& b, int x, const std::vector<int64_t>& axes, float eps, int* mean_out = nullptr,
              int* rstd_out = nullptr) {
  // d = x - mean(x)
  const int mean = b.reduce(ReduceOp::mean, x, axes, true);
  if (mean_out) *mean_out = mean;
  const int d = b.binary(BinaryOp::sub, x, mean);
  // v = mean(d * d); r = rsqrt(v + eps)
  const int sq = b.binary(BinaryOp::mul, d, d);
  const int v = b.reduce(ReduceOp::mean, sq, axes, true);
  b.unary(UnaryOp::affine, v, v, 1.0f, eps);
  b.unary(UnaryOp::rsqrt, v, v);
  if (rstd_out) *rstd_out = v;
  // d * r
  b.binary(BinaryOp::mul, d, v, d);
  return d;
}

std::vector<int> LayerNorm(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const int x = in[0];
  const int64_t rank = b.shape(x).size();
  const int64_t axis = norm_axis(nd.get_int("axis", -1), rank);
  std::vector<int64_t> axes;
  for (int64_t d = axis; d < rank; ++d) axes.push_back(d);
  // One fused row kernel (kernels/rows.h) unless the Mean / InvStdDev outputs are used or
  // scale and bias are not plain vectors over the normalised elements.
  const Shape shape = b.shape(x);
  int64_t n = 1;
  for (int64_t d = axis; d < rank; ++d) n *= shape[d];
  auto row_vector = [&](int id) {
    return id < 0 || (b.dtype(id) == DType::f32 && numel(b.shape(id)) == n &&
                      b.shape(id).size() <= size_t(rank - axis));
  };
  bool stats_used = false;
  for (size_t i = 1; i < nd.outputs.size(); ++i) stats_used = stats_used || !nd.outputs[i].empty();
  if (b.dtype(x) == DType::f32 && !stats_used && n > 0 && row_vector(opt(in, 1)) &&
      row_vector(opt(in, 2))) {
    const int64_t rows = numel(shape) / n;
    const float eps = float(nd.get_float("epsilon", 1e-5));
    const int gamma = opt(in, 1), beta = opt(in, 2);
    const int y = b.temp(DType::f32, shape);
    const RowKernels* rk = &row_kernels_for(b.isa());
    std::vector<int> ins = {x};
    if (gamma >= 0) ins.push_back(gamma);
    if (beta >= 0) ins.push_back(beta);
    b.custom("fused:layernorm", ins, {y}, [=](const ExecCtx& c) {
      fast::layernorm_rows(*rk, static_cast<const float*>(c.ptr[x]), static_cast<float*>(c.ptr[y]),
                           rows, n, eps,
                           gamma >= 0 ? static_cast<const float*>(c.ptr[gamma]) : nullptr,
                           beta >= 0 ? static_cast<const float*>(c.ptr[beta]) : nullptr);
    });
    return {y};
  }
  int mean = -1, rstd = -1;
  const int y = normalize(b, x, axes, float(nd.get_float("epsilon", 1e-5)), &mean, &rstd);
  // * scale + bias
  if (opt(in, 1) >= 0) b.binary(BinaryOp::mul, y, in[1], y);
  if (opt(in, 2) >= 0) b.binary(BinaryOp::add, y, in[2], y);
  return {y, mean, rstd};  // optional outputs Mean and InvStdDev (kept dims)
}

std::vector<int> InstanceNorm(Builder& b, const std::vector<int>& in) {
  const int x = in[0];
  const int64_t rank = b.shape(x).size();
  if (rank < 3) throw Error("InstanceNormalization needs an input of rank >= 3 [N, C, ...]");
  const int64_t C = b.shape(x)[1];
  if (numel(b.shape(in[1])) != C || numel(b.shape(in[2])) != C)
    throw Error("InstanceNormalization scale and bias need one value per channel (" +
                std::to_string(C) + ")");
  std::vector<int64_t> axes;
  for (int64_t d = 2; d < rank; ++d) axes.push_back(d);
  const int y = normalize(b, x, axes, float(b.node().get_float("epsilon", 1e-5)));
  Shape cs(rank - 1, 1);
  cs[0] = b.shape(x)[1];
  b.binary(BinaryOp::mul, y, b.alias(in[1], cs), y);
  b.binary(BinaryOp::add, y, b.alias(in[2], cs), y);
  return {y};
}

std::vector<int> BatchNorm(Builder& b, const std::vector<int>& in) {
  const int x = in[0];
  const float eps = float(b.node().get_float("epsilon", 1e-5));
  const Tensor gamma = b.const_data(in[1]);
  const Tensor beta = b.const_data(in[2]);
  const Tensor mean = b.const_data(in[3]);
  const Tensor var = b.const_data(in[4]);
  const int64_t C = gamma.numel();
  const Shape xs = b.shape(x);
  if (xs.size() < 2 || xs[1] != C)
    throw Error("BatchNormalization needs an input [N, C, ...] with C = " + std::to_string(C) +
                ", got " + shape_str(xs));
  for (const Tensor* p : {&gamma, &beta, &mean, &var})
    if (p->dtype != DType::f32 || p->numel() != C)
      throw Error("BatchNormalization scale, bias, mean and var must be float32 with " +
                  std::to_string(C) + " values");
  Tensor s = Tensor::empty(DType::f32, {C}), t = Tensor::empty(DType::f32, {C});
  for (int64_t c = 0; c < C; ++c) {
    const float sc = gamma.ptr<float>()[c] / std::sqrt(var.ptr<float>()[c] + eps);
    s.ptr<float>()[c] = sc;
    t.ptr<float>()[c] = beta.ptr<float>()[c] - mean.ptr<float>()[c] * sc;
  }
  const int64_t rank = b.shape(x).size();
  Shape cs(std::max<int64_t>(rank - 1, 1), 1);
  cs[0] = C;
  // x * s + t
  const int y = b.binary(BinaryOp::mul, x, b.add_const(s.reshaped(cs)));
  b.binary(BinaryOp::add, y, b.add_const(t.reshaped(cs)), y);
  return {y};
}

std::vector<int> RMSNorm(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const int x = in[0];
  const int64_t rank = b.shape(x).size();
  const int64_t axis = norm_axis(nd.get_int("axis", -1), rank);
  std::vector<int64_t> axes;
  for (int64_t d = axis; d < rank; ++d) axes.push_back(d);
  if (b.dtype(x) != DType::f32) throw Error("RMSNormalization of non-float32 input is not supported");
  // r = rsqrt(mean(x * x) + eps)
  const int r = b.reduce(ReduceOp::mean, b.binary(BinaryOp::mul, x, x), axes, true);
  b.unary(UnaryOp::affine, r, r, 1.0f, float(nd.get_float("epsilon", 1e-5)));
  b.unary(UnaryOp::rsqrt, r, r);
  // x * r * scale
  const int y = b.binary(BinaryOp::mul, x, r);
  b.binary(BinaryOp::mul, y, in[1], y);
  return {y};
}

std::vector<int> LRN(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const int x = in[0];
  const Shape s = b.shape(x);
  if (s.size() < 3) throw Error("LRN needs an [N, C, ...] input");
  const int64_t size = nd.get_int("size", 1), N = s[0], C = s[1];
  if (size < 1 || size > 4096) throw Error("LRN size must be in [1, 4096]");
  if (N * C == 0) throw Error("LRN of an empty input " + shape_str(s));
  const int64_t hw = numel(s) / (N * C);
  const float alpha = float(nd.get_float("alpha", 1e-4)), beta = float(nd.get_float("beta", 0.75)),
              bias = float(nd.get_float("bias", 1.0));
  // x^2
  const int sq = b.binary(BinaryOp::mul, x, x);
  // stack[n, k, c, :] = sq[n, c + k - (size-1)/2, :]
  RasterSpec spec;
  spec.has_fill = true;
  const int64_t lo = (size - 1) / 2;
  for (int64_t k = 0; k < size; ++k) {
    const int64_t shift = k - lo;
    const int64_t c0 = std::max<int64_t>(0, -shift), c1 = std::min(C, C - shift);
    if (c1 <= c0) continue;
    spec.regions.push_back(sub_region({N, c1 - c0, hw}, {C * hw, hw, 1}, (c0 + shift) * hw,
                                      {size * C * hw, hw, 1}, (k * C + c0) * hw, 0));
  }
  const int stack = b.raster({sq}, spec, DType::f32, {N, size, C, hw});
  const int sum = b.reduce(ReduceOp::sum, stack, {1}, false);
  // (bias + alpha/size * sum)^beta, then x / that
  b.unary(UnaryOp::affine, sum, sum, alpha / float(size), bias);
  const int p = b.binary(BinaryOp::pow, sum, b.add_const(scalar_f32(beta)));
  return {b.binary(BinaryOp::div, x, b.alias(p, s))};
}

}  // namespace

WALLE_REGISTER_OPS(reg_lrn, LRN, "LRN");
WALLE_REGISTER_OPS(reg_rms, RMSNorm, "RMSNormalization");
WALLE_REGISTER_OPS(reg_ln, LayerNorm, "LayerNormalization");
WALLE_REGISTER_OPS(reg_in, InstanceNorm, "InstanceNormalization");
WALLE_REGISTER_OPS(reg_bn, BatchNorm, "BatchNormalization");

}  // namespace walle::ops
