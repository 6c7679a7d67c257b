// Image pre-processing behind walle_engine.cv: resize, colour conversion, and the fused
// scale/normalise/HWC->CHW pass every vision model starts with. Task scripts run in
// sub-interpreters where numpy and OpenCV cannot load, so this is their only way to get
// an image into a model. Images are C-contiguous (H, W) or (H, W, C) uint8 or float32
// tensors. The arithmetic follows OpenCV (cv2.resize, cv2.cvtColor), because that is what
// models were trained on; crop, flip and pad are rasters (cv.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "atomic.h"
#include "threadpool.h"

namespace py = pybind11;
using namespace walle;

namespace {

struct Dims {
  int64_t h, w, c;
};

Dims image_dims(const Tensor& t, const std::string& op) {
  if (t.dtype != DType::u8 && t.dtype != DType::f32)
    throw Error(op + ": images must be uint8 or float32, not " + dtype_name(t.dtype));
  if (t.rank() != 2 && t.rank() != 3)
    throw Error(op + ": expected an (H, W) or (H, W, C) image, got shape " + shape_str(t.shape));
  const Dims d{t.dim(0), t.dim(1), t.rank() == 3 ? t.dim(2) : 1};
  if (d.h < 1 || d.w < 1 || d.c < 1)
    throw Error(op + ": empty image of shape " + shape_str(t.shape));
  return d;
}

// Runs f(y_begin, y_end) over output rows, split across the pool when there is enough work.
// f runs on pool threads, so everything that can fail is checked before.
template <class F>
void for_rows(int64_t rows, int64_t row_elems, F&& f) {
  const int T = num_threads();
  const int64_t tasks = T > 1 && rows * row_elems >= (1 << 16) ? std::min<int64_t>(rows, 4 * T) : 1;
  parallel_for(tasks, [&](int64_t t) { f(rows * t / tasks, rows * (t + 1) / tasks); });
}

// Calls f(std::integral_constant<int, N>()) with the channel count as a compile-time
// constant for the common counts, so per-pixel loops unroll and vectorise; N = 0 means
// "use the run-time count".
template <class F>
void with_channels(int64_t c, F&& f) {
  switch (c) {
    case 1: return f(std::integral_constant<int, 1>());
    case 3: return f(std::integral_constant<int, 3>());
    case 4: return f(std::integral_constant<int, 4>());
    default: return f(std::integral_constant<int, 0>());
  }
}

// ---- resize ------------------------------------------------------------------------

// One output coordinate of a bilinear resize: source indices and their weights.
struct Tap {
  int64_t i0, i1;
  float w0, w1;
};

// cv::resize's INTER_LINEAR grid: half-pixel centres, s = (d + 0.5) * scale - 0.5 with
// scale = 1 / (dst / src). For uint8 cv2 rounds s to float before splitting off the
// fraction (OpenCV's generic code); its float32 path keeps the fraction in double
// (measured, cv2 4.14 to 5.1), which also avoids losing up to 2^-15 of it on wide images.
// Each dtype follows its cv2 path. A column outside the image moves onto
// the edge pixel with weight 1; a row only clamps its indices and keeps both weights (the
// same value, rounded differently: OpenCV does it this way).
std::vector<Tap> linear_taps(int64_t src, int64_t dst, bool columns, bool float_coord) {
  const double scale = 1.0 / (double(dst) / double(src));
  std::vector<Tap> taps(dst);
  for (int64_t d = 0; d < dst; ++d) {
    const double x = (double(d) + 0.5) * scale - 0.5;
    const double xr = float_coord ? double(float(x)) : x;
    int64_t s = int64_t(std::floor(xr));
    float f = float(xr - double(s));
    if (columns && s < 0) f = 0, s = 0;
    if (columns && s >= src - 1) f = 0, s = src - 1;
    taps[d] = {std::clamp<int64_t>(s, 0, src - 1), std::clamp<int64_t>(s + 1, 0, src - 1),
               1.f - f, f};
  }
  return taps;
}

// Separable: each source row is interpolated horizontally once into a row buffer (two are
// kept, consecutive output rows mostly share them), then output rows blend two buffers.
// uint8 runs in OpenCV's fixed point: weights in Q11 (INTER_RESIZE_COEF_BITS), and rows
// kept as int16 after dropping 4 bits, as OpenCV's SIMD path does before its 16x16-bit
// multiplies; cv2 uses that rounding for every pixel. (Rounding the exact Q22 sum instead
// would differ from cv2 by 1 on ~10% of pixels.)
template <class T, int CN>
void resize_linear(const Tensor& src, const Tensor& dst, Dims s, Dims d) {
  constexpr bool fixed = std::is_same_v<T, uint8_t>;
  using Row = std::conditional_t<fixed, int16_t, float>;  // horizontally resized row
  using W = std::conditional_t<fixed, int32_t, float>;    // weight
  auto weight = [](float w) {
    if constexpr (fixed) return W(std::lrint(w * 2048.f));
    else return w;
  };
  const int64_t c = CN ? CN : s.c, row = d.w * c;
  const std::vector<Tap> yt = linear_taps(s.h, d.h, false, fixed);
  std::vector<int64_t> x0(d.w), x1(d.w);
  std::vector<W> a0(d.w), a1(d.w);
  {
    const std::vector<Tap> xt = linear_taps(s.w, d.w, true, fixed);
    for (int64_t x = 0; x < d.w; ++x) {
      x0[x] = xt[x].i0 * c;
      x1[x] = xt[x].i1 * c;
      a0[x] = weight(xt[x].w0);
      a1[x] = weight(xt[x].w1);
    }
  }
  // The loops take everything as arguments: through captured references the compiler
  // must assume each uint8 store may change the loop bounds, and will not vectorise.
  auto hpass = [](const T* S, Row* h, int64_t w, int64_t c, const int64_t* x0,
                  const int64_t* x1, const W* a0, const W* a1) {
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ch = 0; ch < (CN ? CN : c); ++ch) {
        const W v = W(S[x0[x] + ch]) * a0[x] + W(S[x1[x] + ch]) * a1[x];
        if constexpr (fixed) h[x * c + ch] = Row(v >> 4);  // <= 255 * 2049 >> 4: fits
        else h[x * c + ch] = v;
      }
  };
  auto vpass = [](const Row* __restrict h0, const Row* __restrict h1, W b0, W b1,
                  T* __restrict D, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (fixed) {  // high halves of the products, then round off 2 more bits
        const int v = ((h0[i] * b0) >> 16) + ((h1[i] * b1) >> 16);
        D[i] = uint8_t(std::clamp((v + 2) >> 2, 0, 255));
      } else {
        D[i] = h0[i] * b0 + h1[i] * b1;
      }
    }
  };
  for_rows(d.h, row, [&](int64_t y_begin, int64_t y_end) {
    std::vector<Row> buf(2 * row);
    int64_t held[2] = {-1, -1};  // source row in each half of buf
    auto hrow = [&](int64_t r, int64_t keep) -> const Row* {
      for (int k = 0; k < 2; ++k)
        if (held[k] == r) return buf.data() + k * row;
      const int k = held[0] == keep ? 1 : 0;
      hpass(src.ptr<T>() + r * s.w * c, buf.data() + k * row, d.w, c, x0.data(), x1.data(),
            a0.data(), a1.data());
      held[k] = r;
      return buf.data() + k * row;
    };
    for (int64_t y = y_begin; y < y_end; ++y) {
      const Tap& t = yt[y];
      const Row* h0 = hrow(t.i0, t.i1);
      vpass(h0, hrow(t.i1, t.i0), weight(t.w0), weight(t.w1), dst.ptr<T>() + y * row, row);
    }
  });
}

