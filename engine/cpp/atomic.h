// The atomic ops. Composite operators (ops/*.cpp) are decomposed into these and nothing
// else, so only these need fast kernels. Each has two implementations with the same
// signature: walle::fast (SIMD kernels from a KernelTable, threaded) and walle::ref
// (the scalar oracle in kernels/reference.cpp, written for obviousness, not speed).
//
// All functions write into a caller-allocated output view so the graph's memory plan
// decides where results live.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"
#include "tensor.h"

namespace walle {

// A non-owning tensor view (Tensor with no owner is used for that).
using View = Tensor;

inline View view(void* data, DType t, const Shape& s) {
  View v;
  v.data = data;
  v.dtype = t;
  v.shape = s;
  return v;
}

// One strided copy: for every index i in [0, size), dst[dst_offset + i . dst_stride] =
// src_input[src_offset + i . src_stride]. Strides and offsets are in elements.
constexpr int kMaxRasterDims = 6;
struct Region {
  int input = 0;
  int ndim = 0;
  int64_t src_offset = 0, dst_offset = 0;
  int64_t size[kMaxRasterDims] = {};
  int64_t src_stride[kMaxRasterDims] = {};
  int64_t dst_stride[kMaxRasterDims] = {};
  // Element count; saturates at INT64_MAX rather than wrap (check_raster refuses such a
  // region before any copy runs).
  int64_t count() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i)
      if (__builtin_mul_overflow(n, size[i], &n)) return INT64_MAX;
    return n;
  }
};

// Raster output: filled with `fill` first when `has_fill` (pad, im2col), then regions.
struct RasterSpec {
  std::vector<Region> regions;
  bool has_fill = false;
  double fill = 0.0;
};

// float -> uint8 as numpy does it on x86-64 (through int32): truncate toward zero, keep the
// low 8 bits, so 255.9 -> 255, 256.0 -> 0, 300.7 -> 44, -1.5 -> 255; NaN, +-inf and values
// outside the int32 range give 0. Integer -> uint8 keeps the low 8 bits (-1 -> 255).
// Written out because a plain C++ conversion of an out-of-range float is undefined.
inline uint8_t u8_from_float(double v) {
  return (v > -2147483649.0 && v < 2147483648.0) ? uint8_t(int32_t(v)) : 0;
}

// float -> int32 / int64 as numpy does it on x86-64: truncate toward zero; NaN and values
// outside the type's range give its minimum (the CPU's "integer indefinite"). Written out
// because a plain C++ conversion of an out-of-range float is undefined.
template <class T>
inline T int_from_float(double v) {
  const double lim = double(std::numeric_limits<T>::max()) + 1.0;  // 2**31 or 2**63, exact
  return (v >= -lim && v < lim) ? T(v) : std::numeric_limits<T>::min();
}

// A double stored as T with the conversions above (float: the nearest float).
template <class T>
inline T from_double(double v) {
  if constexpr (std::is_same_v<T, float>) return float(v);
  else if constexpr (std::is_same_v<T, uint8_t>) return u8_from_float(v);
  else return int_from_float<T>(v);
}

// uint8 is storage only: ops that compute on values refuse it rather than wrap silently.
[[noreturn]] inline void u8_unsupported(const char* op) {
  throw Error(std::string(op) + " does not support uint8 tensors: cast to int32 or float32 first");
}

Shape broadcast_shapes(const Shape& a, const Shape& b);
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int rank);
Shape reduced_shape(const Shape& s, const std::vector<int64_t>& axes, bool keepdims);

// Options for matmul: op(A) = A^T when trans_a; y = clamp(op(A) op(B) + addend + bias),
// bias per output row ("m") or column ("n"), clamp = a fused Relu/Clip.
struct MatmulEpilogue {
  const float* addend = nullptr;  // same layout as the output (residual connections)
  const float* bias = nullptr;
  char bias_axis = 0;  // 0, 'm' or 'n'
  float lo = -INFINITY, hi = INFINITY;
};

struct PackedMatrix;  // gemm.h

