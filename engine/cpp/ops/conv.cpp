// Conv (1-D and 2-D; grouped, depthwise, pads, strides, dilations, auto_pad).
//
//   y[n, o, i, j] = bias[o] + sum_{c, p, q} W[o, c, p, q] *
//                   x[n, g(o) * Cg + c, i*sh - ph + p*dh, j*sw - pw + q*dw]
//
// Implementations (chosen per op by the search):
//   gemm1x1  1x1, stride 1, no pad, one group: y[n] = W[Cout, Cin] . x[n][Cin, H*W]
//   im2col   col[n, c*kh*kw + p*kw + q, i*OW + j] = x[n, c, ...] (zero outside) — one
//            raster region per filter tap — then batched GEMM per group:
//            y[n, g] = W[g][Cout/g, Cg*kh*kw] . col[n, g]
//   dwdirect depthwise (groups == Cin == Cout): the direct kernel f32_dwconv
//   nchwc    direct convolution in the blocked layout NCHWc (nchwc.h): x[n][C/c][H][W][c]
//            -> y[n][O/c][OH][OW][c], c = 16 (AVX-512) or 8 (AVX2); a register tile of
//            output pixels x output blocks accumulates over all (c, p, q) and stores once
//            with bias, residual and clamp. A plain NCHW input with few channels (the
//            image) is read as it is. Output stays blocked for the next op.
//   dwnchwc  depthwise convolution in NCHWc: one vector FMA per tap and c channels
//   wnchwc   Winograd F(2x2, 3x3) in NCHWc (3x3, stride 1): the tile transforms are
//            vector additions over channel blocks, the 16 products are NCHWc 1x1
//            GEMMs over chunks of tiles kept in L2 (nchwc.cpp: winograd_nchwc)
//   w4nchwc  the same with F(4x4, 3x3): 6x6 input patches, 36 products, 2.25 multiplies
//            per output instead of 4 (more transform work and 2.25x the weights, so it
//            pays on the larger images and loses on 7x7; the search decides)
//   winograd F(2x2, 3x3) for 3x3 stride-1 undilated single-group convs:
//            Y = A^T [ (G g G^T) . (B^T d B) ] A per 4x4 input tile d / 2x2 output tile,
//            as atomic ops: a raster gathers tiles into D[n, 16, C, T]; one GEMM with the
//            constant kron(B^T, B^T) transforms them (V); 16 batched GEMMs multiply by
//            the load-time weights U = kron(G, G) g; one GEMM with kron(A^T, A^T) maps
//            back; a raster scatters the 2x2 tiles. 2.25x fewer multiply-adds than im2col.
// Bias, a residual input (4th input: y += r, fused from a following Add at conversion) and
// a Relu/Clip (activation_min/max) run in the GEMM epilogue, in that order.
#include "ops/common.h"
#include <sstream>

#include "nchwc.h"
#include <vector>

#include "threadpool.h"