// Source index of each output index. INTER_NEAREST is floor(d * scale): top-left aligned,
// not half-pixel, so it shifts the image by up to half a source pixel; kept because it is
// what cv2.INTER_NEAREST does. INTER_NEAREST_EXACT samples pixel centres, (d + 0.5) * scale,
// accumulated in double exactly as cv2 5.x does so that exact ties fall the same way.
std::vector<int64_t> nearest_index(int64_t src, int64_t dst, bool exact) {
  std::vector<int64_t> idx(dst);
  const double inv = 1.0 / (double(dst) / double(src)), step = double(src) / double(dst);
  double centre = step * 0.5;
  for (int64_t d = 0; d < dst; ++d, centre += step) {
    const double s = exact ? centre : double(d) * inv;
    idx[d] = std::clamp<int64_t>(int64_t(std::floor(s)), 0, src - 1);
  }
  return idx;
}

template <class T, int CN>
void resize_nearest(const Tensor& src, const Tensor& dst, Dims s, Dims d, bool exact) {
  const std::vector<int64_t> xs = nearest_index(s.w, d.w, exact);
  const std::vector<int64_t> ys = nearest_index(s.h, d.h, exact);
  auto copy_row = [](const T* S, T* D, const int64_t* xs, int64_t w, int64_t c) {
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ch = 0; ch < (CN ? CN : c); ++ch) D[x * c + ch] = S[xs[x] * c + ch];
  };
  const int64_t c = CN ? CN : s.c;
  for_rows(d.h, d.w * c, [&](int64_t y_begin, int64_t y_end) {
    for (int64_t y = y_begin; y < y_end; ++y)
      copy_row(src.ptr<T>() + ys[y] * s.w * c, dst.ptr<T>() + y * d.w * c, xs.data(), d.w, c);
  });
}

