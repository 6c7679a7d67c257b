// Elementwise operators and activations.
//
//   unary ops map 1:1 onto UnaryOp kernels (Relu, Sigmoid, Tanh, Erf, Exp, Log, ...)
//   Clip(x, lo, hi)      = clip(x; lo, hi)
//   LeakyRelu(x)         = max(x, a*x)                       (0 <= a <= 1)
//                        = select(x > 0, x, a*x)             (otherwise)
//   PRelu(x, s)          = select(x > 0, x, s*x)             (s broadcast)
//   HardSigmoid(x)       = clip(a*x + b; 0, 1)
//   HardSwish(x)         = x * clip(x/6 + 1/2; 0, 1)
//   Gelu(x)              = x * (1/2 + 1/2 erf(x / sqrt 2))
//   Gelu_tanh(x)         = x * (1/2 + 1/2 tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   Elu(x)               = select(x > 0, x, a*(exp(x) - 1))
//   Selu(x)              = g * Elu_a(x)
//   Softsign(x)          = x / (1 + |x|)
//   Mish(x)              = x * tanh(softplus(x))
//   Not(x)               = x xor true
//   Where(c, a, b)       = select(c, a, b)
//   CastLike(x, t)       = cast(x; dtype of t)
//   Sum/Mean/Max/Min(xs) = left fold of the binary op (Mean scaled by 1/n)
#include <cstring>

#include <cmath>

#include "kernels/rows.h"
#include "ops/common.h"