namespace walle::ops {
namespace {

struct ConvGeom {
  int64_t n, c, h, w, oc, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, g;
};

ConvGeom geometry(Builder& b, int x, int wt) {
  const auto& nd = b.node();
  Shape xs = b.logical_shape(x), ws = b.shape(wt);
  if (xs.size() != 3 && xs.size() != 4) throw Error("Conv supports 1-D and 2-D convolution only");
  if (ws.size() != xs.size())
    throw Error("Conv weight " + shape_str(ws) + " must have the input's rank " + std::to_string(xs.size()));
  if (b.dtype(wt) != DType::f32) throw Error("Conv weight must be float32");
  check_window_attrs(nd, xs.size() - 2);
  if (nd.has("kernel_shape") &&
      nd.get_ints("kernel_shape") != std::vector<int64_t>(ws.begin() + 2, ws.end()))
    throw Error("Conv kernel_shape does not match the weight " + shape_str(ws));
  if (xs.size() == 3) { xs.insert(xs.begin() + 2, 1); ws.insert(ws.begin() + 2, 1); }
  if (xs.size() != 4) throw Error("Conv supports 1-D and 2-D convolution only");
  ConvGeom g{};
  g.n = xs[0]; g.c = xs[1]; g.h = xs[2]; g.w = xs[3];
  g.oc = ws[0]; g.kh = ws[2]; g.kw = ws[3];
  g.g = nd.get_int("group", 1);
  if (g.g < 1 || g.g > xs[1] || g.oc < 1 || g.kh < 1 || g.kw < 1 || g.oc % g.g != 0)
    throw Error("Conv group " + std::to_string(g.g) + " must be >= 1 and divide the " +
                std::to_string(xs[1]) + " input and " + std::to_string(g.oc) +
                " output channels, and the kernel must be non-empty");
  const bool one_d = b.logical_shape(x).size() == 3;
  auto two = [&](const std::vector<int64_t>& v, int64_t d) -> std::pair<int64_t, int64_t> {
    if (v.empty()) return {d, d};
    return one_d ? std::pair<int64_t, int64_t>{1, v[0]} : std::pair<int64_t, int64_t>{v[0], v[1]};
  };
  std::tie(g.sh, g.sw) = two(nd.get_ints("strides"), 1);
  std::tie(g.dh, g.dw) = two(nd.get_ints("dilations"), 1);
  if (one_d) { g.sh = 1; g.dh = 1; }
  auto pads = nd.get_ints("pads");
  int64_t pb_h = 0, pb_w = 0;
  if (!pads.empty()) {
    if (one_d) { g.ph = 0; g.pw = pads[0]; pb_w = pads[1]; }
    else { g.ph = pads[0]; g.pw = pads[1]; pb_h = pads[2]; pb_w = pads[3]; }
  }
  const std::string ap = nd.get_string("auto_pad", "NOTSET");
  auto same = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t& lo, int64_t& hi) {
    const int64_t out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>(0, (out - 1) * s + (k - 1) * d + 1 - in);
    lo = ap == "SAME_LOWER" ? total - total / 2 : total / 2;
    hi = total - lo;
  };
  if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
    if (!one_d) same(g.h, g.kh, g.sh, g.dh, g.ph, pb_h);
    same(g.w, g.kw, g.sw, g.dw, g.pw, pb_w);
  } else if (ap == "VALID") {
    g.ph = g.pw = pb_h = pb_w = 0;
  }
  // The padded input bounds what the kernels and their scratch planes walk.
  check_shape({g.n, g.c, g.h + g.ph + pb_h, g.w + g.pw + pb_w}, "Conv padded input");
  g.oh = (g.h + g.ph + pb_h - ((g.kh - 1) * g.dh + 1)) / g.sh + 1;
  g.ow = (g.w + g.pw + pb_w - ((g.kw - 1) * g.dw + 1)) / g.sw + 1;
  if (g.c != ws[1] * g.g)
    throw Error("Conv weight " + shape_str(ws) + " does not match input channels " +
                std::to_string(g.c) + " with group " + std::to_string(g.g));
  if (g.oh <= 0 || g.ow <= 0) throw Error("Conv output would be empty");
  return g;
}

