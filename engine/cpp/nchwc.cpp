#include "nchwc.h"

#include <algorithm>
#include <vector>

#include "threadpool.h"

namespace walle {

Tensor pack_conv_weights_nchwc(const float* w, int64_t oc, int64_t ic, int64_t kh, int64_t kw,
                               int cb, int cbi, int ocb_tile) {
  const int64_t ocb = nchwc_blocks(oc, cb), icb = nchwc_blocks(ic, cbi), taps = kh * kw;
  const int64_t groups = (ocb + ocb_tile - 1) / ocb_tile;
  Tensor t = Tensor::zeros(DType::f32, {groups * ocb_tile * icb * taps * cbi * cb});
  float* p = t.ptr<float>();
  for (int64_t o = 0; o < oc; ++o) {
    const int64_t ob = o / cb, g = ob / ocb_tile, j = ob % ocb_tile, lane = o % cb;
    for (int64_t i = 0; i < ic; ++i)
      for (int64_t k = 0; k < taps; ++k) {
        const int64_t dst = ((((g * icb + i / cbi) * taps + k) * cbi + i % cbi) * ocb_tile + j) * cb + lane;
        p[dst] = w[(o * ic + i) * taps + k];
      }
  }
  return t;
}

Tensor pack_dwconv_weights_nchwc(const float* w, int64_t c, int64_t kh, int64_t kw, int cb) {
  const int64_t taps = kh * kw;
  Tensor t = Tensor::zeros(DType::f32, {nchwc_blocks(c, cb) * taps * cb});
  float* p = t.ptr<float>();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < taps; ++k) p[((ch / cb) * taps + k) * cb + ch % cb] = w[ch * taps + k];
  return t;
}

Tensor pad_channels_nchwc(const float* v, int64_t c, int cb) {
  Tensor t = Tensor::zeros(DType::f32, {nchwc_blocks(c, cb) * cb});
  if (v) std::copy(v, v + c, t.ptr<float>());
  return t;
}

