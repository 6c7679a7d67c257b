// Helpers shared by the op decompositions: optional inputs, and raster region builders for
// the standard layout transforms.
#pragma once
#include <numeric>

#include "graph.h"

namespace walle::ops {

inline int opt(const std::vector<int>& in, size_t i) { return i < in.size() ? in[i] : -1; }

inline int64_t norm_axis(int64_t a, int64_t rank) {
  const int64_t n = a < 0 ? a + rank : a;
  if (n < 0 || n >= std::max<int64_t>(rank, 1))
    throw Error("axis " + std::to_string(a) + " out of range for rank " + std::to_string(rank));
  return n;
}

// A region copying a whole tensor of `shape` read with arbitrary source strides into a
// dense destination (transpose and broadcast-expand are this with permuted/zero strides).
inline Region dense_region(const Shape& out_shape, const Shape& src_strides, int64_t src_offset,
                           int64_t dst_offset, int input = 0) {
  if (out_shape.size() > size_t(kMaxRasterDims))
    throw Error("raster supports at most " + std::to_string(kMaxRasterDims) + " dimensions");
  Region r;
  r.input = input;
  r.ndim = int(out_shape.size());
  r.src_offset = src_offset;
  r.dst_offset = dst_offset;
  const Shape ds = contiguous_strides(out_shape);
  for (int d = 0; d < r.ndim; ++d) {
    r.size[d] = out_shape[d];
    r.src_stride[d] = src_strides[d];
    r.dst_stride[d] = ds[d];
  }
  if (r.ndim == 0) {
    r.ndim = 1;
    r.size[0] = 1;
    r.src_stride[0] = r.dst_stride[0] = 1;
  }
  return r;
}

// A region of `size` elements at `src_offset` with `src_strides`, written into a
// destination tensor `dst_shape` at `dst_offset` with its contiguous strides.
inline Region sub_region(const Shape& size, const Shape& src_strides, int64_t src_offset,
                         const Shape& dst_strides, int64_t dst_offset, int input) {
  if (size.size() > size_t(kMaxRasterDims))
    throw Error("raster supports at most " + std::to_string(kMaxRasterDims) + " dimensions");
  Region r;
  r.input = input;
  r.ndim = int(size.size());
  r.src_offset = src_offset;
  r.dst_offset = dst_offset;
  for (int d = 0; d < r.ndim; ++d) {
    r.size[d] = size[d];
    r.src_stride[d] = src_strides[d];
    r.dst_stride[d] = dst_strides[d];
  }
  if (r.ndim == 0) {
    r.ndim = 1;
    r.size[0] = 1;
    r.src_stride[0] = r.dst_stride[0] = 1;
  }
  return r;
}

inline int transpose(Builder& b, int x, const std::vector<int64_t>& perm) {
  const Shape s = b.shape(x);
  // perm must be a permutation of 0..rank-1.
  std::vector<bool> seen(s.size(), false);
  if (perm.size() != s.size()) throw Error("Transpose perm needs one entry per dimension");
  for (auto p : perm) {
    if (p < 0 || p >= int64_t(s.size()) || seen[p])
      throw Error("Transpose perm is not a permutation of the dimensions");
    seen[p] = true;
  }
  const Shape st = contiguous_strides(s);
  Shape out(s.size()), src(s.size());
  for (size_t i = 0; i < perm.size(); ++i) {
    out[i] = s[perm[i]];
    src[i] = st[perm[i]];
  }
  RasterSpec spec;
  spec.regions.push_back(dense_region(out, src, 0, 0));
  return b.raster({x}, spec, b.dtype(x), out);
}

// Broadcast x to `shape` by a zero-stride raster (Expand).
inline int expand(Builder& b, int x, const Shape& out) {
  const Shape s = b.shape(x);
  if (out.size() < s.size()) throw Error("Expand cannot lower the rank of " + shape_str(s));
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] != 1 && s[i] != out[out.size() - s.size() + i])
      throw Error("cannot expand " + shape_str(s) + " to " + shape_str(out));
  const Shape st = contiguous_strides(s);
  Shape src(out.size(), 0);
  for (size_t i = 0; i < s.size(); ++i) {
    const size_t d = out.size() - s.size() + i;
    src[d] = s[i] == 1 ? 0 : st[i];
  }
  RasterSpec spec;
  spec.regions.push_back(dense_region(out, src, 0, 0));
  return b.raster({x}, spec, b.dtype(x), out);
}