// Winograd F(2x2, 3x3); see the header comment for the steps.
int winograd(Builder& b, int x, int wt, int bias, const ConvGeom& g, const Shape& out_shape,
             int variant, float lo, float hi) {
  static const float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static const float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static const float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  const int64_t TH = (g.oh + 1) / 2, TW = (g.ow + 1) / 2, T = TH * TW, C = g.c, O = g.oc;
  // D[n, 16, C, T]: tile element (i, j) of tile (th, tw) is x[2 th - ph + i, 2 tw - pw + j].
  RasterSpec gather;
  gather.has_fill = true;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 4; ++j) {
      auto range = [](int64_t off, int64_t in, int64_t count, int64_t& a, int64_t& e) {
        a = off >= 0 ? 0 : (-off + 1) / 2;
        e = std::min(count, in - off <= 0 ? 0 : (in - off - 1) / 2 + 1);
      };
      int64_t t0, t1, u0, u1;
      range(i - g.ph, g.h, TH, t0, t1);
      range(j - g.pw, g.w, TW, u0, u1);
      if (t1 <= t0 || u1 <= u0) continue;
      gather.regions.push_back(sub_region(
          {g.n, C, t1 - t0, u1 - u0}, {C * g.h * g.w, g.h * g.w, 2 * g.w, 2},
          (2 * t0 - g.ph + i) * g.w + (2 * u0 - g.pw + j), {16 * C * T, T, TW, 1},
          (i * 4 + j) * C * T + t0 * TW + u0, 0));
    }
  const int d = b.raster({x}, gather, DType::f32, {g.n, 16, C * T});
  // V = kron(B^T, B^T) . D
  Tensor k16 = Tensor::empty(DType::f32, {16, 16});
  for (int a = 0; a < 4; ++a)
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) k16.ptr<float>()[(a * 4 + c) * 16 + i * 4 + j] = BT[a][i] * BT[c][j];
  Builder::MatmulOpts plain;
  const int v = b.temp(DType::f32, {g.n, 16, C * T});
  b.matmul(b.add_const(k16), d, v, plain);
  // U[16, O, C] = kron(G, G) g, computed here once.
  const Tensor w = b.const_data(wt);
  Tensor u = Tensor::empty(DType::f32, {16, O, C});
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c) {
      const float* gw = w.ptr<float>() + (o * C + c) * 9;
      for (int a = 0; a < 4; ++a)
        for (int e = 0; e < 4; ++e) {
          double s = 0;
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) s += double(G[a][i]) * gw[i * 3 + j] * G[e][j];
          u.ptr<float>()[((a * 4 + e) * O + o) * C + c] = float(s);
        }
    }
  // M[n, 16, O, T] = U[16] . V[n, 16]
  Builder::MatmulOpts mo;
  mo.variant = variant;
  const int m = b.temp(DType::f32, {g.n, 16, O, T});
  b.matmul(b.add_const(u), b.alias(v, {g.n, 16, C, T}), m, mo);
  // Y2[n, 4, O * T] = kron(A^T, A^T) . M
  Tensor k4 = Tensor::empty(DType::f32, {4, 16});
  for (int p = 0; p < 2; ++p)
    for (int q = 0; q < 2; ++q)
      for (int a = 0; a < 4; ++a)
        for (int e = 0; e < 4; ++e) k4.ptr<float>()[(p * 2 + q) * 16 + a * 4 + e] = AT[p][a] * AT[q][e];
  const int y2 = b.temp(DType::f32, {g.n, 4, O * T});
  b.matmul(b.add_const(k4), b.alias(m, {g.n, 16, O * T}), y2, plain);
  // Scatter the 2x2 output tiles.
  RasterSpec scatter;
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t q = 0; q < 2; ++q) {
      const int64_t rows = (g.oh - p + 1) / 2, cols = (g.ow - q + 1) / 2;
      if (rows <= 0 || cols <= 0) continue;
      scatter.regions.push_back(sub_region({g.n, O, rows, cols}, {4 * O * T, T, TW, 1},
                                           (p * 2 + q) * O * T,
                                           {O * g.oh * g.ow, g.oh * g.ow, 2 * g.ow, 2},
                                           p * g.ow + q, 0));
    }
  int y = b.raster({y2}, scatter, DType::f32, {g.n, O, g.oh, g.ow});
  y = b.alias(y, out_shape);
  if (bias >= 0) {
    Shape bs(out_shape.size() - 1, 1);
    bs[0] = O;
    b.binary(BinaryOp::add, y, b.alias(bias, bs), y);
  }
  if (lo > -INFINITY || hi < INFINITY) b.unary(UnaryOp::clip, y, y, lo, hi);
  return y;
}

// The residual input of a blocked convolution, in the output's NCHWc layout (-1: none).
int blocked_residual(Builder& b, int residual, int cb, const Shape& out) {
  if (residual < 0) return -1;
  const int res = b.slot(residual).nchwc == cb ? residual : b.to_nchwc(residual, cb);
  if (b.shape(res) != out) throw Error("Conv residual does not match the output shape");
  return res;
}

