// Gather(data, indices, axis): out[o, i..., j] = data[o, idx[i...], j] (negative indices
// count from the end).
//
// A raster with one region per index: [outer, inner] rows at the index's offset. With
// constant indices the regions are built at load (and may merge with neighbouring
// rasters); with run-time indices (embedding lookups) they are built per run from the
// index tensor, then the same raster kernel copies.
#include <cstring>

#include "ops/common.h"

namespace walle::ops {
namespace {

std::vector<int> Gather(Builder& b, const std::vector<int>& in) {
  const int data = in[0], idx = in[1];
  const Shape s = b.shape(data);
  if (s.empty()) throw Error("Gather needs data of rank >= 1");
  const int64_t axis = norm_axis(b.node().get_int("axis", 0), s.size());
  const Shape is = b.shape(idx);
  Shape out(s.begin(), s.begin() + axis);
  out.insert(out.end(), is.begin(), is.end());
  out.insert(out.end(), s.begin() + axis + 1, s.end());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t dim = s[axis], n_idx = numel(is);
  auto region = [=](int64_t k, int64_t at) {
    return sub_region({outer, inner}, {dim * inner, 1}, at * inner, {n_idx * inner, 1},
                      k * inner, 0);
  };
  if (b.dtype(idx) != DType::i32 && b.dtype(idx) != DType::i64)
    throw Error("Gather indices must be int32 or int64, not " + std::string(dtype_name(b.dtype(idx))));
  check_shape(out, "Gather output");
  if (b.is_const(idx)) {
    RasterSpec spec;
    int64_t k = 0;
    for (auto v : b.const_ints(idx)) {
      if (v < 0) v += dim;
      if (v < 0 || v >= dim) throw Error("Gather index out of range");
      spec.regions.push_back(region(k++, v));
    }
    return {b.raster({data}, spec, b.dtype(data), out)};
  }
  // Run-time indices are read as int64 or int32 below.
  if (b.dtype(idx) != DType::i32 && b.dtype(idx) != DType::i64)
    throw Error("Gather indices must be int32 or int64, not " + std::string(dtype_name(b.dtype(idx))));
  const int y = b.temp(b.dtype(data), out);
  b.custom("raster:gather", {data, idx}, {y}, [=](const ExecCtx& c) {
    const View iv = c.view(idx);
    RasterSpec spec;
    spec.regions.reserve(n_idx);
    for (int64_t k = 0; k < n_idx; ++k) {
      int64_t v = iv.dtype == DType::i64 ? iv.ptr<int64_t>()[k] : iv.ptr<int32_t>()[k];
      if (v < 0) v += dim;
      if (v < 0 || v >= dim) throw Error("Gather index " + std::to_string(v) + " out of range [0, " + std::to_string(dim) + ")");
      spec.regions.push_back(region(k, v));
    }
    fast::raster(spec, {c.view(data)}, c.view(y));
  });
  return {y};
}

}  // namespace

WALLE_REGISTER_OPS(reg_gather, Gather, "Gather");

}  // namespace walle::ops