// Window attributes of a convolution or pool over `spatial` (1 or 2) dims, validated
// before any arithmetic uses them: one kernel size, stride and dilation per spatial dim
// (all >= 1), two pads per dim (>= 0), each at most 2**31 so that window extents and
// output sizes are exact in int64; auto_pad one of the ONNX values.
inline void check_window_attrs(const NodeDef& nd, size_t spatial) {
  auto check = [&](const char* name, size_t count, int64_t lo) {
    if (!nd.has(name)) return;
    const auto& a = nd.attrs.at(name);
    if (a.kind != Attr::kInts)
      throw Error(nd.op + " attribute " + name + " must be a list of integers");
    if (a.ints.size() != count)
      throw Error(nd.op + " needs " + std::to_string(count) + " " + name + " for " +
                  std::to_string(spatial) + " spatial dims, got " + std::to_string(a.ints.size()));
    for (auto v : a.ints)
      if (v < lo || v > (int64_t(1) << 31))
        throw Error(nd.op + " " + name + " value " + std::to_string(v) + " out of range [" +
                    std::to_string(lo) + ", 2**31]");
  };
  check("kernel_shape", spatial, 1);
  check("strides", spatial, 1);
  check("dilations", spatial, 1);
  check("pads", 2 * spatial, 0);
  const std::string ap = nd.get_string("auto_pad", "NOTSET");
  if (ap != "NOTSET" && ap != "VALID" && ap != "SAME_UPPER" && ap != "SAME_LOWER")
    throw Error(nd.op + " auto_pad '" + ap + "' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER");
}

inline Tensor scalar_f32(float v) {
  Tensor t = Tensor::empty(DType::f32, {});
  t.ptr<float>()[0] = v;
  return t;
}

}  // namespace walle::ops

namespace walle::ops {

// Cost model for one GEMM on a kernel table: FLOPs over the table's FMA peak (two FMA
// pipes at ~3 GHz), scaled by how much of each register tile the shape fills, plus the
// bytes packing moves at ~20 GB/s. It only has to rank candidates; timing decides.
inline double gemm_cost(const KernelTable& kt, int variant, int64_t m, int64_t n, int64_t k,
                        bool b_prepacked) {
  const auto& uk = kt.gemm[variant % kt.gemm_count];
  const bool direct = variant >= kt.gemm_count && !b_prepacked;
  const double peak = double(kt.vector_floats) * 2 * 2 * 3.0e9;
  auto fill = [](int64_t x, int t) { return double(x) / double((x + t - 1) / t * t); };
  // A single-row kernel loads a B vector per FMA: at best half the FMA rate.
  const double reuse = uk.mr >= 4 ? 1.0 : 0.5;
  const double util = std::max(1e-3, fill(m, uk.mr) * fill(n, uk.nr) * reuse);
  // Packing B costs a pass over it; reading it unpacked instead costs one strided pass
  // per 144-row block of A, and more TLB misses (the 1.1).
  const double b_bytes = double(k * n) * 4.0;
  const double b_cost = b_prepacked ? 0.0
                        : direct    ? double((m + 143) / 144) * b_bytes / 20e9
                                    : 2.0 * b_bytes / 20e9;
  const double pack = double(m * k) * 4.0 / 20e9 + b_cost;
  return 2.0 * double(m) * double(n) * double(k) / (peak * util * 0.85) * (direct ? 1.1 : 1.0) + pack;
}

// Every (SIMD level, micro-kernel, B packing) of this CPU as a candidate for `algo`.
// Variants >= gemm_count read B in place (only when B is not a prepacked constant).
template <class F>
void add_gemm_candidates(std::vector<Candidate>& out, const std::string& algo, bool b_const,
                         F cost) {
  for (Isa isa : supported_isas()) {
    const KernelTable& kt = kernels_for(isa);
    for (int v = 0; v < (b_const ? 1 : 2) * kt.gemm_count; ++v)
      out.push_back({Choice{algo, isa, v}, cost(kt, v)});
  }
}

}  // namespace walle::ops
