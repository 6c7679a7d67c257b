// Direct NCHWc convolution and pooling kernels, written once over a small vector
// abstraction `Vec` (register type, width, load/store/broadcast/fma) that the including
// ISA translation unit defines: kernels_avx512.cpp (16 floats) and kernels_avx2.cpp (8).
// Like kernels_impl.h it instantiates no C++ library templates (see CMakeLists.txt).
//
// Register tile: OWT output pixels of one row x OCB output blocks, accumulated over all
// input channels, kernel rows and kernel columns before a single store with the fused
// epilogue (bias, residual, clamp). Each step broadcasts one input value and multiplies
// it with OCB weight vectors, so a tile does OWT * OCB FMAs per OCB + OWT loads.
// Padding: rows outside the image are skipped per output row; columns near the left and
// right edges are computed one pixel at a time with the in-image kernel columns only, and
// the interior in full tiles, so no padded copy of the input is ever made.

namespace walle {
namespace WALLE_ISA_NS {
namespace {

using VT = Vec::T;
constexpr int CB = Vec::n;

inline int64_t ceil_div_(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t floor_div_(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Kernel taps [k0, k1) whose input position o*s - p + k*d lies in [0, n).
inline void tap_range(int64_t o, int64_t s, int64_t p, int64_t d, int64_t k, int64_t n,
                      int64_t* k0, int64_t* k1) {
  const int64_t base = o * s - p;
  int64_t lo = base >= 0 ? 0 : ceil_div_(-base, d);
  int64_t hi = floor_div_(n - 1 - base, d) + 1;
  if (lo < 0) lo = 0;
  if (hi > k) hi = k;
  *k0 = lo;
  *k1 = hi < lo ? lo : hi;
}

// Output columns [lo, hi) whose every kernel column is inside the image.
inline void interior_cols(const ConvNchwcArgs& a, int64_t* lo, int64_t* hi) {
  int64_t l = ceil_div_(a.pw, a.sw);
  int64_t h = floor_div_(a.w_in - 1 - (a.kw - 1) * a.dw + a.pw, a.sw) + 1;
  if (l > a.ow) l = a.ow;
  if (h > a.ow) h = a.ow;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

// Tile flags: the input channels are swept in chunks whose weights stay in L1, so all but
// the first chunk continue from the partial sums in y, and only the last one applies the
// epilogue.
enum : int { kContinue = 1, kFinish = 2 };

// ps: floats between the tile's pixels in y (CB along a row, ow * CB down a column).
template <int OCB, int OWT>
inline __attribute__((always_inline)) void load_tile(const ConvNchwcArgs& a, int64_t ob,
                                                     int64_t oy, int64_t ox, int flags,
                                                     VT (&acc)[OCB][OWT], int64_t ps = CB) {
#pragma GCC unroll 4
  for (int j = 0; j < OCB; ++j) {
    const float* yp = a.y + ((ob + j) * a.oh + oy) * a.ow * CB + ox * CB;
#pragma GCC unroll 16
    for (int t = 0; t < OWT; ++t) acc[j][t] = flags & kContinue ? Vec::load(yp + t * ps) : Vec::zero();
  }
}

template <int OCB, int OWT>
inline __attribute__((always_inline)) void store_tile(const ConvNchwcArgs& a, int64_t ob,
                                                      int64_t oy, int64_t ox, int flags,
                                                      VT (&acc)[OCB][OWT], int64_t ps = CB) {
  if (!(flags & kFinish)) {
#pragma GCC unroll 4
    for (int j = 0; j < OCB; ++j) {
      float* yp = a.y + ((ob + j) * a.oh + oy) * a.ow * CB + ox * CB;
#pragma GCC unroll 16
      for (int t = 0; t < OWT; ++t) Vec::store(yp + t * ps, acc[j][t]);
    }
    return;
  }
  const VT lo = Vec::set1(a.lo), hi = Vec::set1(a.hi);
#pragma GCC unroll 4
  for (int j = 0; j < OCB; ++j) {
    const VT bv = a.bias ? Vec::load(a.bias + (ob + j) * CB) : Vec::zero();
    const int64_t base = ((ob + j) * a.oh + oy) * a.ow * CB + ox * CB;
#pragma GCC unroll 16
    for (int t = 0; t < OWT; ++t) {
      VT v = Vec::add(acc[j][t], bv);
      if (a.res) v = Vec::add(v, Vec::load(a.res + base + t * ps));
      v = Vec::min(Vec::max(v, lo), hi);
      Vec::store(a.y + base + t * ps, v);
    }
  }
}

// One register tile. CBI: channels per input block (CB, or 1 for a plain NCHW input).
// SW: the column stride when it is 1 or 2 (0: a.sw at run time); a compile-time stride
// makes every broadcast address a constant offset from one register. VERT: the tile's
// pixels run down one column (rows oy + t) instead of along a row: the border columns,
// whose clipped taps are the same on every row, then fill a whole tile too.
template <int OCB, int OWT, int CBI, int SW, bool VERT = false>
void conv_tile(const ConvNchwcArgs& a, int64_t ob, int64_t oy, int64_t ox, int64_t ky0,
               int64_t ky1, int64_t kx0, int64_t kx1, int64_t ib0, int64_t ib1, int flags) {
  VT acc[OCB][OWT];
  const int64_t ps = VERT ? a.ow * CB : CB;
  load_tile<OCB, OWT>(a, ob, oy, ox, flags, acc, ps);
  const int64_t iy0 = oy * a.sh - a.ph, ix0 = ox * a.sw - a.pw;
  const int64_t xrow = a.w_in * CBI;
  const int64_t xstep = VERT ? a.sh * xrow : (SW ? SW : a.sw) * CBI;
  const int64_t taps = a.kh * a.kw;
  // Packed weights of this tile's output-block group: [ICB][KH][KW][CBI][OCB][CB].
  const float* wg = a.w + (ob / OCB) * a.icb * taps * CBI * OCB * CB;
  for (int64_t ib = ib0; ib < ib1; ++ib) {
    const float* xb = a.x + ib * a.x_block;
    const float* wb = wg + ib * taps * CBI * OCB * CB;
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const float* xr = xb + (iy0 + ky * a.dh) * xrow;
      for (int64_t kx = kx0; kx < kx1; ++kx) {
        const float* xp = xr + (ix0 + kx * a.dw) * CBI;
        const float* wp = wb + (ky * a.kw + kx) * CBI * OCB * CB;
#pragma GCC unroll 16
        for (int c = 0; c < CBI; ++c) {
          VT wv[OCB];
#pragma GCC unroll 4
          for (int j = 0; j < OCB; ++j) wv[j] = Vec::load(wp + (c * OCB + j) * CB);
#pragma GCC unroll 16
          for (int t = 0; t < OWT; ++t) {
            const VT xv = Vec::bcast(xp + t * xstep + c);
#pragma GCC unroll 4
            for (int j = 0; j < OCB; ++j) acc[j][t] = Vec::fma(xv, wv[j], acc[j][t]);
          }
        }
      }
    }
  }
  store_tile<OCB, OWT>(a, ob, oy, ox, flags, acc, ps);
}

using TileFn = void (*)(const ConvNchwcArgs&, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int64_t, int64_t, int64_t, int64_t, int);

// Tile widths beyond the level's register budget (Vec::max_owt) are never instantiated.
template <int OCB, int OWT, int CBI, int SW, bool V,
          bool fits = (OWT <= Vec::max_owt[OCB == 1 ? 0 : OCB == 2 ? 1 : 2])>
struct Tile {
  static constexpr TileFn fn = nullptr;
};
template <int OCB, int OWT, int CBI, int SW, bool V>
struct Tile<OCB, OWT, CBI, SW, V, true> {
  static constexpr TileFn fn = &conv_tile<OCB, OWT, CBI, SW, V>;
};
template <int O, int C, int S, bool V = false>
struct TileTable {
  static constexpr TileFn fn[17] = {
      nullptr,                  Tile<O, 1, C, S, V>::fn,  Tile<O, 2, C, S, V>::fn,
      Tile<O, 3, C, S, V>::fn,  Tile<O, 4, C, S, V>::fn,  Tile<O, 5, C, S, V>::fn,
      Tile<O, 6, C, S, V>::fn,  Tile<O, 7, C, S, V>::fn,  Tile<O, 8, C, S, V>::fn,
      Tile<O, 9, C, S, V>::fn,  Tile<O, 10, C, S, V>::fn, Tile<O, 11, C, S, V>::fn,
      Tile<O, 12, C, S, V>::fn, Tile<O, 13, C, S, V>::fn, Tile<O, 14, C, S, V>::fn,
      Tile<O, 15, C, S, V>::fn, Tile<O, 16, C, S, V>::fn};
};

template <int OCB, int CBI, int SW>
void conv_rows(const ConvNchwcArgs& a, int64_t ob0, int64_t ob1, int64_t oy0, int64_t oy1) {
  const TileFn* tiles = TileTable<OCB, CBI, SW>::fn;
  const TileFn* vtiles = TileTable<OCB, CBI, 0, true>::fn;  // down a border column
  const int max_owt = Vec::max_owt[OCB == 1 ? 0 : OCB == 2 ? 1 : 2];
  int64_t lo, hi;
  interior_cols(a, &lo, &hi);
  // Input-channel chunks whose weights (OCB x chunk x taps x CBI vectors) fit in ~256 KB
  // of L2, swept over bands of rows whose partial sums (~48 KB) stay in L2 too. A tile
  // reads OCB weight vectors per OWT broadcasts, so weights from L2 keep up with the FMAs,
  // and fewer chunks mean fewer reloads of the partial sums (20 KB L1 chunks re-read
  // them every 16 input channels of a 1x1; 256 KB measured 2-6 % faster on ResNet-50's
  // and MobileNetV2's 1x1 layers on a Zen 4 host).
  const int64_t wbytes = int64_t(OCB) * a.kh * a.kw * CBI * CB * 4;
  int64_t chunk = (256 << 10) / wbytes;
  if (chunk < 1) chunk = 1;
  if (chunk > a.icb) chunk = a.icb;
  const int64_t ntiles = hi > lo ? (hi - lo + max_owt - 1) / max_owt : 0;
  const int64_t tile_w = ntiles ? (hi - lo) / ntiles : 0, wide = ntiles ? (hi - lo) % ntiles : 0;
  int64_t band = (48 << 10) / (a.ow * OCB * CB * 4);
  if (band < 1) band = 1;
  for (int64_t ob = ob0; ob < ob1; ob += OCB)
    for (int64_t by = oy0; by < oy1; by += band) {
      const int64_t by1 = by + band < oy1 ? by + band : oy1;
      for (int64_t ib = 0; ib < a.icb; ib += chunk) {
        const int64_t ib1 = ib + chunk < a.icb ? ib + chunk : a.icb;
        const int flags = (ib > 0 ? kContinue : 0) | (ib1 == a.icb ? kFinish : 0);
        // Rows [f0, f1) use every kernel row (contiguous: the clipped rows are at the
        // top and bottom); their border pixels go in column tiles after the rows.
        int64_t f0 = by1, f1 = by;
        for (int64_t oy = by; oy < by1; ++oy) {
          int64_t ky0, ky1;
          tap_range(oy, a.sh, a.ph, a.dh, a.kh, a.h, &ky0, &ky1);
          const bool full = ky0 == 0 && ky1 == a.kh;
          if (full) {
            if (oy < f0) f0 = oy;
            f1 = oy + 1;
          }
          auto edge = [&](int64_t ox) {
            int64_t kx0, kx1;
            tap_range(ox, a.sw, a.pw, a.dw, a.kw, a.w_in, &kx0, &kx1);
            tiles[1](a, ob, oy, ox, ky0, ky1, kx0, kx1, ib, ib1, flags);
          };
          if (!full)
            for (int64_t ox = 0; ox < lo; ++ox) edge(ox);
          // Balanced widths: 49 pixels in 6-wide tiles go 6,6,6,6,5,5,5,5,5 rather than
          // eight 6s and a one-pixel tile that loads OCB weight vectors per FMA group.
          for (int64_t k = 0, ox = lo; k < ntiles; ++k) {
            const int64_t n = tile_w + (k < wide ? 1 : 0);
            tiles[n](a, ob, oy, ox, ky0, ky1, 0, a.kw, ib, ib1, flags);
            ox += n;
          }
          if (!full)
            for (int64_t ox = hi; ox < a.ow; ++ox) edge(ox);
        }
        auto column = [&](int64_t ox) {
          int64_t kx0, kx1;
          tap_range(ox, a.sw, a.pw, a.dw, a.kw, a.w_in, &kx0, &kx1);
          for (int64_t oy = f0; oy < f1;) {
            const int64_t n = f1 - oy < max_owt ? f1 - oy : max_owt;
            vtiles[n](a, ob, oy, ox, 0, a.kh, kx0, kx1, ib, ib1, flags);
            oy += n;
          }
        };
        for (int64_t ox = 0; ox < lo; ++ox) column(ox);
        for (int64_t ox = hi; ox < a.ow; ++ox) column(ox);
      }
    }
}

template <int OCB, int CBI>
void conv_rows_sw(const ConvNchwcArgs& a, int64_t ob0, int64_t ob1, int64_t oy0, int64_t oy1) {
  if (a.sw == 1) conv_rows<OCB, CBI, 1>(a, ob0, ob1, oy0, oy1);
  else if (a.sw == 2) conv_rows<OCB, CBI, 2>(a, ob0, ob1, oy0, oy1);
  else conv_rows<OCB, CBI, 0>(a, ob0, ob1, oy0, oy1);
}

void f32_conv_nchwc(const ConvNchwcArgs& a, int64_t ob0, int64_t ob1, int64_t oy0, int64_t oy1) {
  const bool plain = a.cbi == 1;
  switch (a.ocb_tile) {
    case 4: return plain ? conv_rows_sw<4, 1>(a, ob0, ob1, oy0, oy1) : conv_rows_sw<4, CB>(a, ob0, ob1, oy0, oy1);
    case 2: return plain ? conv_rows_sw<2, 1>(a, ob0, ob1, oy0, oy1) : conv_rows_sw<2, CB>(a, ob0, ob1, oy0, oy1);
    default: return plain ? conv_rows_sw<1, 1>(a, ob0, ob1, oy0, oy1) : conv_rows_sw<1, CB>(a, ob0, ob1, oy0, oy1);
  }
}

// Depthwise: every channel is its own group, so a tile is OWT pixels of one channel
// block, each tap one vector FMA (input vector x weight vector), no broadcasts.
template <int OWT, int SW>
void dw_tile(const ConvNchwcArgs& a, int64_t cb, int64_t oy, int64_t ox, int64_t ky0, int64_t ky1,
             int64_t kx0, int64_t kx1, int64_t, int64_t, int) {
  VT acc[1][OWT];
#pragma GCC unroll 16
  for (int t = 0; t < OWT; ++t) acc[0][t] = Vec::zero();
  const int64_t iy0 = oy * a.sh - a.ph, ix0 = ox * a.sw - a.pw;
  const float* xb = a.x + cb * a.x_block;
  const float* wb = a.w + cb * a.kh * a.kw * CB;
  for (int64_t ky = ky0; ky < ky1; ++ky) {
    const float* xr = xb + (iy0 + ky * a.dh) * a.w_in * CB;
    for (int64_t kx = kx0; kx < kx1; ++kx) {
      const VT wv = Vec::load(wb + (ky * a.kw + kx) * CB);
      const float* xp = xr + (ix0 + kx * a.dw) * CB;
#pragma GCC unroll 16
      for (int t = 0; t < OWT; ++t)
        acc[0][t] = Vec::fma(Vec::load(xp + t * (SW ? SW : a.sw) * CB), wv, acc[0][t]);
    }
  }
  store_tile<1, OWT>(a, cb, oy, ox, kFinish, acc);
}

template <int OWT, int SW, bool fits = (OWT <= Vec::max_owt_dw)>
struct DwTile {
  static constexpr TileFn fn = nullptr;
};
template <int OWT, int SW>
struct DwTile<OWT, SW, true> {
  static constexpr TileFn fn = &dw_tile<OWT, SW>;
};
template <int S>
struct DwTable {
  static constexpr TileFn fn[17] = {
      nullptr,           DwTile<1, S>::fn,  DwTile<2, S>::fn,  DwTile<3, S>::fn,
      DwTile<4, S>::fn,  DwTile<5, S>::fn,  DwTile<6, S>::fn,  DwTile<7, S>::fn,
      DwTile<8, S>::fn,  DwTile<9, S>::fn,  DwTile<10, S>::fn, DwTile<11, S>::fn,
      DwTile<12, S>::fn, DwTile<13, S>::fn, DwTile<14, S>::fn, DwTile<15, S>::fn,
      DwTile<16, S>::fn};
};

void f32_dwconv_nchwc(const ConvNchwcArgs& a, int64_t cb0, int64_t cb1, int64_t oy0, int64_t oy1) {
  const TileFn* tiles = a.sw == 1 ? DwTable<1>::fn : a.sw == 2 ? DwTable<2>::fn : DwTable<0>::fn;
  int64_t lo, hi;
  interior_cols(a, &lo, &hi);
  for (int64_t cb = cb0; cb < cb1; ++cb)
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      int64_t ky0, ky1;
      tap_range(oy, a.sh, a.ph, a.dh, a.kh, a.h, &ky0, &ky1);
      auto edge = [&](int64_t ox) {
        int64_t kx0, kx1;
        tap_range(ox, a.sw, a.pw, a.dw, a.kw, a.w_in, &kx0, &kx1);
        tiles[1](a, cb, oy, ox, ky0, ky1, kx0, kx1, 0, 0, kFinish);
      };
      for (int64_t ox = 0; ox < lo; ++ox) edge(ox);
      for (int64_t ox = lo; ox < hi;) {
        const int64_t n = hi - ox < Vec::max_owt_dw ? hi - ox : Vec::max_owt_dw;
        tiles[n](a, cb, oy, ox, ky0, ky1, 0, a.kw, 0, 0, kFinish);
        ox += n;
      }
      for (int64_t ox = hi; ox < a.ow; ++ox) edge(ox);
    }
}

// Max / average pooling: one vector of CB channels per output pixel, taps clipped to the
// image (max ignores padding; average divides by in-image taps or, with
// count_include_pad, by the taps inside the padded image).
void f32_pool_nchwc(const PoolNchwcArgs& a, int64_t cb0, int64_t cb1) {
  for (int64_t cb = cb0; cb < cb1; ++cb) {
    const float* xb = a.x + cb * a.h * a.w_in * CB;
    float* yb = a.y + cb * a.oh * a.ow * CB;
    for (int64_t oy = 0; oy < a.oh; ++oy) {
      int64_t ky0, ky1;
      tap_range(oy, a.sh, a.ph, a.dh, a.kh, a.h, &ky0, &ky1);
      for (int64_t ox = 0; ox < a.ow; ++ox) {
        int64_t kx0, kx1;
        tap_range(ox, a.sw, a.pw, a.dw, a.kw, a.w_in, &kx0, &kx1);
        VT acc = a.is_max ? Vec::set1(-INFINITY) : Vec::zero();
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const float* xr = xb + ((oy * a.sh - a.ph + ky * a.dh) * a.w_in) * CB;
          for (int64_t kx = kx0; kx < kx1; ++kx) {
            const VT v = Vec::load(xr + (ox * a.sw - a.pw + kx * a.dw) * CB);
            acc = a.is_max ? Vec::max(acc, v) : Vec::add(acc, v);
          }
        }
        if (!a.is_max) {
          int64_t n = (ky1 - ky0) * (kx1 - kx0);
          if (a.count_include_pad) {
            // Taps inside the padded image [-ph, h + pad_h_end) x [-pw, w + pad_w_end).
            int64_t cy = 0, cx = 0;
            for (int64_t ky = 0; ky < a.kh; ++ky) {
              const int64_t iy = oy * a.sh - a.ph + ky * a.dh;
              cy += iy >= -a.ph && iy < a.h + a.pad_h_end;
            }
            for (int64_t kx = 0; kx < a.kw; ++kx) {
              const int64_t ix = ox * a.sw - a.pw + kx * a.dw;
              cx += ix >= -a.pw && ix < a.w_in + a.pad_w_end;
            }
            n = cy * cx;
          }
          acc = Vec::mul(acc, Vec::set1(1.0f / float(n > 0 ? n : 1)));
        }
        Vec::store(yb + (oy * a.ow + ox) * CB, acc);
      }
    }
  }
}

// Winograd F(2x2, 3x3): the input and output transforms are additions of whole channel
// vectors, so in NCHWc they vectorise over channels with no shuffles. B^T = [1 0 -1 0;
// 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1].
void winograd2_in(const WinogradNchwcArgs& a) {
  const int64_t nt = a.t1 - a.t0;
  for (int64_t t = a.t0; t < a.t1; ++t) {
    const int64_t iy = 2 * (t / a.tw) - a.ph, ix = 2 * (t % a.tw) - a.pw;
    bool rows[4], cols[4];
    for (int i = 0; i < 4; ++i) {
      rows[i] = iy + i >= 0 && iy + i < a.h;
      cols[i] = ix + i >= 0 && ix + i < a.w_in;
    }
    const bool inside = rows[0] && rows[3] && cols[0] && cols[3];
    for (int64_t cb = 0; cb < a.cblocks; ++cb) {
      const float* xb = a.x + cb * a.h * a.w_in * CB;
      VT d[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
          d[i][j] = inside || (rows[i] && cols[j])
                        ? Vec::load(xb + ((iy + i) * a.w_in + ix + j) * CB)
                        : Vec::zero();
      VT r[4][4];
      for (int j = 0; j < 4; ++j) {
        r[0][j] = Vec::sub(d[0][j], d[2][j]);
        r[1][j] = Vec::add(d[1][j], d[2][j]);
        r[2][j] = Vec::sub(d[2][j], d[1][j]);
        r[3][j] = Vec::sub(d[1][j], d[3][j]);
      }
      float* vb = a.v + (cb * nt + (t - a.t0)) * CB;
      const int64_t xi = a.cblocks * nt * CB;  // between the 16 transform positions
      for (int i = 0; i < 4; ++i) {
        Vec::store(vb + (i * 4 + 0) * xi, Vec::sub(r[i][0], r[i][2]));
        Vec::store(vb + (i * 4 + 1) * xi, Vec::add(r[i][1], r[i][2]));
        Vec::store(vb + (i * 4 + 2) * xi, Vec::sub(r[i][2], r[i][1]));
        Vec::store(vb + (i * 4 + 3) * xi, Vec::sub(r[i][1], r[i][3]));
      }
    }
  }
}

void winograd2_out(const WinogradNchwcArgs& a) {
  const int64_t nt = a.t1 - a.t0, xi = a.oblocks * nt * CB;
  const VT lo = Vec::set1(a.lo), hi = Vec::set1(a.hi);
  for (int64_t t = a.t0; t < a.t1; ++t) {
    const int64_t oy = 2 * (t / a.tw), ox = 2 * (t % a.tw);
    for (int64_t ob = 0; ob < a.oblocks; ++ob) {
      const float* mb = a.m + (ob * nt + (t - a.t0)) * CB;
      VT s[2][4];
      for (int j = 0; j < 4; ++j) {
        const VT m0 = Vec::load(mb + j * xi), m1 = Vec::load(mb + (4 + j) * xi);
        const VT m2 = Vec::load(mb + (8 + j) * xi), m3 = Vec::load(mb + (12 + j) * xi);
        s[0][j] = Vec::add(Vec::add(m0, m1), m2);
        s[1][j] = Vec::sub(Vec::sub(m1, m2), m3);
      }
      const VT bv = a.bias ? Vec::load(a.bias + ob * CB) : Vec::zero();
      for (int p = 0; p < 2; ++p) {
        if (oy + p >= a.oh) break;
        const VT o[2] = {Vec::add(Vec::add(s[p][0], s[p][1]), s[p][2]),
                         Vec::sub(Vec::sub(s[p][1], s[p][2]), s[p][3])};
        for (int q = 0; q < 2; ++q) {
          if (ox + q >= a.ow) break;
          const int64_t yi = ((ob * a.oh + oy + p) * a.ow + ox + q) * CB;
          VT v = Vec::add(o[q], bv);
          if (a.res) v = Vec::add(v, Vec::load(a.res + yi));
          Vec::store(a.y + yi, Vec::min(Vec::max(v, lo), hi));
        }
      }
    }
  }
}

// Winograd F(4x4, 3x3): 6x6 input patches, 36 transform positions, 2.25 multiplies per
// output instead of 4 (F(2x2)) or 9 (direct). B^T (6x6) and A^T (4x6) below, applied to
// columns then rows; every coefficient is a small power of two or 5, so a 1-D transform
// is a handful of vector adds and FMAs. G (6x3) is applied to the weights at load.
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//          0 4 0 -5 0 1]
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
inline __attribute__((always_inline)) void bt6(const VT (&d)[6], VT (&o)[6]) {
  const VT c4 = Vec::set1(4.0f), m4 = Vec::set1(-4.0f), m5 = Vec::set1(-5.0f);
  const VT c2 = Vec::set1(2.0f), m2 = Vec::set1(-2.0f);
  const VT d42 = Vec::sub(d[4], d[2]), d31 = Vec::sub(d[3], d[1]);
  o[0] = Vec::fma(c4, d[0], Vec::fma(m5, d[2], d[4]));
  o[1] = Vec::fma(m4, Vec::add(d[1], d[2]), Vec::add(d[3], d[4]));
  o[2] = Vec::fma(c4, Vec::sub(d[1], d[2]), Vec::sub(d[4], d[3]));
  o[3] = Vec::fma(c2, d31, d42);
  o[4] = Vec::fma(m2, d31, d42);
  o[5] = Vec::fma(c4, d[1], Vec::fma(m5, d[3], d[5]));
}

inline __attribute__((always_inline)) void at6(const VT (&m)[6], VT (&o)[4]) {
  const VT c2 = Vec::set1(2.0f), c4 = Vec::set1(4.0f), c8 = Vec::set1(8.0f);
  const VT s12 = Vec::add(m[1], m[2]), d12 = Vec::sub(m[1], m[2]);
  const VT s34 = Vec::add(m[3], m[4]), d34 = Vec::sub(m[3], m[4]);
  o[0] = Vec::add(Vec::add(m[0], s12), s34);
  o[1] = Vec::fma(c2, d34, d12);
  o[2] = Vec::fma(c4, s34, s12);
  o[3] = Vec::add(Vec::fma(c8, d34, d12), m[5]);
}

void winograd4_in(const WinogradNchwcArgs& a) {
  const int64_t nt = a.t1 - a.t0;
  const int64_t xi = a.cblocks * nt * CB;  // between the 36 transform positions
  for (int64_t t = a.t0; t < a.t1; ++t) {
    const int64_t iy = 4 * (t / a.tw) - a.ph, ix = 4 * (t % a.tw) - a.pw;
    bool rows[6], cols[6];
    for (int i = 0; i < 6; ++i) {
      rows[i] = iy + i >= 0 && iy + i < a.h;
      cols[i] = ix + i >= 0 && ix + i < a.w_in;
    }
    const bool inside = rows[0] && rows[5] && cols[0] && cols[5];
    for (int64_t cb = 0; cb < a.cblocks; ++cb) {
      const float* xb = a.x + cb * a.h * a.w_in * CB;
      VT r[6][6];  // B^T d, column by column
      for (int j = 0; j < 6; ++j) {
        VT d[6], o[6];
        for (int i = 0; i < 6; ++i)
          d[i] = inside || (rows[i] && cols[j]) ? Vec::load(xb + ((iy + i) * a.w_in + ix + j) * CB)
                                                : Vec::zero();
        bt6(d, o);
        for (int i = 0; i < 6; ++i) r[i][j] = o[i];
      }
      float* vb = a.v + (cb * nt + (t - a.t0)) * CB;
      for (int i = 0; i < 6; ++i) {
        VT o[6];
        bt6(r[i], o);
        for (int j = 0; j < 6; ++j) Vec::store(vb + (i * 6 + j) * xi, o[j]);
      }
    }
  }
}

void winograd4_out(const WinogradNchwcArgs& a) {
  const int64_t nt = a.t1 - a.t0, xi = a.oblocks * nt * CB;
  const VT lo = Vec::set1(a.lo), hi = Vec::set1(a.hi);
  for (int64_t t = a.t0; t < a.t1; ++t) {
    const int64_t oy = 4 * (t / a.tw), ox = 4 * (t % a.tw);
    for (int64_t ob = 0; ob < a.oblocks; ++ob) {
      const float* mb = a.m + (ob * nt + (t - a.t0)) * CB;
      VT s[4][6];  // A^T m, column by column
      for (int e = 0; e < 6; ++e) {
        VT m[6], o[4];
        for (int i = 0; i < 6; ++i) m[i] = Vec::load(mb + (i * 6 + e) * xi);
        at6(m, o);
        for (int p = 0; p < 4; ++p) s[p][e] = o[p];
      }
      const VT bv = a.bias ? Vec::load(a.bias + ob * CB) : Vec::zero();
      for (int p = 0; p < 4; ++p) {
        if (oy + p >= a.oh) break;
        VT o[4];
        at6(s[p], o);
        for (int q = 0; q < 4; ++q) {
          if (ox + q >= a.ow) break;
          const int64_t yi = ((ob * a.oh + oy + p) * a.ow + ox + q) * CB;
          VT v = Vec::add(o[q], bv);
          if (a.res) v = Vec::add(v, Vec::load(a.res + yi));
          Vec::store(a.y + yi, Vec::min(Vec::max(v, lo), hi));
        }
      }
    }
  }
}

void f32_winograd_in_nchwc(const WinogradNchwcArgs& a) {
  if (a.tile == 4) winograd4_in(a);
  else winograd2_in(a);
}

void f32_winograd_out_nchwc(const WinogradNchwcArgs& a) {
  if (a.tile == 4) winograd4_out(a);
  else winograd2_out(a);
}

}  // namespace
}  // namespace WALLE_ISA_NS
}  // namespace walle