Tensor resize(const Tensor& src, int64_t width, int64_t height, const std::string& mode) {
  const Dims s = image_dims(src, "resize");
  if (width < 1 || height < 1)
    throw Error("resize: output size must be positive, got (width, height) = (" +
                std::to_string(width) + ", " + std::to_string(height) + ")");
  if (mode != "bilinear" && mode != "nearest" && mode != "nearest_exact")
    throw Error("resize: unknown interpolation '" + mode +
                "': use bilinear, nearest or nearest_exact");
  // Same size: a copy, as in cv2 (interpolating would turn an inf pixel into inf * 0 = NaN).
  if (width == s.w && height == s.h) return src.clone();
  Shape shape = src.shape;
  shape[0] = height;
  shape[1] = width;
  Tensor dst = Tensor::empty(src.dtype, shape);
  const Dims d{height, width, s.c};
  const bool u8 = src.dtype == DType::u8, exact = mode == "nearest_exact";
  py::gil_scoped_release nogil;
  with_channels(s.c, [&](auto cn) {
    constexpr int CN = decltype(cn)::value;
    if (mode == "bilinear") {
      if (u8) resize_linear<uint8_t, CN>(src, dst, s, d);
      else resize_linear<float, CN>(src, dst, s, d);
    } else {
      if (u8) resize_nearest<uint8_t, CN>(src, dst, s, d, exact);
      else resize_nearest<float, CN>(src, dst, s, d, exact);
    }
  });
  return dst;
}

// ---- colour conversion ------------------------------------------------------------

enum class Cvt { permute, gray, hsv };

// For `permute`, map[k] is the source channel of output channel k (-1: opaque alpha, 255
// or 1.0 as in OpenCV). For `gray` and `hsv`, map[0] is the channel holding red.
struct Conversion {
  const char* name;
  int in_c, out_c;
  Cvt kind;
  int map[4];
};

