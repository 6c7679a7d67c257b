// Shape and layout operators. Views (Reshape, Flatten, Squeeze, Unsqueeze) cost nothing:
// they alias their input's buffer. Everything that moves data is one raster:
//
//   Transpose  one region, source strides permuted
//   Concat     one region per input, written at its offset along `axis`
//   Split      one raster per output, reading a window along `axis`
//   Slice      one region: start offsets, step-scaled strides (negative for step < 0)
//   Pad        fill with the constant, one region writing the input at the pad offset
//   Expand     one region with zero strides on broadcast dims
//   Tile       one region per tile
// Shape, Size, ConstantOfShape, Range and Constant produce constants at load: shapes
// are static in this engine.
#include <cmath>
#include <cstring>

#include "ops/common.h"
#include "model_check.h"

namespace walle::ops {
namespace {

std::vector<int> Reshape(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  auto want = b.const_ints(in[1]);
  const bool allowzero = b.node().get_int("allowzero", 0);
  Shape out(want.size());
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == 0 && !allowzero) out[i] = s.at(i);
    else if (want[i] == -1) { infer = int64_t(i); out[i] = 1; continue; }
    else out[i] = want[i];
    known *= out[i];
  }
  if (infer >= 0) out[infer] = known ? numel(s) / known : 0;
  return {b.alias(in[0], out)};
}

std::vector<int> Flatten(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  const int64_t axis = b.node().get_int("axis", 1);
  const int64_t a = axis < 0 ? axis + int64_t(s.size()) : axis;
  int64_t outer = 1;
  for (int64_t d = 0; d < a; ++d) outer *= s[d];
  return {b.alias(in[0], {outer, outer ? numel(s) / outer : 0})};
}

std::vector<int64_t> axes_of(Builder& b, const std::vector<int>& in) {
  if (opt(in, 1) >= 0) return b.const_ints(in[1]);
  return b.node().get_ints("axes");
}

std::vector<int> Squeeze(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  auto axes = axes_of(b, in);
  Shape out;
  if (axes.empty()) {
    for (auto d : s) if (d != 1) out.push_back(d);
  } else {
    auto ax = normalize_axes(axes, int(s.size()));
    for (size_t d = 0; d < s.size(); ++d)
      if (std::find(ax.begin(), ax.end(), int64_t(d)) == ax.end()) out.push_back(s[d]);
  }
  return {b.alias(in[0], out)};
}

std::vector<int> Unsqueeze(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  auto axes = axes_of(b, in);
  const int r = int(s.size() + axes.size());
  auto ax = normalize_axes(axes, r);
  Shape out;
  size_t k = 0;
  for (int d = 0; d < r; ++d) {
    if (std::find(ax.begin(), ax.end(), int64_t(d)) != ax.end()) out.push_back(1);
    else out.push_back(s[k++]);
  }
  return {b.alias(in[0], out)};
}

std::vector<int> Transpose(Builder& b, const std::vector<int>& in) {
  const int64_t r = b.shape(in[0]).size();
  auto perm = b.node().get_ints("perm");
  if (perm.empty())
    for (int64_t d = r - 1; d >= 0; --d) perm.push_back(d);
  if (int64_t(perm.size()) != r)
    throw Error("Transpose perm has " + std::to_string(perm.size()) + " entries for rank " +
                std::to_string(r));
  std::vector<bool> seen(size_t(r), false);
  for (auto& p : perm) {
    p = norm_axis(p, r);
    if (seen[size_t(p)]) throw Error("Transpose perm is not a permutation");
    seen[size_t(p)] = true;
  }
  return {transpose(b, in[0], perm)};
}

std::vector<int> Concat(Builder& b, const std::vector<int>& in) {
  std::vector<int> xs;
  for (int i : in) if (i >= 0) xs.push_back(i);
  const Shape s0 = b.shape(xs[0]);
  const int64_t axis = norm_axis(b.node().get_int("axis", 0), s0.size());
  Shape out = s0;
  out[axis] = 0;
  for (int x : xs) out[axis] += b.shape(x)[axis];
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out[d];
  for (size_t d = axis + 1; d < out.size(); ++d) inner *= out[d];
  RasterSpec spec;
  int64_t at = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const int64_t len = b.shape(xs[i])[axis] * inner;
    spec.regions.push_back(sub_region({outer, len}, {len, 1}, 0, {out[axis] * inner, 1}, at, int(i)));
    at += len;
  }
  DType t = b.dtype(xs[0]);
  return {b.raster(xs, spec, t, out)};
}