// The NCHWc implementation (see the header comment); variant = tile index (0, 1, 2 for
// 1, 2, 4 output blocks per register tile) + 3 * thread split (0 by blocks, 1 by rows).
int conv_nchwc_steps(Builder& b, int x, int wt, int bias, int residual, const ConvGeom& g,
                     bool depthwise, int variant, float lo, float hi) {
  const int cb = b.nchwc_block();
  const int tile = depthwise ? 1 : 1 << (variant % 3);
  const int split = variant / 3;
  int xin = x, cbi = cb;
  if (!b.slot(x).nchwc) {
    if (!depthwise && g.c < cb) cbi = 1;  // read the plain image directly
    else xin = b.to_nchwc(x, cb);
  }
  const Tensor w = b.const_data(wt);
  const int wp = b.add_const(depthwise ? pack_dwconv_weights_nchwc(w.ptr<float>(), g.c, g.kh, g.kw, cb)
                                       : pack_conv_weights_nchwc(w.ptr<float>(), g.oc, g.c, g.kh,
                                                                 g.kw, cb, cbi, tile));
  const int bp = b.add_const(
      pad_channels_nchwc(bias >= 0 ? b.const_data(bias).ptr<float>() : nullptr, g.oc, cb));
  const Shape out = nchwc_shape({g.n, g.oc, g.oh, g.ow}, cb);
  const int res = blocked_residual(b, residual, cb, out);
  const int y = b.temp(DType::f32, out);
  b.mark_nchwc(y, cb, g.oc);
  ConvNchwcArgs a{};
  a.icb = depthwise ? nchwc_blocks(g.c, cb) : nchwc_blocks(g.c, cbi);
  a.cbi = depthwise ? cb : cbi;
  a.h = g.h; a.w_in = g.w; a.oh = g.oh; a.ow = g.ow; a.kh = g.kh; a.kw = g.kw;
  a.sh = g.sh; a.sw = g.sw; a.ph = g.ph; a.pw = g.pw; a.dh = g.dh; a.dw = g.dw;
  // A 1x1, stride-1, unpadded convolution has no rows to respect: one long row tiles best.
  if (g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0) {
    a.w_in = a.ow = g.h * g.w;
    a.h = a.oh = 1;
  }
  a.x_block = a.cbi * a.h * a.w_in;
  a.lo = lo;
  a.hi = hi;
  a.ocb_tile = tile;
  const int64_t x_image = a.icb * a.x_block, ocb = nchwc_blocks(g.oc, cb);
  const int64_t y_image = ocb * cb * g.oh * g.ow, n = g.n;
  const KernelTable* kt = &b.kt();
  std::vector<int> ins = {xin, wp, bp};
  if (res >= 0) ins.push_back(res);
  b.custom(std::string("conv:") + (depthwise ? kt->dwconv_nchwc_name : kt->conv_nchwc_name), ins,
           {y}, [=](const ExecCtx& c) {
             ConvNchwcArgs args = a;
             args.x = static_cast<const float*>(c.ptr[xin]);
             args.w = static_cast<const float*>(c.ptr[wp]);
             args.bias = static_cast<const float*>(c.ptr[bp]);
             args.res = res >= 0 ? static_cast<const float*>(c.ptr[res]) : nullptr;
             args.y = static_cast<float*>(c.ptr[y]);
             conv_nchwc(*kt, args, n, ocb, x_image, y_image, depthwise, split);
           });
  return y;
}