constexpr Conversion kConversions[] = {
    {"rgb2bgr", 3, 3, Cvt::permute, {2, 1, 0}},
    {"bgr2rgb", 3, 3, Cvt::permute, {2, 1, 0}},
    {"rgba2bgra", 4, 4, Cvt::permute, {2, 1, 0, 3}},
    {"bgra2rgba", 4, 4, Cvt::permute, {2, 1, 0, 3}},
    {"rgba2rgb", 4, 3, Cvt::permute, {0, 1, 2}},
    {"bgra2bgr", 4, 3, Cvt::permute, {0, 1, 2}},
    {"rgba2bgr", 4, 3, Cvt::permute, {2, 1, 0}},
    {"bgra2rgb", 4, 3, Cvt::permute, {2, 1, 0}},
    {"rgb2rgba", 3, 4, Cvt::permute, {0, 1, 2, -1}},
    {"bgr2bgra", 3, 4, Cvt::permute, {0, 1, 2, -1}},
    {"rgb2bgra", 3, 4, Cvt::permute, {2, 1, 0, -1}},
    {"bgr2rgba", 3, 4, Cvt::permute, {2, 1, 0, -1}},
    {"gray2rgb", 1, 3, Cvt::permute, {0, 0, 0}},
    {"gray2bgr", 1, 3, Cvt::permute, {0, 0, 0}},
    {"gray2rgba", 1, 4, Cvt::permute, {0, 0, 0, -1}},
    {"gray2bgra", 1, 4, Cvt::permute, {0, 0, 0, -1}},
    {"rgb2gray", 3, 1, Cvt::gray, {0}},
    {"bgr2gray", 3, 1, Cvt::gray, {2}},
    {"rgba2gray", 4, 1, Cvt::gray, {0}},
    {"bgra2gray", 4, 1, Cvt::gray, {2}},
    {"rgb2hsv", 3, 3, Cvt::hsv, {0}},
    {"bgr2hsv", 3, 3, Cvt::hsv, {2}},
};

const Conversion& find_conversion(const std::string& code) {
  std::string names;
  for (const auto& c : kConversions) {
    if (code == c.name) return c;
    names += names.empty() ? c.name : std::string(", ") + c.name;
  }
  throw Error("cvt_color: unknown conversion '" + code + "': use one of " + names);
}

// Each converts n consecutive pixels; IN and OUT are channel counts (0: run-time).
template <int IN, int OUT, class T>
void permute_pixels(const T* S, T* D, int64_t n, const Conversion& cv) {
  const int in = IN ? IN : cv.in_c, out = OUT ? OUT : cv.out_c;
  const T opaque = std::is_same_v<T, uint8_t> ? T(255) : T(1);
  int map[4];  // a local copy: stores through D could alias cv.map
  std::copy(cv.map, cv.map + 4, map);
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < out; ++k) D[i * out + k] = map[k] < 0 ? opaque : S[i * in + map[k]];
}

template <int IN>
void gray_pixels(const uint8_t* S, uint8_t* D, int64_t n, const Conversion& cv) {
  // 0.299 R + 0.587 G + 0.114 B in OpenCV's Q15 (RY15, GY15, BY15: they sum to 1 exactly).
  // Its older Q14 constants would differ from cv2 by 1 on ~0.3% of pixels.
  int k[3];
  k[cv.map[0]] = 9798;
  k[1] = 19235;
  k[2 - cv.map[0]] = 3735;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = S + i * IN;
    D[i] = uint8_t((p[0] * k[0] + p[1] * k[1] + p[2] * k[2] + (1 << 14)) >> 15);
  }
}

template <int IN>
void gray_pixels(const float* S, float* D, int64_t n, const Conversion& cv) {
  float k[3];
  k[cv.map[0]] = 0.299f;
  k[1] = 0.587f;
  k[2 - cv.map[0]] = 0.114f;
  for (int64_t i = 0; i < n; ++i) {
    const float* p = S + i * IN;
    D[i] = p[0] * k[0] + p[1] * k[1] + p[2] * k[2];
  }
}