// Broadcast iteration plan: output dims after merging, and each input's element strides
// (0 on broadcast dims). The innermost merged dim is unit-stride or 0 for every input.
struct BroadcastPlan {
  Shape dims;
  std::vector<Shape> strides;
  int64_t rows() const {
    int64_t r = 1;
    for (size_t i = 0; i + 1 < dims.size(); ++i) r *= dims[i];
    return r;
  }
  int64_t inner() const { return dims.empty() ? 1 : dims.back(); }
};

// A batched matmul's shapes worked out once (the graph does it at load): M, N, K and
// each output batch's offsets into a and b.
struct MatmulPlan {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  std::vector<int64_t> oa, ob;
};

namespace fast {
// Pre-planned forms used by the graph runtime, so a run does no shape work per step.
BroadcastPlan plan_broadcast(const Shape& y, const Shape& a, const Shape& b);
void binary_f32(const KernelTable& kt, BinaryOp op, const BroadcastPlan& p, const float* a,
                const float* b, float* y);  // arithmetic ops (not compare/logical)
void unary_f32(const KernelTable& kt, UnaryOp op, const float* x, float* y, int64_t n,
               float alpha, float beta);
MatmulPlan plan_matmul(const Shape& a, bool trans_a, const Shape& b, bool trans_b);
void matmul_f32(const KernelTable& kt, int variant, const MatmulPlan& p, const float* a,
                const float* b, float* y, const MatmulEpilogue& ep,
                const PackedMatrix* packed_a, const PackedMatrix* packed_b);

void unary(const KernelTable& kt, UnaryOp op, const View& x, const View& y, float alpha = 0,
           float beta = 0);
void binary(const KernelTable& kt, BinaryOp op, const View& a, const View& b, const View& y);
void select(const KernelTable& kt, const View& c, const View& a, const View& b, const View& y);
void cast(const View& x, const View& y);
void reduce(const KernelTable& kt, ReduceOp op, const View& x, const std::vector<int64_t>& axes,
            const View& y);
void argmax(const View& x, int64_t axis, bool select_last, const View& y);
// Batched matmul with numpy broadcasting over leading dims; a: [..., M, K] (or [..., K, M]
// when trans_a), b: [..., K, N] (or [..., N, K] when trans_b).
void matmul(const KernelTable& kt, int variant, const View& a, bool trans_a, const View& b,
            bool trans_b, const View& y, const MatmulEpilogue& ep = {},
            const PackedMatrix* packed_a = nullptr, const PackedMatrix* packed_b = nullptr);
void raster(const RasterSpec& spec, const std::vector<View>& inputs, const View& y);
}  // namespace fast

namespace ref {
void unary(UnaryOp op, const View& x, const View& y, float alpha = 0, float beta = 0);
void binary(BinaryOp op, const View& a, const View& b, const View& y);
void select(const View& c, const View& a, const View& b, const View& y);
void cast(const View& x, const View& y);
void reduce(ReduceOp op, const View& x, const std::vector<int64_t>& axes, const View& y);
void argmax(const View& x, int64_t axis, bool select_last, const View& y);
void matmul(const View& a, bool trans_a, const View& b, bool trans_b, const View& y,
            const MatmulEpilogue& ep = {});
void raster(const RasterSpec& spec, const std::vector<View>& inputs, const View& y);
}  // namespace ref

// Validates a raster before it runs: every region names an existing input, has 0 to
// kMaxRasterDims dims of non-negative size, and every offset it can reach (the extremes of
// offset + i . stride, computed with overflow checks) lies inside its source input
// (input_numels[r.input] elements) and inside the output (out_numel elements). A region
// may write at most out_numel elements and all regions together at most 4x the output
// (plus a little): no decomposition overwrites more, and a list that does is a hang.
// Throws Error naming what is wrong.
void check_raster(const RasterSpec& spec, const std::vector<int64_t>& input_numels,
                  int64_t out_numel);

// Raster merging: if `outer` reads only from the output of `inner` (input 0), try to
// rewrite it to read inner's sources directly. Returns false when the regions do not
// compose exactly (then both copies stay).
bool compose_raster(const RasterSpec& inner, const Shape& inner_out_shape,
                    const RasterSpec& outer, RasterSpec* merged);

UnaryOp unary_op_from_name(const std::string& s);
BinaryOp binary_op_from_name(const std::string& s);
ReduceOp reduce_op_from_name(const std::string& s);

}  // namespace walle