int winograd_nchwc_steps(Builder& b, int x, int wt, int bias, int residual, const ConvGeom& g,
                         int variant, float lo, float hi, int r) {
  const int cb = b.nchwc_block();
  const int tile = 1 << (variant % 3);
  const int xin = b.slot(x).nchwc ? x : b.to_nchwc(x, cb);
  const Tensor w = b.const_data(wt);
  int64_t u_stride = 0;
  const int up =
      b.add_const(pack_winograd_weights_nchwc(w.ptr<float>(), g.oc, g.c, cb, tile, &u_stride, r));
  const int bp = b.add_const(
      pad_channels_nchwc(bias >= 0 ? b.const_data(bias).ptr<float>() : nullptr, g.oc, cb));
  const Shape out = nchwc_shape({g.n, g.oc, g.oh, g.ow}, cb);
  const int res = blocked_residual(b, residual, cb, out);
  const int y = b.temp(DType::f32, out);
  b.mark_nchwc(y, cb, g.oc);
  WinogradNchwcArgs a{};
  a.cblocks = nchwc_blocks(g.c, cb);
  a.oblocks = nchwc_blocks(g.oc, cb);
  a.h = g.h; a.w_in = g.w; a.oh = g.oh; a.ow = g.ow; a.ph = g.ph; a.pw = g.pw;
  a.tw = (g.ow + r - 1) / r;
  a.tile = r;
  a.lo = lo;
  a.hi = hi;
  const int64_t x_image = a.cblocks * cb * g.h * g.w, y_image = a.oblocks * cb * g.oh * g.ow;
  const int64_t n = g.n;
  const KernelTable* kt = &b.kt();
  std::vector<int> ins = {xin, up, bp};
  if (res >= 0) ins.push_back(res);
  const std::string rr = std::to_string(r);
  b.custom("conv:f32_conv3x3_winograd" + rr + "x" + rr + "_nchw" + std::to_string(cb) + "c_" + kt->isa,
           ins, {y},
           [=](const ExecCtx& c) {
             WinogradNchwcArgs args = a;
             args.x = static_cast<const float*>(c.ptr[xin]);
             args.bias = static_cast<const float*>(c.ptr[bp]);
             args.res = res >= 0 ? static_cast<const float*>(c.ptr[res]) : nullptr;
             args.y = static_cast<float*>(c.ptr[y]);
             winograd_nchwc(*kt, args, static_cast<const float*>(c.ptr[up]), u_stride, tile, n,
                            x_image, y_image);
           });
  return y;
}

