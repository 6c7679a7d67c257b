// MatMul and Gemm.
//
//   MatMul(A, B[, bias[, r]]) = batched matmul with numpy broadcasting (+ bias[N], + a
//                          residual r, then a Relu/Clip clamp: all fused from following
//                          nodes by the converter, all in the GEMM epilogue); 1-D operands are
//                          promoted ([K] -> [1, K] or [K, 1]) and the unit dim removed.
//                          With a 2-D B, A's batch dims fold into M: one big GEMM.
//   Gemm(A, B, C)        = alpha * op(A) op(B) + beta * C
//                          (bias and alpha == 1 fused into the GEMM epilogue when C is a
//                          row [N] / column [M, 1] vector; otherwise an explicit add)
#include "ops/common.h"

namespace walle::ops {
namespace {

std::string sig_mnk(const std::string& op, int64_t m, int64_t n, int64_t k, int64_t batch) {
  return op + "|m" + std::to_string(m) + "n" + std::to_string(n) + "k" + std::to_string(k) +
         "b" + std::to_string(batch);
}

std::vector<int> MatMul(Builder& b, const std::vector<int>& in) {
  int a = in[0], w = in[1];
  if (b.dtype(a) != DType::f32 || b.dtype(w) != DType::f32)
    throw Error("MatMul supports float32 only");
  Shape sa = b.shape(a), sw = b.shape(w);
  const bool a1 = sa.size() == 1, w1 = sw.size() == 1;
  if (a1) { sa = {1, sa[0]}; a = b.alias(a, sa); }
  if (w1) { sw = {sw[0], 1}; w = b.alias(w, sw); }
  const int64_t M = sa[sa.size() - 2], K = sa.back(), N = sw.back();
  if (sw[sw.size() - 2] != K)
    throw Error("MatMul inner dimensions differ: " + shape_str(sa) + " x " + shape_str(sw));
  const Shape batch = broadcast_shapes(Shape(sa.begin(), sa.end() - 2), Shape(sw.begin(), sw.end() - 2));
  Shape out = batch;
  out.push_back(M);
  out.push_back(N);
  Shape final_shape = out;
  if (a1) final_shape.erase(final_shape.end() - 2);
  if (w1) final_shape.pop_back();

  int64_t gm = M;
  int64_t nb = numel(batch);
  if (sw.size() == 2 && sa.size() > 2) {  // fold batch into M
    gm = M * numel(Shape(sa.begin(), sa.end() - 2));
    a = b.alias(a, {gm, K});
    nb = 1;
  }
  std::vector<Candidate> cands;
  const bool packed = b.is_const(w);
  add_gemm_candidates(cands, "gemm", packed, [&](const KernelTable& kt, int v) {
    return double(nb) * gemm_cost(kt, v, gm, N, K, packed);
  });
  const Choice c = b.choose(sig_mnk("MatMul", gm, N, K, nb) + (packed ? "c" : ""), cands);
  b.use_isa(c.isa);
  Builder::MatmulOpts o;
  o.variant = c.gemm_variant;
  // A third input is a bias along N fused by the converter (MatMul + Add of a row vector).
  const int bias = opt(in, 2);
  if (bias >= 0) {
    if (numel(b.shape(bias)) != N || b.shape(bias).size() != 1)
      throw Error("MatMul bias must be a vector of " + std::to_string(N));
    o.bias = bias;
    o.bias_axis = 'n';
  }
  const auto& nd = b.node();
  const float lo = float(nd.get_float("activation_min", -INFINITY));
  const float hi = float(nd.get_float("activation_max", INFINITY));
  // A residual of the output's shape is added in the epilogue, before the clamp; one that
  // broadcasts is added after, and then the clamp has to wait for it.
  const int residual = opt(in, 3);
  const bool fuse_res = residual >= 0 && b.shape(residual) == final_shape;
  if (residual < 0 || fuse_res) {
    o.lo = lo;
    o.hi = hi;
  }
  if (fuse_res) o.addend = residual;
  int y;
  if (nb == 1 && sw.size() == 2) {
    y = b.temp(DType::f32, {gm, N});
    b.matmul(a, w, y, o);
  } else {
    y = b.temp(DType::f32, out);
    b.matmul(a, w, y, o);
  }
  int r = b.alias(y, final_shape);
  if (residual >= 0 && !fuse_res) {
    r = b.binary(BinaryOp::add, r, residual);
    if (lo > -INFINITY || hi < INFINITY) b.unary(UnaryOp::clip, r, r, lo, hi);
  }
  return {r};
}

std::vector<int> Gemm(Builder& b, const std::vector<int>& in) {
  const auto& n = b.node();
  const bool ta = n.get_int("transA", 0), tb = n.get_int("transB", 0);
  const float alpha = float(n.get_float("alpha", 1.0)), beta = float(n.get_float("beta", 1.0));
  const int a = in[0], w = in[1], c = opt(in, 2);
  const Shape sa = b.shape(a);
  const Shape sw = b.shape(w);
  if (sa.size() != 2 || sw.size() != 2) throw Error("Gemm needs 2-D A and B");
  const int64_t M = ta ? sa[1] : sa[0], K = ta ? sa[0] : sa[1], N = tb ? sw[0] : sw[1];
  if ((tb ? sw[1] : sw[0]) != K)
    throw Error("Gemm inner dimensions differ: " + shape_str(sa) + " x " + shape_str(sw));
  std::vector<Candidate> cands;
  const bool packed = b.is_const(w);
  add_gemm_candidates(cands, "gemm", packed, [&](const KernelTable& kt, int v) {
    return gemm_cost(kt, v, M, N, K, packed);
  });
  const Choice ch = b.choose(sig_mnk("Gemm", M, N, K, 1) + (ta ? "ta" : "") + (tb ? "tb" : "") +
                                 (packed ? "c" : ""),
                             cands);
  b.use_isa(ch.isa);
  Builder::MatmulOpts o;
  o.trans_a = ta;
  o.trans_b = tb;
  o.variant = ch.gemm_variant;
  bool bias_done = c < 0 || beta == 0.0f;
  if (!bias_done && alpha == 1.0f && beta == 1.0f) {
    const Shape sc = b.shape(c);
    const int64_t cn = numel(sc);
    if (cn == N && (sc.size() == 1 || (sc.size() == 2 && sc[0] == 1))) {
      o.bias = c;
      o.bias_axis = 'n';
      bias_done = true;
    } else if (cn == M && sc.size() == 2 && sc[1] == 1 && M != 1) {
      o.bias = c;
      o.bias_axis = 'm';
      bias_done = true;
    }
  }
  // A Relu/Clip fused at conversion rides in the epilogue when nothing follows the GEMM.
  const float lo = float(n.get_float("activation_min", -INFINITY));
  const float hi = float(n.get_float("activation_max", INFINITY));
  const bool epilogue_act = alpha == 1.0f && bias_done;
  if (epilogue_act) {
    o.lo = lo;
    o.hi = hi;
  }
  int y = b.temp(DType::f32, {M, N});
  b.matmul(a, w, y, o);
  if (alpha != 1.0f) b.unary(UnaryOp::affine, y, y, alpha, 0.0f);
  if (!bias_done) {
    int cc = c;
    if (beta != 1.0f) cc = b.unary(UnaryOp::affine, c, beta, 0.0f);
    y = b.binary(BinaryOp::add, y, cc);
  }
  if (!epilogue_act && (lo > -INFINITY || hi < INFINITY)) b.unary(UnaryOp::clip, y, y, lo, hi);
  return {y};
}

}  // namespace

WALLE_REGISTER_OPS(reg_matmul, MatMul, "MatMul");
WALLE_REGISTER_OPS(reg_gemm, Gemm, "Gemm");

}  // namespace walle::ops