// OpenCV's RGB2HSV_b: H in [0, 180) (degrees / 2, to fit a byte), S and V in [0, 255],
// divisions replaced by Q12 reciprocal tables rounded like cv::saturate_cast.
void hsv_pixels(const uint8_t* S, uint8_t* D, int64_t n, const Conversion& cv) {
  int sdiv[256], hdiv[256];
  sdiv[0] = hdiv[0] = 0;
  for (int i = 1; i < 256; ++i) {
    sdiv[i] = int(std::lrint((255 << 12) / double(i)));
    hdiv[i] = int(std::lrint((180 << 12) / (6.0 * i)));
  }
  const int ri = cv.map[0], bi = 2 - ri;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = S + i * 3;
    const int r = p[ri], g = p[1], b = p[bi];
    const int v = std::max({r, g, b}), diff = v - std::min({r, g, b});
    int h = v == r ? g - b : v == g ? b - r + 2 * diff : r - g + 4 * diff;
    h = (h * hdiv[diff] + (1 << 11)) >> 12;
    D[i * 3] = uint8_t(h < 0 ? h + 180 : h);
    D[i * 3 + 1] = uint8_t((diff * sdiv[v] + (1 << 11)) >> 12);
    D[i * 3 + 2] = uint8_t(v);
  }
}

// OpenCV's float RGB2HSV: H in [0, 360), S and V in [0, 1] for inputs in [0, 1].
void hsv_pixels(const float* S, float* D, int64_t n, const Conversion& cv) {
  const int ri = cv.map[0], bi = 2 - ri;
  constexpr float eps = 1.1920929e-7f;  // FLT_EPSILON, which OpenCV adds to both divisors
  for (int64_t i = 0; i < n; ++i) {
    const float* p = S + i * 3;
    const float r = p[ri], g = p[1], b = p[bi];
    const float v = std::max({r, g, b}), diff = v - std::min({r, g, b});
    const float s = diff / (std::fabs(v) + eps), k = float(60.0 / (diff + eps));
    float h = v == r ? (g - b) * k : v == g ? (b - r) * k + 120.f : (r - g) * k + 240.f;
    if (h < 0) h += 360.f;
    D[i * 3] = h;
    D[i * 3 + 1] = s;
    D[i * 3 + 2] = v;
  }
}

template <class T>
void convert_pixels(const T* S, T* D, int64_t n, const Conversion& cv) {
  switch (cv.kind) {
    case Cvt::permute:
      return with_channels(cv.in_c, [&](auto in) {
        with_channels(cv.out_c, [&](auto out) {
          permute_pixels<decltype(in)::value, decltype(out)::value>(S, D, n, cv);
        });
      });
    case Cvt::gray: return cv.in_c == 4 ? gray_pixels<4>(S, D, n, cv) : gray_pixels<3>(S, D, n, cv);
    case Cvt::hsv: return hsv_pixels(S, D, n, cv);
  }
}

Tensor cvt_color(const Tensor& src, const std::string& code) {
  const Conversion& cv = find_conversion(code);
  const Dims s = image_dims(src, "cvt_color");
  if (s.c != cv.in_c) {
    const std::string want =
        cv.in_c == 1 ? "(H, W) or (H, W, 1)" : "(H, W, " + std::to_string(cv.in_c) + ")";
    throw Error("cvt_color: " + code + " needs an " + want + " image, got shape " +
                shape_str(src.shape));
  }
  // Gray comes out (H, W), as from cv2.
  const Shape shape = cv.out_c == 1 ? Shape{s.h, s.w} : Shape{s.h, s.w, cv.out_c};
  Tensor dst = Tensor::empty(src.dtype, shape);
  py::gil_scoped_release nogil;
  auto run = [&](auto* S, auto* D) {
    for_rows(s.h, s.w * std::max(cv.in_c, cv.out_c), [&](int64_t y0, int64_t y1) {
      convert_pixels(S + y0 * s.w * cv.in_c, D + y0 * s.w * cv.out_c, (y1 - y0) * s.w, cv);
    });
  };
  if (src.dtype == DType::u8) run(src.ptr<uint8_t>(), dst.ptr<uint8_t>());
  else run(src.ptr<float>(), dst.ptr<float>());
  return dst;
}

