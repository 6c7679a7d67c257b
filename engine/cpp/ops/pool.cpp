// Pooling.
//
//   MaxPool(x)[n, c, i, j] = max_{p, q} x[n, c, i*sh - ph + p*dh, j*sw - pw + q*dw]
//   AveragePool(x)         = sum_{p, q} x[...] / count(i, j)
//       count = taps inside the image (count_include_pad = 0) or inside the padded
//       image (= 1); computed once at load as a constant.
//   GlobalAveragePool(x)   = mean over spatial axes;  GlobalMaxPool: max
//
// Decomposition: a raster gathers every tap into col[n, c, p*kw + q, i*OW + j] (filled
// with -inf or 0 where the tap falls outside), then one reduction over the tap axis.
// An NCHWc input (between convolutions) is pooled in place by f32_pool_nchwc instead,
// and stays blocked; global pools of one reduce to [N, C/c, 1, 1, c], which is NCHW.
#include "ops/common.h"
#include "nchwc.h"

namespace walle::ops {
namespace {

std::vector<int> Pool(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const bool is_max = nd.op == "MaxPool";
  if (nd.outputs.size() > 1 && !nd.outputs[1].empty())
    throw Error("MaxPool with an Indices output is not supported");
  const int x = in[0];
  Shape xs = b.logical_shape(x);
  const bool one_d = xs.size() == 3;
  if (one_d) xs.insert(xs.begin() + 2, 1);
  if (xs.size() != 4) throw Error(nd.op + " supports 1-D and 2-D pooling only");
  auto two = [&](const std::vector<int64_t>& v, int64_t d) -> std::pair<int64_t, int64_t> {
    if (v.empty()) return {d, d};
    if (v.size() != (one_d ? 1u : 2u)) throw Error(nd.op + " window attributes need one entry per spatial axis");
    return one_d ? std::pair<int64_t, int64_t>{1, v[0]} : std::pair<int64_t, int64_t>{v[0], v[1]};
  };
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  auto [kh, kw] = two(nd.get_ints("kernel_shape"), 1);
  auto [sh, sw] = two(nd.get_ints("strides"), 1);
  auto [dh, dw] = two(nd.get_ints("dilations"), 1);
  if (one_d) { sh = 1; dh = 1; kh = 1; }
  int64_t ph = 0, pw = 0, qh = 0, qw = 0;  // begin / end pads
  auto pads = nd.get_ints("pads");
  if (!pads.empty()) {
    if (pads.size() != (one_d ? 2u : 4u)) throw Error(nd.op + " pads need a begin and an end per spatial axis");
    if (one_d) { pw = pads[0]; qw = pads[1]; }
    else { ph = pads[0]; pw = pads[1]; qh = pads[2]; qw = pads[3]; }
  }
  const std::string ap = nd.get_string("auto_pad", "NOTSET");
  const bool ceil_mode = nd.get_int("ceil_mode", 0);
  auto out_len = [&](int64_t in_len, int64_t k, int64_t s, int64_t d, int64_t& lo, int64_t& hi) {
    if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
      const int64_t out = (in_len + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + (k - 1) * d + 1 - in_len);
      lo = ap == "SAME_LOWER" ? total - total / 2 : total / 2;
      hi = total - lo;
      return out;
    }
    if (ap == "VALID") lo = hi = 0;
    const int64_t span = in_len + lo + hi - ((k - 1) * d + 1);
    int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (out - 1) * s >= in_len + lo) --out;  // window must start inside
    return out;
  };
  if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || dh <= 0 ||
      dw <= 0)
    throw Error(nd.op + " on an empty input or with an empty window");
  const int64_t OH = out_len(H, kh, sh, dh, ph, qh), OW = out_len(W, kw, sw, dw, pw, qw);
  if (OH <= 0 || OW <= 0) throw Error(nd.op + " output would be empty");
  const int64_t kk = kh * kw, ohw = OH * OW;

  if (b.slot(x).nchwc) {
    const int cb = b.slot(x).nchwc;
    const int64_t blocks = nchwc_blocks(C, cb);
    PoolNchwcArgs a{};
    a.h = H; a.w_in = W; a.oh = OH; a.ow = OW; a.kh = kh; a.kw = kw;
    a.sh = sh; a.sw = sw; a.ph = ph; a.pw = pw; a.dh = dh; a.dw = dw;
    a.is_max = is_max;
    a.count_include_pad = int(nd.get_int("count_include_pad", 0));
    a.pad_h_end = qh;
    a.pad_w_end = qw;
    Isa isa = b.isa();
    for (Isa i : supported_isas())
      if (kernels_for(i).nchwc_block == cb) isa = i;
    b.use_isa(isa);
    const KernelTable* kt = &b.kt();
    const int y = b.temp(DType::f32, nchwc_shape({N, C, OH, OW}, cb));
    b.mark_nchwc(y, cb, C);
    b.custom(std::string("pool:f32_pool_nchw") + std::to_string(cb) + "c_" + kt->isa, {x}, {y},
             [=](const ExecCtx& c) {
               PoolNchwcArgs args = a;
               args.x = static_cast<const float*>(c.ptr[x]);
               args.y = static_cast<float*>(c.ptr[y]);
               pool_nchwc(*kt, args, N, blocks);
             });
    return {y};
  }

  RasterSpec spec;
  spec.has_fill = true;
  spec.fill = is_max ? -INFINITY : 0.0;
  for (int64_t p = 0; p < kh; ++p)
    for (int64_t q = 0; q < kw; ++q) {
      const int64_t oh_ = p * dh - ph, ow_ = q * dw - pw;
      auto range = [](int64_t off, int64_t s, int64_t n_in, int64_t n_out, int64_t& a, int64_t& e) {
        a = off >= 0 ? 0 : (-off + s - 1) / s;
        e = std::min(n_out, n_in - off <= 0 ? 0 : (n_in - off - 1) / s + 1);
      };
      int64_t i0, i1, j0, j1;
      range(oh_, sh, H, OH, i0, i1);
      range(ow_, sw, W, OW, j0, j1);
      if (i1 <= i0 || j1 <= j0) continue;
      spec.regions.push_back(sub_region({N, C, i1 - i0, j1 - j0}, {C * H * W, H * W, sh * W, sw},
                                        (i0 * sh + oh_) * W + (j0 * sw + ow_),
                                        {C * kk * ohw, kk * ohw, OW, 1},
                                        (p * kw + q) * ohw + i0 * OW + j0, 0));
    }
  const int col = b.raster({x}, spec, DType::f32, {N, C, kk, ohw});
  Shape out = one_d ? Shape{N, C, OW} : Shape{N, C, OH, OW};
  if (is_max) return {b.alias(b.reduce(ReduceOp::max, col, {2}, false), out)};

  // Average: divide the tap sum by a per-position count.
  const bool include_pad = nd.get_int("count_include_pad", 0);
  Tensor cnt = Tensor::empty(DType::f32, {ohw});
  for (int64_t i = 0; i < OH; ++i)
    for (int64_t j = 0; j < OW; ++j) {
      int64_t c = 0;
      for (int64_t p = 0; p < kh; ++p)
        for (int64_t q = 0; q < kw; ++q) {
          const int64_t y = i * sh - ph + p * dh, z = j * sw - pw + q * dw;
          const bool in_img = y >= 0 && y < H && z >= 0 && z < W;
          const bool in_pad = y >= -ph && y < H + qh && z >= -pw && z < W + qw;
          c += include_pad ? in_pad : in_img;
        }
      cnt.ptr<float>()[i * OW + j] = float(std::max<int64_t>(c, 1));
    }
  const int sum = b.reduce(ReduceOp::sum, col, {2}, false);
  return {b.alias(b.binary(BinaryOp::div, sum, b.add_const(cnt)), out)};
}

std::vector<int> GlobalPool(Builder& b, const std::vector<int>& in) {
  const ReduceOp op0 = b.node().op == "GlobalMaxPool" ? ReduceOp::max : ReduceOp::mean;
  if (const Slot& s = b.slot(in[0]); s.nchwc) {
    const int cb = s.nchwc;
    const int64_t c = s.channels;
    const int y = b.reduce(op0, in[0], {2, 3}, true);
    b.mark_nchwc(y, cb, c);
    return {b.to_plain(y)};
  }
  const int r = b.slot(in[0]).shape.size();
  std::vector<int64_t> axes;
  for (int d = 2; d < r; ++d) axes.push_back(d);
  const ReduceOp op = b.node().op == "GlobalMaxPool" ? ReduceOp::max : ReduceOp::mean;
  return {b.reduce(op, in[0], axes, true)};
}

}  // namespace

WALLE_REGISTER_OPS(reg_pool, Pool, "MaxPool", "AveragePool");
WALLE_REGISTER_OPS(reg_gpool, GlobalPool, "GlobalAveragePool", "GlobalMaxPool");

}  // namespace walle::ops