namespace walle::ops {
namespace {

std::vector<int> Unary(Builder& b, const std::vector<int>& in) {
  static const std::map<std::string, UnaryOp> m = {
      {"Relu", UnaryOp::relu}, {"Sigmoid", UnaryOp::sigmoid}, {"Tanh", UnaryOp::tanh},
      {"Erf", UnaryOp::erf}, {"Exp", UnaryOp::exp}, {"Log", UnaryOp::log},
      {"Sqrt", UnaryOp::sqrt}, {"Neg", UnaryOp::neg}, {"Abs", UnaryOp::abs},
      {"Reciprocal", UnaryOp::reciprocal}, {"Floor", UnaryOp::floor},
      {"Ceil", UnaryOp::ceil}, {"Round", UnaryOp::round}, {"Sin", UnaryOp::sin},
      {"Cos", UnaryOp::cos}, {"Sign", UnaryOp::sign}, {"Softplus", UnaryOp::softplus}};
  const UnaryOp op = m.at(b.node().op);
  if (b.dtype(in[0]) != DType::f32 && op != UnaryOp::relu && op != UnaryOp::abs &&
      op != UnaryOp::neg && op != UnaryOp::sign)
    throw Error(b.node().op + " needs float32 input");
  return {b.unary(op, in[0])};
}

std::vector<int> Clip(Builder& b, const std::vector<int>& in) {
  // Bounds known at load: one clip step. Bounds computed at run time: min(max(x, lo), hi).
  if ((opt(in, 1) >= 0 && !b.is_const(in[1])) || (opt(in, 2) >= 0 && !b.is_const(in[2]))) {
    int y = in[0];
    if (opt(in, 1) >= 0) y = b.binary(BinaryOp::max, y, in[1]);
    if (opt(in, 2) >= 0) y = b.binary(BinaryOp::min, y, in[2]);
    return {y == in[0] ? b.alias(y, b.shape(y)) : y};
  }
  double lo = b.node().get_float("min", -INFINITY), hi = b.node().get_float("max", INFINITY);
  if (opt(in, 1) >= 0) lo = b.const_scalar(in[1]);
  if (opt(in, 2) >= 0) hi = b.const_scalar(in[2]);
  if (b.dtype(in[0]) != DType::f32) {
    // Integer clip: exact bounds, no float rounding.
    int y = in[0];
    if (opt(in, 1) >= 0) y = b.binary(BinaryOp::max, y, in[1]);
    if (opt(in, 2) >= 0) y = b.binary(BinaryOp::min, y, in[2]);
    return {y == in[0] ? b.alias(y, b.shape(y)) : y};
  }
  return {b.unary(UnaryOp::clip, in[0], float(lo), float(hi))};
}

std::vector<int> LeakyRelu(Builder& b, const std::vector<int>& in) {
  const float a = float(b.node().get_float("alpha", 0.01));
  // a * x
  const int ax = b.unary(UnaryOp::affine, in[0], a, 0.0f);
  if (a >= 0.0f && a <= 1.0f) return {b.binary(BinaryOp::max, in[0], ax)};
  // select(x > 0, x, a * x)
  const int zero = b.add_const(scalar_f32(0));
  return {b.select(b.binary(BinaryOp::gt, in[0], zero), in[0], ax)};
}

std::vector<int> PRelu(Builder& b, const std::vector<int>& in) {
  const int zero = b.add_const(scalar_f32(0));
  int slope = in[1];
  const Shape xs = b.shape(in[0]), ss = b.shape(slope);
  // Old exporters give a per-channel slope [C] for NC... inputs: align it with dim 1.
  if (ss.size() == 1 && xs.size() > 2 && ss[0] == xs[1] && ss[0] != xs.back()) {
    Shape cs(xs.size() - 1, 1);
    cs[0] = ss[0];
    slope = b.alias(slope, cs);
  }
  // s * x
  const int sx = b.binary(BinaryOp::mul, in[0], slope);
  // select(x > 0, x, s * x)
  return {b.select(b.binary(BinaryOp::gt, in[0], zero), in[0], sx)};
}

std::vector<int> HardSigmoid(Builder& b, const std::vector<int>& in) {
  const float a = float(b.node().get_float("alpha", 0.2)), c = float(b.node().get_float("beta", 0.5));
  // a*x + b, then clip to [0, 1]
  const int t = b.unary(UnaryOp::affine, in[0], a, c);
  b.unary(UnaryOp::clip, t, t, 0.0f, 1.0f);
  return {t};
}

std::vector<int> HardSwish(Builder& b, const std::vector<int>& in) {
  // clip(x/6 + 1/2; 0, 1)
  const int t = b.unary(UnaryOp::affine, in[0], 1.0f / 6.0f, 0.5f);
  b.unary(UnaryOp::clip, t, t, 0.0f, 1.0f);
  // x * that
  return {b.binary(BinaryOp::mul, in[0], t)};
}

std::vector<int> Gelu(Builder& b, const std::vector<int>& in) {
  const int x = in[0];
  if (b.node().get_string("approximate", "none") != "tanh" && b.dtype(x) == DType::f32) {
    // erf-GELU as one fused kernel (kernels/rows.h); the converter also maps the
    // x * 0.5 * (1 + erf(x / sqrt 2)) pattern that exporters emit onto this op.
    const int y = b.temp(DType::f32, b.shape(x));
    const int64_t n = numel(b.shape(x));
    const RowKernels* rk = &row_kernels_for(b.isa());
    b.custom("fused:gelu", {x}, {y}, [=](const ExecCtx& c) {
      fast::gelu(*rk, static_cast<const float*>(c.ptr[x]), static_cast<float*>(c.ptr[y]), n);
    });
    return {y};
  }
  int t;
  if (b.node().get_string("approximate", "none") == "tanh") {
    // u = x + 0.044715 x^3 = x * (1 + 0.044715 x^2)
    const int x2 = b.binary(BinaryOp::mul, x, x);
    b.unary(UnaryOp::affine, x2, x2, 0.044715f, 1.0f);
    const int u = b.binary(BinaryOp::mul, x, x2);
    // tanh(sqrt(2/pi) u)
    b.unary(UnaryOp::affine, u, u, 0.7978845608028654f, 0.0f);
    t = b.unary(UnaryOp::tanh, u);
  } else {
    // erf(x / sqrt 2)
    t = b.unary(UnaryOp::affine, x, 0.7071067811865476f, 0.0f);
    b.unary(UnaryOp::erf, t, t);
  }
  // 1/2 + 1/2 t, times x
  b.unary(UnaryOp::affine, t, t, 0.5f, 0.5f);
  return {b.binary(BinaryOp::mul, x, t)};
}

std::vector<int> Elu(Builder& b, const std::vector<int>& in) {
  const bool selu = b.node().op == "Selu";
  const float a = float(b.node().get_float("alpha", selu ? 1.67326319217681884765625 : 1.0));
  const float g = selu ? float(b.node().get_float("gamma", 1.05070102214813232421875)) : 1.0f;
  const int zero = b.add_const(scalar_f32(0));
  // a * (exp(x) - 1)
  const int e = b.unary(UnaryOp::exp, in[0]);
  b.unary(UnaryOp::affine, e, e, a, -a);
  int y = b.select(b.binary(BinaryOp::gt, in[0], zero), in[0], e);
  if (g != 1.0f) b.unary(UnaryOp::affine, y, y, g, 0.0f);
  return {y};
}

std::vector<int> Softsign(Builder& b, const std::vector<int>& in) {
  // 1 + |x|
  const int d = b.unary(UnaryOp::abs, in[0]);
  b.unary(UnaryOp::affine, d, d, 1.0f, 1.0f);
  return {b.binary(BinaryOp::div, in[0], d)};
}

std::vector<int> Mish(Builder& b, const std::vector<int>& in) {
  const int t = b.unary(UnaryOp::softplus, in[0]);
  b.unary(UnaryOp::tanh, t, t);
  return {b.binary(BinaryOp::mul, in[0], t)};
}

std::vector<int> Binary(Builder& b, const std::vector<int>& in) {
  static const std::map<std::string, BinaryOp> m = {
      {"Add", BinaryOp::add}, {"Sub", BinaryOp::sub}, {"Mul", BinaryOp::mul},
      {"Div", BinaryOp::div}, {"Pow", BinaryOp::pow}, {"Equal", BinaryOp::eq},
      {"Less", BinaryOp::lt}, {"Greater", BinaryOp::gt}, {"LessOrEqual", BinaryOp::le},
      {"GreaterOrEqual", BinaryOp::ge}, {"And", BinaryOp::logical_and},
      {"Or", BinaryOp::logical_or}, {"Xor", BinaryOp::logical_xor}, {"Mod", BinaryOp::mod}};
  BinaryOp op = m.at(b.node().op);
  int x = in[0], y = in[1];
  if (op == BinaryOp::pow && b.dtype(y) != b.dtype(x)) y = b.cast(y, b.dtype(x));
  if (op == BinaryOp::mod && b.node().get_int("fmod", 0) && b.dtype(x) != DType::f32) {
    // Integer fmod (sign of the dividend): a - trunc(a / b) * b.
    const int q = b.binary(BinaryOp::div, x, y);
    return {b.binary(BinaryOp::sub, x, b.binary(BinaryOp::mul, q, y))};
  }
  if (op == BinaryOp::mod && b.dtype(x) == DType::f32 && !b.node().get_int("fmod", 0))
    throw Error("float Mod with fmod=0 is not supported");
  // x / c for a constant scalar c (attention scales, GELU's 1/sqrt(2)) as x * (1/c):
  // a multiply pass instead of a divide pass (within an ulp of the quotient).
  if (op == BinaryOp::div && b.dtype(x) == DType::f32 && b.dtype(y) == DType::f32 &&
      b.is_const(y) && numel(b.shape(y)) == 1 && !b.is_const(x) &&
      b.shape(x).size() >= b.shape(y).size()) {
    const double c = b.const_scalar(y);
    if (c != 0.0 && std::isfinite(1.0 / c))
      return {b.unary(UnaryOp::affine, x, float(1.0 / c), 0.0f)};
  }
  return {b.binary(op, x, y)};
}

std::vector<int> Variadic(Builder& b, const std::vector<int>& in) {
  const std::string& op = b.node().op;
  const BinaryOp bop = op == "Max" ? BinaryOp::max : op == "Min" ? BinaryOp::min : BinaryOp::add;
  std::vector<int> xs;  // the node's inputs (`in` is padded with omitted ones)
  for (int i : b.in_ids)
    if (i >= 0) xs.push_back(i);
  if (xs.empty()) throw Error(op + " needs at least one input");
  int acc = xs[0];
  for (size_t i = 1; i < xs.size(); ++i) acc = b.binary(bop, acc, xs[i]);
  if (op == "Mean" && xs.size() > 1) {
    const int y = b.unary(UnaryOp::affine, acc, 1.0f / float(xs.size()), 0.0f);
    return {y};
  }
  if (xs.size() == 1) {  // copy so the output is a value of its own
    RasterSpec spec;
    spec.regions.push_back(dense_region({numel(b.shape(acc))}, {1}, 0, 0));
    return {b.alias(b.raster({acc}, spec, b.dtype(acc), {numel(b.shape(acc))}), b.shape(acc))};
  }
  return {acc};
}

std::vector<int> Not(Builder& b, const std::vector<int>& in) {
  Tensor t = Tensor::empty(DType::b8, {});
  t.ptr<uint8_t>()[0] = 1;
  return {b.binary(BinaryOp::logical_xor, in[0], b.add_const(t))};
}

std::vector<int> Where(Builder& b, const std::vector<int>& in) {
  return {b.select(in[0], in[1], in[2])};
}

std::vector<int> Cast(Builder& b, const std::vector<int>& in) {
  static const std::map<int64_t, DType> onnx_types = {
      {1, DType::f32}, {2, DType::u8}, {6, DType::i32}, {7, DType::i64}, {9, DType::b8}};
  auto it = onnx_types.find(b.node().get_int("to", 1));
  if (it == onnx_types.end())
    throw Error("Cast to ONNX type " + std::to_string(b.node().get_int("to", 1)) +
                " is not supported (float32, uint8, int32, int64, bool only)");
  const int y = b.cast(in[0], it->second);
  return {y == in[0] ? b.alias(y, b.shape(y)) : y};
}

std::vector<int> CastLike(Builder& b, const std::vector<int>& in) {
  const int y = b.cast(in[0], b.dtype(in[1]));
  return {y == in[0] ? b.alias(y, b.shape(y)) : y};
}

std::vector<int> Identity(Builder& b, const std::vector<int>& in) {
  if (b.node().op == "Dropout") {
    if (opt(in, 2) >= 0 && b.const_scalar(in[2]) != 0)
      throw Error("Dropout in training mode is not supported (inference engine)");
    // Inference: y = x, mask = all true.
    Tensor mask = Tensor::empty(DType::b8, b.shape(in[0]));
    std::memset(mask.data, 1, mask.nbytes());
    return {b.alias(in[0], b.shape(in[0])), b.add_const(mask)};
  }
  return {b.alias(in[0], b.shape(in[0]))};
}

}  // namespace

WALLE_REGISTER_OPS(reg_unary, Unary, "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Sqrt",
                   "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Sign",
                   "Softplus");
WALLE_REGISTER_OPS(reg_clip, Clip, "Clip");
WALLE_REGISTER_OPS(reg_leaky, LeakyRelu, "LeakyRelu");
WALLE_REGISTER_OPS(reg_prelu, PRelu, "PRelu");
WALLE_REGISTER_OPS(reg_hsig, HardSigmoid, "HardSigmoid");
WALLE_REGISTER_OPS(reg_hswish, HardSwish, "HardSwish");
WALLE_REGISTER_OPS(reg_gelu, Gelu, "Gelu");
WALLE_REGISTER_OPS(reg_elu, Elu, "Elu", "Selu");
WALLE_REGISTER_OPS(reg_softsign, Softsign, "Softsign");
WALLE_REGISTER_OPS(reg_mish, Mish, "Mish");
WALLE_REGISTER_OPS(reg_binary, Binary, "Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less",
                   "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod");
WALLE_REGISTER_OPS(reg_variadic, Variadic, "Sum", "Mean", "Max", "Min");
WALLE_REGISTER_OPS(reg_not, Not, "Not");
WALLE_REGISTER_OPS(reg_where, Where, "Where");
WALLE_REGISTER_OPS(reg_cast, Cast, "Cast");
WALLE_REGISTER_OPS(reg_castlike, CastLike, "CastLike");
WALLE_REGISTER_OPS(reg_identity, Identity, "Identity", "Dropout");

}  // namespace walle::ops