// ---- normalise / to_tensor --------------------------------------------------------

// y[k] = (x[src_k] / scale - mean[k]) / std[k], as one multiply-add per element with
// a = 1 / (scale * std) and b = -mean / std folded in double (within 1 ulp or so of the
// literal formula). Output channel k reads input channel 2 - k (k < 3) when swapping R and
// B, so mean and std are in the output's channel order. `planar` writes CHW, not HWC.
template <class T>
void normalize_rows(const T* S, float* D, Dims s, int64_t y0, int64_t y1, const float* a,
                    const float* b, bool swap, bool planar) {
  const int64_t c = s.c, plane = s.h * s.w;
  for (int64_t k = 0; k < c; ++k) {
    const int64_t sk = swap && k < 3 ? 2 - k : k;
    const float ak = a[k], bk = b[k];
    for (int64_t y = y0; y < y1; ++y) {
      const T* row = S + y * s.w * c + sk;
      if (planar) {
        float* out = D + k * plane + y * s.w;
        for (int64_t x = 0; x < s.w; ++x) out[x] = float(row[x * c]) * ak + bk;
      } else {
        float* out = D + y * s.w * c + k;
        for (int64_t x = 0; x < s.w; ++x) out[x * c] = float(row[x * c]) * ak + bk;
      }
    }
  }
}

Tensor normalize(const Tensor& src, double scale, const std::vector<double>& mean,
                 const std::vector<double>& stdev, bool swap_rb, const std::string& layout) {
  const std::string op = layout == "hwc" ? "normalize" : "to_tensor";
  const Dims s = image_dims(src, op);
  if (layout != "hwc" && layout != "chw" && layout != "nchw")
    throw Error(op + ": unknown layout '" + layout + "': use hwc, chw or nchw");
  if (int64_t(mean.size()) != s.c || int64_t(stdev.size()) != s.c)
    throw Error(op + ": mean and std need one value per channel (" + std::to_string(s.c) +
                "), got " + std::to_string(mean.size()) + " and " + std::to_string(stdev.size()));
  if (scale == 0 || !std::isfinite(scale)) throw Error(op + ": scale must be finite and non-zero");
  for (double v : stdev)
    if (v == 0 || !std::isfinite(v)) throw Error(op + ": std values must be finite and non-zero");
  if (swap_rb && s.c < 3)
    throw Error(op + ": swap_rb needs at least 3 channels, got " + std::to_string(s.c));
  std::vector<float> a(s.c), b(s.c);
  for (int64_t k = 0; k < s.c; ++k) {
    a[k] = float(1.0 / (scale * stdev[k]));
    b[k] = float(-mean[k] / stdev[k]);
  }
  Shape shape = layout == "hwc"   ? src.shape
                : layout == "chw" ? Shape{s.c, s.h, s.w}
                                  : Shape{1, s.c, s.h, s.w};
  Tensor dst = Tensor::empty(DType::f32, shape);
  const bool planar = layout != "hwc";
  py::gil_scoped_release nogil;
  auto run = [&](auto* S) {
    for_rows(s.h, s.w * s.c, [&](int64_t y0, int64_t y1) {
      normalize_rows(S, dst.ptr<float>(), s, y0, y1, a.data(), b.data(), swap_rb, planar);
    });
  };
  if (src.dtype == DType::u8) run(src.ptr<uint8_t>());
  else run(src.ptr<float>());
  return dst;
}

}  // namespace

void bind_cv(py::module_& m) {
  // Private entry points of walle_engine.cv (cv.py converts inputs and documents them).
  m.def("cv_resize", &resize, py::arg("img"), py::arg("width"), py::arg("height"),
        py::arg("interpolation"));
  m.def("cv_cvt_color", &cvt_color, py::arg("img"), py::arg("code"));
  m.def("cv_normalize", &normalize, py::arg("img"), py::arg("scale"), py::arg("mean"),
        py::arg("std"), py::arg("swap_rb"), py::arg("layout"));
}