std::vector<int> Split(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const Shape s = b.shape(in[0]);
  const int64_t axis = norm_axis(nd.get_int("axis", 0), s.size());
  std::vector<int64_t> parts = nd.get_ints("split");
  if (opt(in, 1) >= 0) parts = b.const_ints(in[1]);
  const int64_t n_out = int64_t(nd.outputs.size());
  if (parts.empty()) {
    const int64_t n = nd.get_int("num_outputs", n_out);
    const int64_t each = (s[axis] + n - 1) / n;
    for (int64_t i = 0, left = s[axis]; i < n; ++i, left -= each) parts.push_back(std::min(each, left));
  }
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
  std::vector<int> outs;
  int64_t at = 0;
  for (auto p : parts) {
    Shape o = s;
    o[axis] = p;
    RasterSpec spec;
    spec.regions.push_back(sub_region({outer, p * inner}, {s[axis] * inner, 1}, at * inner,
                                      {p * inner, 1}, 0, 0));
    outs.push_back(b.raster({in[0]}, spec, b.dtype(in[0]), o));
    at += p;
  }
  return outs;
}

std::vector<int> Slice(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  const int64_t r = s.size();
  std::vector<int64_t> starts, ends, axes, steps;
  if (opt(in, 1) >= 0) {
    starts = b.const_ints(in[1]);
    ends = b.const_ints(in[2]);
    if (opt(in, 3) >= 0) axes = b.const_ints(in[3]);
    if (opt(in, 4) >= 0) steps = b.const_ints(in[4]);
  } else {  // opset < 10: attributes
    starts = b.node().get_ints("starts");
    ends = b.node().get_ints("ends");
    axes = b.node().get_ints("axes");
  }
  if (axes.empty()) for (size_t i = 0; i < starts.size(); ++i) axes.push_back(int64_t(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    throw Error("Slice starts, ends, axes and steps must have equal lengths");
  Shape out = s, src_stride = contiguous_strides(s), st = contiguous_strides(s);
  int64_t offset = 0;
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t a = norm_axis(axes[i], r), dim = s[a], step = steps[i];
    if (step == 0) throw Error("Slice step must not be 0");
    int64_t lo = starts[i], hi = ends[i];
    if (lo < 0) lo += dim;
    if (hi < 0) hi += dim;
    int64_t len;
    if (step > 0) {
      lo = std::clamp<int64_t>(lo, 0, dim);
      hi = std::clamp<int64_t>(hi, 0, dim);
      len = hi > lo ? (hi - lo + step - 1) / step : 0;
    } else {
      lo = std::clamp<int64_t>(lo, -1, dim - 1);
      hi = std::clamp<int64_t>(hi, -1, dim - 1);
      len = lo > hi ? (lo - hi - step - 1) / -step : 0;
    }
    out[a] = len;
    offset += lo * st[a];
    src_stride[a] = st[a] * step;
  }
  RasterSpec spec;
  if (numel(out) > 0) spec.regions.push_back(dense_region(out, src_stride, offset, 0));
  return {b.raster({in[0]}, spec, b.dtype(in[0]), out)};
}

// Edge / reflect padding: one raster per padded dim with three regions — the input
// at the pad offset, and the two borders read with stride 0 (edge: repeat the first or
// last slice) or stride -1 (reflect: mirror, excluding the border slice itself).
int pad_border(Builder& b, int x, const std::vector<int64_t>& full, bool reflect) {
  const int orig = x;
  const int64_t r = b.shape(x).size();
  for (int64_t d = 0; d < r; ++d) {
    const int64_t lo = full[d], hi = full[d + r];
    if (lo == 0 && hi == 0) continue;
    if (lo < 0 || hi < 0) throw Error("negative pads need mode=constant");
    const Shape s = b.shape(x);
    if (reflect && (lo >= s[d] || hi >= s[d])) throw Error("reflect pad larger than the input");
    Shape out = s;
    out[d] = s[d] + lo + hi;
    const Shape ss = contiguous_strides(s), os = contiguous_strides(out);
    RasterSpec spec;
    spec.regions.push_back(sub_region(s, ss, 0, os, lo * os[d], 0));
    if (lo > 0) {
      Shape size = s, st = ss;
      size[d] = lo;
      st[d] = reflect ? -ss[d] : 0;
      spec.regions.push_back(sub_region(size, st, (reflect ? lo : 0) * ss[d], os, 0, 0));
    }
    if (hi > 0) {
      Shape size = s, st = ss;
      size[d] = hi;
      st[d] = reflect ? -ss[d] : 0;
      spec.regions.push_back(sub_region(size, st, (reflect ? s[d] - 2 : s[d] - 1) * ss[d], os,
                                        (lo + s[d]) * os[d], 0));
    }
    x = b.raster({x}, spec, b.dtype(x), out);
  }
  return x == orig ? b.alias(x, b.shape(x)) : x;
}

std::vector<int> Pad(Builder& b, const std::vector<int>& in) {
  const auto& nd = b.node();
  const Shape s = b.shape(in[0]);
  const int64_t r = s.size();
  const std::string mode = nd.get_string("mode", "constant");
  if (mode != "constant" && mode != "edge" && mode != "reflect")
    throw Error("Pad mode '" + mode + "' is not supported (constant, edge, reflect)");
  std::vector<int64_t> pads = opt(in, 1) >= 0 ? b.const_ints(in[1]) : nd.get_ints("pads");
  double value = nd.get_float("value", 0.0);
  if (opt(in, 2) >= 0 && b.shape(in[2]).size() <= 1 && numel(b.shape(in[2])) == 1)
    value = b.const_scalar(in[2]);
  std::vector<int64_t> full(2 * r, 0);
  if (opt(in, 3) >= 0) {
    auto axes = b.const_ints(in[3]);
    for (size_t i = 0; i < axes.size(); ++i) {
      const int64_t a = norm_axis(axes[i], r);
      full[a] = pads[i];
      full[a + r] = pads[i + axes.size()];
    }
  } else {
    full = pads;
  }
  if (mode != "constant") return {pad_border(b, in[0], full, mode == "reflect")};
  Shape out(r), size(r), src_off_idx(r, 0), dst_idx(r, 0);
  for (int64_t d = 0; d < r; ++d) {
    out[d] = s[d] + full[d] + full[d + r];
    // Negative pads crop.
    const int64_t lo = full[d], crop_lo = lo < 0 ? -lo : 0, crop_hi = full[d + r] < 0 ? -full[d + r] : 0;
    size[d] = std::max<int64_t>(0, s[d] - crop_lo - crop_hi);
    src_off_idx[d] = crop_lo;
    dst_idx[d] = lo > 0 ? lo : 0;
  }
  const Shape ss = contiguous_strides(s), os = contiguous_strides(out);
  int64_t so = 0, dof = 0;
  for (int64_t d = 0; d < r; ++d) { so += src_off_idx[d] * ss[d]; dof += dst_idx[d] * os[d]; }
  RasterSpec spec;
  spec.has_fill = true;
  spec.fill = value;
  if (numel(size) > 0) spec.regions.push_back(sub_region(size, ss, so, os, dof, 0));
  return {b.raster({in[0]}, spec, b.dtype(in[0]), out)};
}

std::vector<int> Expand(Builder& b, const std::vector<int>& in) {
  auto want = b.const_ints(in[1]);
  const Shape out = broadcast_shapes(b.shape(in[0]), Shape(want.begin(), want.end()));
  return {expand(b, in[0], out)};
}

std::vector<int> Tile(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  auto reps = b.const_ints(in[1]);
  const int64_t r = s.size();
  if (int64_t(reps.size()) != r)
    throw Error("Tile repeats has " + std::to_string(reps.size()) + " entries for rank " +
                std::to_string(r));
  Shape out(r);
  int64_t copies = 1;  // one raster region per copy
  for (int64_t d = 0; d < r; ++d) {
    if (reps[d] < 0) throw Error("Tile repeats must be >= 0");
    if (__builtin_mul_overflow(s[d], reps[d], &out[d]) ||
        __builtin_mul_overflow(copies, reps[d], &copies) || copies > (int64_t(1) << 20))
      throw ModelTooLarge("Tile of " + shape_str(s) + " makes too many copies");
  }
  checked_value_bytes(b.dtype(in[0]), out, "Tile output");
  const Shape ss = contiguous_strides(s), os = contiguous_strides(out);
  RasterSpec spec;
  std::vector<int64_t> t(r, 0);
  if (numel(out) > 0) {
    do {
      int64_t dof = 0;
      for (int64_t d = 0; d < r; ++d) dof += t[d] * s[d] * os[d];
      spec.regions.push_back(sub_region(s, ss, 0, os, dof, 0));
      int64_t d = r - 1;
      for (; d >= 0; --d) {
        if (++t[d] < reps[d]) break;
        t[d] = 0;
      }
      if (d < 0) break;
    } while (true);
  }
  return {b.raster({in[0]}, spec, b.dtype(in[0]), out)};
}

Tensor i64_tensor(const std::vector<int64_t>& v, const Shape& shape) {
  Tensor t = Tensor::empty(DType::i64, shape);
  for (size_t i = 0; i < v.size(); ++i) t.ptr<int64_t>()[i] = v[i];
  return t;
}

std::vector<int> ShapeOp(Builder& b, const std::vector<int>& in) {
  const Shape s = b.shape(in[0]);
  const int64_t r = s.size();
  int64_t start = b.node().get_int("start", 0), end = b.node().get_int("end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, start, r);
  std::vector<int64_t> v(s.begin() + start, s.begin() + end);
  return {b.add_const(i64_tensor(v, {int64_t(v.size())}))};
}

std::vector<int> Size(Builder& b, const std::vector<int>& in) {
  return {b.add_const(i64_tensor({numel(b.shape(in[0]))}, {}))};
}

std::vector<int> ConstantOfShape(Builder& b, const std::vector<int>& in) {
  auto dims = b.const_ints(in[0]);
  const Shape s(dims.begin(), dims.end());
  const auto& nd = b.node();
  Tensor v;
  if (nd.has("value")) v = nd.attrs.at("value").t;
  else v = scalar_f32(0);
  if (v.numel() != 1) throw Error("ConstantOfShape value must hold exactly one element");
  checked_value_bytes(v.dtype, s, "ConstantOfShape output");
  Tensor t = Tensor::empty(v.dtype, s);
  const size_t es = dtype_size(v.dtype);
  for (int64_t i = 0; i < t.numel(); ++i)
    std::memcpy(static_cast<char*>(t.data) + i * es, v.data, es);
  return {b.add_const(t)};
}

std::vector<int> Range(Builder& b, const std::vector<int>& in) {
  const DType t = b.dtype(in[0]);
  const double start = b.const_scalar(in[0]), limit = b.const_scalar(in[1]),
               delta = b.const_scalar(in[2]);
  const double count = std::ceil((limit - start) / delta);
  if (delta == 0 || !std::isfinite(count) || count > double(int64_t(1) << 40))
    throw ModelTooLarge("Range from " + std::to_string(start) + " to " + std::to_string(limit) +
                        " by " + std::to_string(delta) + " has too many elements");
  const int64_t n = std::max<int64_t>(0, int64_t(count));
  checked_value_bytes(t, {n}, "Range output");
  Tensor out = Tensor::empty(t, {n});
  for (int64_t i = 0; i < n; ++i) {
    const double v = start + double(i) * delta;
    switch (t) {
      case DType::f32: out.ptr<float>()[i] = float(v); break;
      case DType::i32: out.ptr<int32_t>()[i] = int32_t(v); break;
      case DType::i64: out.ptr<int64_t>()[i] = int64_t(v); break;
      default: throw Error("Range needs a numeric type");
    }
  }
  return {b.add_const(out)};
}

std::vector<int> Constant(Builder& b, const std::vector<int>&) {
  const auto& nd = b.node();
  if (nd.has("value")) return {b.add_const(nd.attrs.at("value").t)};
  if (nd.has("value_float")) return {b.add_const(scalar_f32(float(nd.get_float("value_float", 0))))};
  if (nd.has("value_int")) return {b.add_const(i64_tensor({nd.get_int("value_int", 0)}, {}))};
  if (nd.has("value_ints")) {
    auto v = nd.get_ints("value_ints");
    return {b.add_const(i64_tensor(v, {int64_t(v.size())}))};
  }
  if (nd.has("value_floats")) {
    const auto& v = nd.attrs.at("value_floats").floats;
    Tensor t = Tensor::empty(DType::f32, {int64_t(v.size())});
    for (size_t i = 0; i < v.size(); ++i) t.ptr<float>()[i] = float(v[i]);
    return {b.add_const(t)};
  }
  throw Error("Constant without a supported value attribute");
}

}  // namespace

WALLE_REGISTER_OPS(reg_reshape, Reshape, "Reshape");
WALLE_REGISTER_OPS(reg_flatten, Flatten, "Flatten");
WALLE_REGISTER_OPS(reg_squeeze, Squeeze, "Squeeze");
WALLE_REGISTER_OPS(reg_unsqueeze, Unsqueeze, "Unsqueeze");
WALLE_REGISTER_OPS(reg_transpose, Transpose, "Transpose");
WALLE_REGISTER_OPS(reg_concat, Concat, "Concat");
WALLE_REGISTER_OPS(reg_split, Split, "Split");
WALLE_REGISTER_OPS(reg_slice, Slice, "Slice");
WALLE_REGISTER_OPS(reg_pad, Pad, "Pad");
WALLE_REGISTER_OPS(reg_expand, Expand, "Expand");
WALLE_REGISTER_OPS(reg_tile, Tile, "Tile");
WALLE_REGISTER_OPS(reg_shape, ShapeOp, "Shape");
WALLE_REGISTER_OPS(reg_size, Size, "Size");
WALLE_REGISTER_OPS(reg_cos, ConstantOfShape, "ConstantOfShape");
WALLE_REGISTER_OPS(reg_range, Range, "Range");
WALLE_REGISTER_OPS(reg_constant, Constant, "Constant");

}  // namespace walle::ops