Tensor pack_winograd_weights_nchwc(const float* w, int64_t oc, int64_t ic, int cb, int ocb_tile,
                                   int64_t* stride, int tile) {
  static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                  {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                  {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                  {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                  {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                  {0, 0, 1}};
  const int side = tile == 4 ? 6 : 4, positions = side * side;
  auto G = [&](int r, int c) { return tile == 4 ? G4[r][c] : G2[r][c]; };
  std::vector<float> uk(size_t(oc * ic));
  Tensor out;
  for (int k = 0; k < positions; ++k) {
    const int a = k / side, e = k % side;
    for (int64_t o = 0; o < oc; ++o)
      for (int64_t c = 0; c < ic; ++c) {
        const float* g = w + (o * ic + c) * 9;
        double s = 0;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) s += G(a, i) * g[i * 3 + j] * G(e, j);
        uk[size_t(o * ic + c)] = float(s);
      }
    const Tensor p = pack_conv_weights_nchwc(uk.data(), oc, ic, 1, 1, cb, cb, ocb_tile);
    if (k == 0) {
      *stride = p.numel();
      out = Tensor::empty(DType::f32, {positions * *stride});
    }
    std::copy(p.ptr<float>(), p.ptr<float>() + *stride, out.ptr<float>() + k * *stride);
  }
  return out;
}

void winograd_nchwc(const KernelTable& kt, const WinogradNchwcArgs& a, const float* u,
                    int64_t u_stride, int ocb_tile, int64_t n, int64_t x_image, int64_t y_image) {
  const int64_t cb = kt.nchwc_block;
  const int r = a.tile == 4 ? 4 : 2, positions = (r + 2) * (r + 2);
  const int64_t th = (a.oh + r - 1) / r, tiles = th * a.tw;
  const int64_t widest = std::max(a.cblocks, a.oblocks) * cb;
  int64_t chunk = std::min(tiles, std::max<int64_t>(16, (512 << 10) / (positions * widest * 4)));
  // With threads, at least two chunks per thread (small images: 7x7 has 16 tiles).
  const int T = num_threads();
  if (T > 1 && n * ((tiles + chunk - 1) / chunk) < 2 * T)
    chunk = std::max<int64_t>(4, (tiles + 2 * T - 1) / (2 * T));
  const int64_t chunks = (tiles + chunk - 1) / chunk;
  auto run = [&](int64_t task) {
    const int64_t img = task / chunks, t0 = task % chunks * chunk;
    const int64_t t1 = std::min(tiles, t0 + chunk), nt = t1 - t0;
    thread_local std::vector<float> v, m;
    v.resize(size_t(positions * a.cblocks * cb * chunk));
    m.resize(size_t(positions * a.oblocks * cb * chunk));
    WinogradNchwcArgs b = a;
    b.x = a.x + img * x_image;
    b.y = a.y + img * y_image;
    if (a.res) b.res = a.res + img * y_image;
    b.v = v.data();
    b.m = m.data();
    b.t0 = t0;
    b.t1 = t1;
    kt.f32_winograd_in_nchwc(b);
    ConvNchwcArgs g{};
    g.icb = a.cblocks;
    g.cbi = cb;
    g.x_block = nt * cb;
    g.h = g.oh = 1;
    g.w_in = g.ow = nt;
    g.kh = g.kw = g.sh = g.sw = g.dh = g.dw = 1;
    g.lo = -INFINITY;
    g.hi = INFINITY;
    g.ocb_tile = ocb_tile;
    for (int k = 0; k < positions; ++k) {
      g.x = v.data() + k * a.cblocks * cb * nt;
      g.w = u + k * u_stride;
      g.y = m.data() + k * a.oblocks * cb * nt;
      kt.f32_conv_nchwc(g, 0, a.oblocks, 0, 1);
    }
    kt.f32_winograd_out_nchwc(b);
  };
  if (T > 1 && n * chunks > 1) parallel_for(n * chunks, run);
  else for (int64_t t = 0; t < n * chunks; ++t) run(t);
}

void conv_nchwc(const KernelTable& kt, const ConvNchwcArgs& a, int64_t n, int64_t ocb,
                int64_t x_image, int64_t y_image, bool depthwise, int split) {
  const int64_t step = depthwise ? 1 : a.ocb_tile;
  const int64_t groups = (ocb + step - 1) / step;
  auto run = [&](int64_t img, int64_t g0, int64_t g1, int64_t r0, int64_t r1) {
    ConvNchwcArgs b = a;
    b.x = a.x + img * x_image;
    b.y = a.y + img * y_image;
    if (a.res) b.res = a.res + img * y_image;
    if (depthwise) kt.f32_dwconv_nchwc(b, g0, g1, r0, r1);
    else kt.f32_conv_nchwc(b, g0 * step, std::min(ocb, g1 * step), r0, r1);
  };
  const int T = num_threads();
  const double macs = double(n) * ocb * a.oh * a.ow * a.kh * a.kw * (depthwise ? 1 : a.icb * a.cbi) *
                      kt.nchwc_block;
  // Below ~20 us of work a fork-join costs more than it saves.
  if (T <= 1 || macs < 2e6) {
    for (int64_t i = 0; i < n; ++i) run(i, 0, groups, 0, a.oh);
    return;
  }
  // Tasks of ~1/(2T) of an image, so a second core granted only part of the time still
  // helps instead of leaving the first waiting at the join.
  const int64_t chunks = 2 * T;
  if (split == 0 && groups >= chunks) {
    const int64_t per = (groups + chunks - 1) / chunks, parts = (groups + per - 1) / per;
    parallel_for(n * parts, [&](int64_t t) {
      const int64_t i = t / parts, p = t % parts;
      run(i, p * per, std::min(groups, (p + 1) * per), 0, a.oh);
    });
  } else {
    const int64_t per = std::max<int64_t>(1, (a.oh + chunks - 1) / chunks), parts = (a.oh + per - 1) / per;
    parallel_for(n * parts, [&](int64_t t) {
      const int64_t i = t / parts, p = t % parts;
      run(i, 0, groups, p * per, std::min(a.oh, (p + 1) * per));
    });
  }
}

void pool_nchwc(const KernelTable& kt, const PoolNchwcArgs& a, int64_t n, int64_t cblocks) {
  const int64_t cb = kt.nchwc_block;
  const int64_t xs = cblocks * a.h * a.w_in * cb, ys = cblocks * a.oh * a.ow * cb;
  auto run = [&](int64_t t) {
    PoolNchwcArgs b = a;
    const int64_t i = t / cblocks, c = t % cblocks;
    b.x = a.x + i * xs;
    b.y = a.y + i * ys;
    kt.f32_pool_nchwc(b, c, c + 1);
  };
  const double work = double(n) * cblocks * a.oh * a.ow * a.kh * a.kw * cb;
  if (num_threads() > 1 && work > 1e6) parallel_for(n * cblocks, run);
  else for (int64_t t = 0; t < n * cblocks; ++t) run(t);
}

namespace {
Region region4(const int64_t (&size)[4], const int64_t (&src)[4], const int64_t (&dst)[4],
               int64_t src_off, int64_t dst_off) {
  Region r;
  r.ndim = 4;
  r.src_offset = src_off;
  r.dst_offset = dst_off;
  for (int d = 0; d < 4; ++d) {
    r.size[d] = size[d];
    r.src_stride[d] = src[d];
    r.dst_stride[d] = dst[d];
  }
  return r;
}
}  // namespace

RasterSpec to_nchwc_spec(int64_t n, int64_t c, int64_t hw, int cb) {
  const int64_t blocks = nchwc_blocks(c, cb), full = c / cb, rest = c % cb;
  RasterSpec s;
  s.has_fill = rest != 0;
  // [n, block, pixel, lane] <- x[n, block * cb + lane, pixel]
  if (full)
    s.regions.push_back(region4({n, full, hw, cb}, {c * hw, cb * hw, 1, hw},
                                {blocks * hw * cb, hw * cb, cb, 1}, 0, 0));
  if (rest)
    s.regions.push_back(region4({n, 1, hw, rest}, {c * hw, 0, 1, hw},
                                {blocks * hw * cb, 0, cb, 1}, full * cb * hw, full * hw * cb));
  return s;
}

RasterSpec from_nchwc_spec(int64_t n, int64_t c, int64_t hw, int cb) {
  const int64_t blocks = nchwc_blocks(c, cb), full = c / cb, rest = c % cb;
  RasterSpec s;
  // y[n, block * cb + lane, pixel] <- [n, block, pixel, lane]
  if (full)
    s.regions.push_back(region4({n, full, cb, hw}, {blocks * hw * cb, hw * cb, 1, cb},
                                {c * hw, cb * hw, hw, 1}, 0, 0));
  if (rest)
    s.regions.push_back(region4({n, 1, rest, hw}, {blocks * hw * cb, 0, 1, cb},
                                {c * hw, 0, hw, 1}, full * hw * cb, full * cb * hw));
  return s;
}

}  // namespace walle