std::vector<int> Conv(Builder& b, const std::vector<int>& in) {
  int x = in[0], residual = opt(in, 3);
  const int wt = in[1], bias = opt(in, 2);
  if (b.dtype(x) != DType::f32) throw Error("Conv supports float32 only");
  const ConvGeom g = geometry(b, x, wt);
  const auto& nd = b.node();
  if (bias >= 0 && (b.dtype(bias) != DType::f32 || numel(b.shape(bias)) != g.oc))
    throw Error("Conv bias must be float32 with one value per output channel (" +
                std::to_string(g.oc) + ")");
  const float lo = float(nd.get_float("activation_min", -INFINITY));
  const float hi = float(nd.get_float("activation_max", INFINITY));
  const Shape out_shape = b.logical_shape(x).size() == 3 ? Shape{g.n, g.oc, g.ow}
                                                          : Shape{g.n, g.oc, g.oh, g.ow};
  const int64_t ohw = g.oh * g.ow, cg = g.c / g.g, ocg = g.oc / g.g, kk = g.kh * g.kw;
  const bool is1x1 = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 &&
                     g.pw == 0 && g.g == 1 && g.oh == g.h && g.ow == g.w;
  const bool depthwise = g.g == g.c && g.oc == g.c;
  const bool wconst = b.is_const(wt);
  const bool x_blocked = b.slot(x).nchwc != 0;
  // Plain implementations read NCHW: a blocked input costs them one conversion.
  const double unblock = x_blocked ? double(g.n * g.c * g.h * g.w) * 8.0 / 20e9 : 0.0;

  std::vector<Candidate> cands;
  const int cb = b.nchwc_block();
  const bool nchwc_ok = cb > 0 && out_shape.size() == 4 && wconst && (g.g == 1 || depthwise) &&
                        !b.is_const(x) && (bias < 0 || b.is_const(bias));
  if (nchwc_ok) {
    Isa isa = Isa::scalar;
    for (Isa i : supported_isas())
      if (kernels_for(i).nchwc_block == cb) isa = i;
    const double peak = double(cb) * 2 * 2 * 3.0e9;
    const int64_t ocp = nchwc_blocks(g.oc, cb) * cb;
    const bool block_in = !x_blocked && (depthwise || g.c >= cb);
    const double convert = block_in ? double(g.n * g.c * g.h * g.w) * 8.0 / 20e9 : 0.0;
    const int splits = num_threads() > 1 ? 2 : 1;
    for (int split = 0; split < splits; ++split) {
      if (depthwise) {
        // Loads, not FMAs, bound it: one input and one weight vector per FMA.
        cands.push_back({Choice{"dwnchwc", isa, 3 * split},
                         2.0 * g.n * ocp * ohw * kk / (peak * 0.35) + convert});
        continue;
      }
      const int64_t icp = g.c >= cb ? nchwc_blocks(g.c, cb) * cb : g.c;
      const double flops = 2.0 * g.n * ocp * ohw * kk * icp;
      const int64_t ocb = ocp / cb;
      for (int t = 0; t < 3; ++t) {
        const int tile = 1 << t;
        if (ocb % tile) continue;
        // A one-block tile loads a weight vector per FMA-pair: load-bound.
        const double eff = tile == 1 ? 0.55 : 0.85;
        cands.push_back({Choice{"nchwc", isa, t + 3 * split}, flops / (peak * eff) + convert});
        if (g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 &&
            split == 0 && g.c >= cb) {
          // 16 products of [tiles x C] x [C x O] instead of 9 per output pixel x 4 pixels,
          // plus the transforms (a few vector adds per transformed value).
          const double tl = double(((g.oh + 1) / 2) * ((g.ow + 1) / 2));
          const double wflops = 2.0 * g.n * 16 * tl * icp * ocp;
          const double moves = g.n * 16.0 * tl * (icp + ocp) * 4 * 2 / 40e9;
          cands.push_back({Choice{"wnchwc", isa, t}, wflops / (peak * eff) + moves + convert});
          // F(4x4): 36 products per 4x4 outputs; the 6x6 transforms cost about twice the
          // adds per transformed value, and its weights (36 per pair instead of 9) stream
          // from memory once per image when the image has few tiles.
          const double tl4 = double(((g.oh + 3) / 4) * ((g.ow + 3) / 4));
          const double w4flops = 2.0 * g.n * 36 * tl4 * icp * ocp;
          const double moves4 = g.n * 36.0 * tl4 * (icp + ocp) * 4 * 3 / 40e9;
          const double wstream = 36.0 * icp * ocp * 4 / 30e9;
          cands.push_back(
              {Choice{"w4nchwc", isa, t}, w4flops / (peak * eff) + moves4 + wstream + convert});
        }
      }
    }
  }
  // The layout plan: once a value is blocked, the convolutions reading it stay blocked
  // (a plain algorithm would have to convert it back and forth); the search then picks
  // the register tile and thread split. Where the input is plain (the image, or after an
  // op that needs NCHW) the blocked kernels compete with the plain algorithms below,
  // paying for the conversion they need.
  const bool plain_algos = !(nchwc_ok && x_blocked);
  if (is1x1 && plain_algos)
    add_gemm_candidates(cands, "gemm1x1", false, [&](const KernelTable& kt, int v) {
      return double(g.n) * gemm_cost(kt, v, g.oc, ohw, g.c, false) + unblock;
    });
  if (depthwise && wconst && plain_algos) {
    for (Isa isa : supported_isas()) {
      const KernelTable& kt = kernels_for(isa);
      const double peak = double(kt.vector_floats) * 2 * 2 * 3.0e9;
      const double eff = g.sw == 1 ? 0.2 : 0.08;  // loads, not FMAs, bound this kernel
      cands.push_back({Choice{"dwdirect", isa, 0},
                       2.0 * g.n * g.c * ohw * kk / (peak * eff) + unblock});
    }
  }
  const bool wino_ok = g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 &&
                       g.dw == 1 && g.g == 1 && wconst && g.c >= 8 && g.oc >= 8 && plain_algos;
  const int64_t tiles = ((g.oh + 1) / 2) * ((g.ow + 1) / 2);
  if (wino_ok)
    add_gemm_candidates(cands, "winograd", false, [&](const KernelTable& kt, int v) {
      const double moves = double(g.n) * (16.0 * g.c * tiles * 3 + 4.0 * g.oc * tiles * 3) * 4 / 20e9;
      return double(g.n) * (16 * gemm_cost(kt, v, g.oc, tiles, g.c, false) +
                            gemm_cost(kt, 0, 16, g.c * tiles, 16, true) +
                            gemm_cost(kt, 0, 4, g.oc * tiles, 16, true)) +
             moves + unblock;
    });
  if (plain_algos)
    add_gemm_candidates(cands, "im2col", false, [&](const KernelTable& kt, int v) {
    const double copy = double(g.n * g.c * kk * ohw) * 8.0 / 20e9;
    return double(g.n * g.g) * gemm_cost(kt, v, ocg, ohw, cg * kk, false) + copy + unblock;
  });
  std::ostringstream sig;
  sig << "Conv|n" << g.n << "c" << g.c << "h" << g.h << "w" << g.w << "o" << g.oc << "k"
      << g.kh << "x" << g.kw << "s" << g.sh << "x" << g.sw << "p" << g.ph << "x" << g.pw << "d"
      << g.dh << "x" << g.dw << "g" << g.g << "|x" << (x_blocked ? "nchwc" : "nchw") << cb;
  const Choice ch = b.choose(sig.str(), cands);
  b.use_isa(ch.isa);
  if (ch.algo == "wnchwc" || ch.algo == "w4nchwc")
    return {winograd_nchwc_steps(b, x, wt, bias, residual, g, ch.gemm_variant, lo, hi,
                                 ch.algo == "w4nchwc" ? 4 : 2)};
  if (ch.algo == "nchwc" || ch.algo == "dwnchwc")
    return {conv_nchwc_steps(b, x, wt, bias, residual, g, ch.algo == "dwnchwc", ch.gemm_variant,
                             lo, hi)};
  if (x_blocked) x = b.to_plain(x);
  if (residual >= 0 && b.slot(residual).nchwc) residual = b.to_plain(residual);

  // With a residual the clamp must follow the addition: kernels that cannot add it in
  // their epilogue run unclamped, then add, then clamp.
  const bool clamp = lo > -INFINITY || hi < INFINITY;
  auto finish = [&](int y) {
    if (residual >= 0) {
      b.binary(BinaryOp::add, y, residual, y);
      if (clamp) b.unary(UnaryOp::clip, y, y, lo, hi);
    }
    return y;
  };
  if (ch.algo == "dwdirect") {
    const float klo = residual >= 0 ? -INFINITY : lo, khi = residual >= 0 ? INFINITY : hi;
    const int y = b.temp(DType::f32, out_shape);
    const KernelTable* kt = &b.kt();
    const ConvGeom gg = g;
    std::vector<int> ins = {x, wt};
    if (bias >= 0) ins.push_back(bias);
    b.custom("dwconv:f32_dwconv_" + std::string(kt->isa), ins, {y}, [=](const ExecCtx& c) {
      const float* X = static_cast<const float*>(c.ptr[x]);
      const float* W = static_cast<const float*>(c.ptr[wt]);
      const float* B = bias >= 0 ? static_cast<const float*>(c.ptr[bias]) : nullptr;
      float* Y = static_cast<float*>(c.ptr[y]);
      const int64_t per = std::max<int64_t>(1, gg.c / (4 * num_threads()));
      const int64_t tasks = (gg.c + per - 1) / per;
      for (int64_t n = 0; n < gg.n; ++n) {
        auto run = [&](int64_t t) {
          DwConvArgs a{X + n * gg.c * gg.h * gg.w, W, B, Y + n * gg.c * gg.oh * gg.ow,
                       t * per, std::min(gg.c, (t + 1) * per), gg.h, gg.w, gg.oh, gg.ow,
                       gg.kh, gg.kw, gg.sh, gg.sw, gg.ph, gg.pw, gg.dh, gg.dw, klo, khi,
                       nullptr};
          thread_local std::vector<float> scratch;
          scratch.resize(size_t(dwconv_scratch_floats(a)));
          a.scratch = scratch.data();
          kt->f32_dwconv(a);
        };
        if (num_threads() > 1 && gg.c * ohw * gg.kh * gg.kw > 50000) parallel_for(tasks, run);
        else for (int64_t t = 0; t < tasks; ++t) run(t);
      }
    });
    return {finish(y)};
  }

  if (ch.algo == "winograd") {
    const float wlo = residual >= 0 ? -INFINITY : lo, whi = residual >= 0 ? INFINITY : hi;
    return {finish(winograd(b, x, wt, bias, g, out_shape, ch.gemm_variant, wlo, whi))};
  }

  Builder::MatmulOpts o;
  o.variant = ch.gemm_variant;
  o.lo = lo;
  o.hi = hi;
  const bool fuse_bias = bias >= 0 && g.g == 1;
  const bool fuse_residual = residual >= 0 && g.g == 1 && b.shape(residual) == out_shape;
  if (fuse_bias) {
    o.bias = bias;
    o.bias_axis = 'm';
  }
  if (fuse_residual) o.addend = residual;
  if ((bias >= 0 && !fuse_bias) || (residual >= 0 && !fuse_residual)) {
    o.lo = -INFINITY;  // the clamp must follow the unfused additions
    o.hi = INFINITY;
  }
  int y;
  if (ch.algo == "gemm1x1") {
    const int xs = b.alias(x, {g.n, g.c, ohw});
    const int w2 = b.alias(wt, {g.oc, g.c});
    y = b.temp(DType::f32, {g.n, g.oc, ohw});
    b.matmul(w2, xs, y, o);
  } else {
    // im2col as raster: one region per filter tap (p, q), clipped to the rows/columns
    // whose input position is inside the image; the rest stays at the zero fill.
    RasterSpec spec;
    spec.has_fill = true;
    spec.fill = 0.0;
    for (int64_t p = 0; p < g.kh; ++p)
      for (int64_t q = 0; q < g.kw; ++q) {
        const int64_t off_h = p * g.dh - g.ph, off_w = q * g.dw - g.pw;
        auto range = [](int64_t off, int64_t s, int64_t in, int64_t out, int64_t& a, int64_t& e) {
          a = off >= 0 ? 0 : (-off + s - 1) / s;
          e = std::min(out, in - off <= 0 ? 0 : (in - off - 1) / s + 1);
        };
        int64_t i0, i1, j0, j1;
        range(off_h, g.sh, g.h, g.oh, i0, i1);
        range(off_w, g.sw, g.w, g.ow, j0, j1);
        if (i1 <= i0 || j1 <= j0) continue;
        const int64_t src = (i0 * g.sh + off_h) * g.w + (j0 * g.sw + off_w);
        const int64_t dst = (p * g.kw + q) * ohw + i0 * g.ow + j0;
        spec.regions.push_back(sub_region({g.n, g.c, i1 - i0, j1 - j0},
                                          {g.c * g.h * g.w, g.h * g.w, g.sh * g.w, g.sw}, src,
                                          {g.c * kk * ohw, kk * ohw, g.ow, 1}, dst, 0));
      }
    const int col = b.raster({x}, spec, DType::f32, {g.n, g.g, cg * kk, ohw});
    const int w3 = b.alias(wt, {g.g, ocg, cg * kk});
    y = b.temp(DType::f32, {g.n, g.g, ocg, ohw});
    b.matmul(w3, col, y, o);
  }
  int r = b.alias(y, out_shape);
  if (bias >= 0 && !fuse_bias) {
    Shape bs(out_shape.size() - 1, 1);
    bs[0] = g.oc;
    r = b.binary(BinaryOp::add, r, b.alias(bias, bs));
  }
  if (residual >= 0 && !fuse_residual) r = b.binary(BinaryOp::add, r, residual);
  if (((bias >= 0 && !fuse_bias) || (residual >= 0 && !fuse_residual)) && clamp)
    b.unary(UnaryOp::clip, r, r, lo, hi);
  return {r};
}

}  // namespace

WALLE_REGISTER_OPS(reg_conv, Conv, "Conv");

}  // namespace walle::ops
