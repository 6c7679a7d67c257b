// Raster: the one data-movement op. Transpose, slice, concat, split, pad, tile, im2col
// and gather-by-index all become lists of strided regions copied by this file.
#include <algorithm>
#include <cstring>

#include "atomic.h"
#include "threadpool.h"

namespace walle {
namespace {

// Drop size-1 dims and merge dims that are contiguous in both source and destination,
// so a transpose of a [1, 64, 56, 56] tensor becomes a 2-D copy with a unit inner dim.
Region simplify(const Region& r) {
  Region s = r;
  s.ndim = 0;
  for (int d = 0; d < r.ndim; ++d) {
    if (r.size[d] == 1) continue;
    if (s.ndim > 0) {
      const int p = s.ndim - 1;
      int64_t ss, ds, n;  // products of untrusted values: merge only when none overflows
      if (!__builtin_mul_overflow(r.src_stride[d], r.size[d], &ss) &&
          !__builtin_mul_overflow(r.dst_stride[d], r.size[d], &ds) &&
          !__builtin_mul_overflow(s.size[p], r.size[d], &n) && s.src_stride[p] == ss &&
          s.dst_stride[p] == ds) {
        s.size[p] = n;
        s.src_stride[p] = r.src_stride[d];
        s.dst_stride[p] = r.dst_stride[d];
        continue;
      }
    }
    s.size[s.ndim] = r.size[d];
    s.src_stride[s.ndim] = r.src_stride[d];
    s.dst_stride[s.ndim] = r.dst_stride[d];
    ++s.ndim;
  }
  if (s.ndim == 0) {
    s.ndim = 1;
    s.size[0] = 1;
    s.src_stride[0] = s.dst_stride[0] = 1;
  }
  return s;
}

template <class T>
void copy_region(const Region& r, const T* src, T* dst, int64_t outer_begin, int64_t outer_end) {
  // All dims but the last form an odometer (decoded once, then incremented: im2col rows
  // are short, so a divide per row would cost as much as the copy); the last dim is the
  // inner loop.
  const int nd = r.ndim;
  const int64_t n = r.size[nd - 1], ss = r.src_stride[nd - 1], ds = r.dst_stride[nd - 1];
  int64_t idx[kMaxRasterDims] = {};
  int64_t so = r.src_offset, d = r.dst_offset;
  {
    int64_t rem = outer_begin;
    for (int k = nd - 2; k >= 0; --k) {
      idx[k] = rem % r.size[k];
      rem /= r.size[k];
      so += idx[k] * r.src_stride[k];
      d += idx[k] * r.dst_stride[k];
    }
  }
  for (int64_t o = outer_begin; o < outer_end; ++o) {
    const T* __restrict s = src + so;
    T* __restrict t = dst + d;
    if (ss == 1 && ds == 1) {
      std::memcpy(t, s, sizeof(T) * n);
    } else if (ds == 1) {
      for (int64_t i = 0; i < n; ++i) t[i] = s[i * ss];
    } else {
      for (int64_t i = 0; i < n; ++i) t[i * ds] = s[i * ss];
    }
    for (int k = nd - 2; k >= 0; --k) {
      so += r.src_stride[k];
      d += r.dst_stride[k];
      if (++idx[k] < r.size[k]) break;
      so -= r.size[k] * r.src_stride[k];
      d -= r.size[k] * r.dst_stride[k];
      idx[k] = 0;
    }
  }
}

template <class T>
void raster_typed(const RasterSpec& spec, const std::vector<View>& inputs, const View& y, T fill) {
  T* dst = y.ptr<T>();
  if (spec.has_fill) std::fill(dst, dst + y.numel(), fill);
  std::vector<Region> rs;
  rs.reserve(spec.regions.size());
  int64_t total = 0;
  for (const auto& r : spec.regions) {
    if (r.count() == 0) continue;
    rs.push_back(simplify(r));
    total += r.count();
  }
  // Work unit: (region, outer index range). Only split when the copy is big enough.
  const int T_ = num_threads();
  if (T_ > 1 && total >= (1 << 15)) {
    struct Unit { int64_t r, b, e; };
    std::vector<Unit> units;
    for (size_t i = 0; i < rs.size(); ++i) {
      const int64_t len = rs[i].size[rs[i].ndim - 1];
      const int64_t outer = rs[i].count() / len;
      const int64_t per = std::max<int64_t>(1, 8192 / len);  // ~32 KiB of f32 per unit
      for (int64_t b = 0; b < outer; b += per) units.push_back({int64_t(i), b, std::min(outer, b + per)});
    }
    parallel_for(int64_t(units.size()), [&](int64_t u) {
      const auto& w = units[u];
      copy_region<T>(rs[w.r], static_cast<const T*>(inputs[rs[w.r].input].data), dst, w.b, w.e);
    });
    return;
  }
  for (const auto& r : rs) {
    const int64_t outer = r.count() / r.size[r.ndim - 1];
    copy_region<T>(r, static_cast<const T*>(inputs[r.input].data), dst, 0, outer);
  }
}

}  // namespace

void check_raster(const RasterSpec& spec, const std::vector<int64_t>& input_numels,
                  int64_t out_numel) {
  int64_t total = 0;
  for (const Region& r : spec.regions) {
    if (r.input < 0 || size_t(r.input) >= input_numels.size())
      throw Error("raster region reads input " + std::to_string(r.input) + " of " +
                  std::to_string(input_numels.size()));
    if (r.ndim < 0 || r.ndim > kMaxRasterDims)
      throw Error("raster region needs 0 to " + std::to_string(kMaxRasterDims) + " dimensions");
    bool empty = false;
    for (int d = 0; d < r.ndim; ++d) {
      if (r.size[d] < 0) throw Error("raster region has a negative size");
      if (r.size[d] == 0) empty = true;
    }
    if (empty) continue;
    const int64_t count = r.count();  // saturates
    if (count > out_numel)
      throw Error("raster region writes " + (count == INT64_MAX ? std::string("over 2**63") : std::to_string(count)) +
                  " elements into an output of " + std::to_string(out_numel));
    total += count;  // <= regions * 2**40: no overflow below 2**23 regions
    if (total > 4 * out_numel + 4096)
      throw Error("raster regions write " + std::to_string(total) + " elements into an output of " +
                  std::to_string(out_numel) + " (more than 4x over)");
    auto span = [&](int64_t off, const int64_t* st, int64_t n, const char* what) {
      int64_t lo = off, hi = off;
      for (int d = 0; d < r.ndim; ++d) {
        const int64_t ext = checked_mul(r.size[d] - 1, st[d], "raster region extent");
        int64_t& end = ext > 0 ? hi : lo;
        end = checked_add(end, ext, "raster region extent");
      }
      if (lo < 0 || hi >= n)
        throw Error(std::string("raster region ") + what + " out of bounds: offsets " +
                    std::to_string(lo) + ".." + std::to_string(hi) + " of a tensor of " +
                    std::to_string(n) + " elements");
    };
    span(r.src_offset, r.src_stride, input_numels[r.input], "reads");
    span(r.dst_offset, r.dst_stride, out_numel, "writes");
  }
}

namespace fast {
void raster(const RasterSpec& spec, const std::vector<View>& inputs, const View& y) {
  // Data movement by element size; only the fill value depends on the dtype.
  const double f = spec.fill;
  switch (y.dtype) {
    case DType::f32: return raster_typed<float>(spec, inputs, y, float(f));
    case DType::i32: return raster_typed<int32_t>(spec, inputs, y, int_from_float<int32_t>(f));
    case DType::i64: return raster_typed<int64_t>(spec, inputs, y, int_from_float<int64_t>(f));
    case DType::b8: return raster_typed<uint8_t>(spec, inputs, y, uint8_t(f != 0));
    case DType::u8: return raster_typed<uint8_t>(spec, inputs, y, u8_from_float(f));
  }
}
}  // namespace fast

// Composition. `inner` writes tensor V (shape inner_out_shape) and must consist of
// exactly one region that covers V densely in row-major order with no fill, so V's
// linear index l decomposes into inner's index (j_0..j_m) by mixed radix. An outer
// region dimension k with stride s_k then moves exactly one inner index j_d by c_k when
// s_k = c_k * dst_stride[d] and the walk stays inside dim d; in that case the outer
// region can read inner's source directly with stride c_k * src_stride[d].
bool compose_raster(const RasterSpec& inner, const Shape& inner_out_shape,
                    const RasterSpec& outer, RasterSpec* merged) {
  if (inner.has_fill || inner.regions.size() != 1) return false;
  // Untrusted regions (the binding passes them from Python): anything odd does not compose.
  // Zero-size dims would make the mixed-radix decomposition below divide by zero.
  auto sane = [](const Region& r) {
    if (r.ndim < 0 || r.ndim > kMaxRasterDims) return false;
    for (int d = 0; d < r.ndim; ++d)
      if (r.size[d] < 1) return false;
    return r.count() <= kMaxElements;
  };
  if (!sane(inner.regions[0]) || !valid_numel(inner_out_shape)) return false;
  for (const Region& r : outer.regions)
    if (!sane(r)) return false;
  Region in = simplify(inner.regions[0]);
  if (in.count() != numel(inner_out_shape) || in.dst_offset != 0) return false;
  // Dense row-major destination check.
  {
    int64_t stride = 1;
    for (int d = in.ndim - 1; d >= 0; --d) {
      if (in.dst_stride[d] != stride) return false;
      stride *= in.size[d];
    }
  }
  RasterSpec out = outer;
  for (Region& r : out.regions) {
    if (r.input != 0 || r.src_offset < 0) return false;
    // Decompose the starting offset into inner coordinates.
    int64_t coord[kMaxRasterDims] = {};
    int64_t rem = r.src_offset;
    for (int d = in.ndim - 1; d >= 0; --d) {
      coord[d] = rem % in.size[d];
      rem /= in.size[d];
    }
    if (rem != 0) return false;
    Region nr = r;
    nr.input = in.input;
    nr.src_offset = in.src_offset;
    for (int d = 0; d < in.ndim; ++d) {
      int64_t step;
      if (__builtin_mul_overflow(coord[d], in.src_stride[d], &step) ||
          __builtin_add_overflow(nr.src_offset, step, &nr.src_offset))
        return false;
    }
    int64_t reach[kMaxRasterDims] = {};
    for (int d = 0; d < in.ndim; ++d) reach[d] = coord[d];
    for (int k = 0; k < r.ndim; ++k) {
      if (r.size[k] == 1) { nr.src_stride[k] = 0; continue; }
      const int64_t s = r.src_stride[k];
      if (s < 0) return false;
      int found = -1;
      for (int d = 0; d < in.ndim && found < 0; ++d) {
        if (s != 0 && s % in.dst_stride[d] == 0 && s / in.dst_stride[d] < in.size[d]) {
          // Prefer the outermost dim whose stride divides s without spilling over.
          found = d;
        }
      }
      if (s == 0) { nr.src_stride[k] = 0; continue; }
      if (found < 0) return false;
      const int64_t c = s / in.dst_stride[found];  // 1 <= c < in.size[found]
      if (r.size[k] - 1 >= (in.size[found] - reach[found] + c - 1) / c) return false;
      reach[found] += c * (r.size[k] - 1);
      if (reach[found] >= in.size[found]) return false;
      if (__builtin_mul_overflow(c, in.src_stride[found], &nr.src_stride[k])) return false;
    }
    r = nr;
  }
  *merged = out;
  return true;
}

}  // namespace walle
