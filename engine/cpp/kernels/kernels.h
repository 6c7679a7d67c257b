// The atomic-op kernel interface. Every SIMD level fills one KernelTable; the graph binds
// each step to a table when it is built, so the search can pick a level per op.
// Nothing here includes C++ library templates: see the ODR note in CMakeLists.txt.
#pragma once
#include <cstdint>

namespace walle {

enum class UnaryOp : int32_t {
  abs, neg, exp, log, sqrt, rsqrt, reciprocal, sigmoid, tanh, erf, relu, floor, ceil,
  round, sin, cos, sign, softplus,
  affine,  // alpha * x + beta: scaling steps of decompositions (HardSigmoid, mean, ...)
  clip,    // min(max(x, alpha), beta)
  count
};

enum class BinaryOp : int32_t {
  add, sub, mul, div, pow, max, min,
  eq, lt, gt, le, ge,  // f32 inputs, bool output
  logical_and, logical_or, logical_xor,  // bool inputs and output
  mod,
  count
};

enum class ReduceOp : int32_t { sum, mean, max, min, prod, count };

inline bool is_compare(BinaryOp op) { return op >= BinaryOp::eq && op <= BinaryOp::ge; }
inline bool is_logical(BinaryOp op) {
  return op >= BinaryOp::logical_and && op <= BinaryOp::logical_xor;
}

// One GEMM micro-kernel: C[MR x NR] (+)= Apacked[k][MR] * B[k][NR], where row p of B
// starts at b + p * ldb: ldb = NR for a packed panel, or the row stride of an unpacked
// row-major B (the "direct" variant, which skips packing when A has few row panels).
struct GemmMicroKernel {
  const char* name;
  int mr, nr;
  void (*run)(int64_t k, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
              int accumulate);
};

// Depthwise 2-D convolution over one image: x[C][H][W] -> y[C][OH][OW].
struct DwConvArgs {
  const float* x; const float* w; const float* bias; float* y;
  int64_t c0, c1;  // channel range for this call (threads split channels)
  int64_t h, w_in, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
  float lo, hi;  // fused activation clamp
  // Caller-provided scratch of dwconv_scratch_floats(args) floats: one zero-padded
  // channel, so every output takes the same branch-free loop.
  float* scratch;
};

inline int64_t dwconv_padded_h(const DwConvArgs& a) {
  const int64_t need = (a.oh - 1) * a.sh + (a.kh - 1) * a.dh + 1;
  return need > a.h + a.ph ? need : a.h + a.ph;
}
inline int64_t dwconv_padded_w(const DwConvArgs& a) {
  const int64_t need = (a.ow - 1) * a.sw + (a.kw - 1) * a.dw + 1;
  return need > a.w_in + a.pw ? need : a.w_in + a.pw;
}
inline int64_t dwconv_scratch_floats(const DwConvArgs& a) {
  return dwconv_padded_h(a) * dwconv_padded_w(a) + 64;
}

// Direct convolution in the blocked channel layout NCHWc (c = the vector width: 16 on
// AVX-512, 8 on AVX2). One image: x is [ICB][H][W][cbi] (cbi = c), or a plain NCHW
// [C][H][W] image when cbi = 1 (first layers with 3 input channels); y and res are
// [OCB][OH][OW][c]. Weights are packed at load as [OCB/ot][ICB][KH][KW][cbi][ot][c], ot =
// the output blocks of one register tile (ocb_tile); depthwise weights as
// [CB][KH][KW][c]. Padding needs no copy: each output row and border column visits only
// the in-image taps. Epilogue: + bias, + res, clamp to [lo, hi].
struct ConvNchwcArgs {
  const float* x; const float* w; const float* bias; const float* res; float* y;
  int64_t icb, cbi;       // input channel blocks; channels per input block
  int64_t x_block;        // floats between input blocks (cbi * h * w_in)
  int64_t h, w_in, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
  float lo, hi;
  int ocb_tile;           // output blocks per register tile: 1, 2 or 4
};

// Max / average pooling in NCHWc over one image's channel blocks [cb0, cb1).
struct PoolNchwcArgs {
  const float* x; float* y;
  int64_t h, w_in, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
  int is_max, count_include_pad;
  int64_t pad_h_end, pad_w_end;  // end pads, for count_include_pad
};

// Winograd F(r x r, 3x3) transforms in NCHWc, r = `tile` (2 or 4; 0 means 2), for the
// tiles [t0, t1) of one image (tile t covers output rows r (t / tw) + [0, r) and columns
// r (t % tw) + [0, r)); P = (r + 2)^2 transform positions:
//   in:  v[P][CB][t1 - t0][c] = B^T d B of each (r+2)x(r+2) input patch d (zero outside)
//   out: y = clamp(A^T m A + bias + res) from m[P][OB][t1 - t0][c]
struct WinogradNchwcArgs {
  const float* x; float* v; const float* m; const float* bias; const float* res; float* y;
  int64_t cblocks, oblocks, h, w_in, oh, ow, ph, pw, tw, t0, t1;
  float lo, hi;
  int tile;
};

struct KernelTable {
  const char* isa;
  int vector_floats;  // floats per SIMD register, used by the cost model
  // Elementwise: sa/sb are 0 (broadcast scalar) or 1 (contiguous).
  void (*f32_unary)(UnaryOp op, const float* x, float* y, int64_t n, float alpha, float beta);
  void (*f32_binary)(BinaryOp op, const float* a, int64_t sa, const float* b, int64_t sb,
                     float* y, int64_t n);
  void (*f32_compare)(BinaryOp op, const float* a, int64_t sa, const float* b, int64_t sb,
                      uint8_t* y, int64_t n);
  void (*f32_select)(const uint8_t* c, int64_t sc, const float* a, int64_t sa, const float* b,
                     int64_t sb, float* y, int64_t n);
  // Reduce x viewed as [outer][r][inner] over r.
  void (*f32_reduce)(ReduceOp op, const float* x, float* y, int64_t outer, int64_t r,
                     int64_t inner);
  // y[i][j] = clamp(y[i][j] + bias_m[i] + bias_n[j], lo, hi); bias pointers may be null.
  void (*f32_bias_clamp)(float* y, int64_t ldy, int64_t m, int64_t n, const float* bias_m,
                         const float* bias_n, float lo, float hi);
  void (*f32_dwconv)(const DwConvArgs& a);
  // Register-tiled kernels, then one for a single row of A (batch-1 MLP layers, GEMV):
  // that one has no B reuse to exploit and instead keeps independent FMA chains over k.
  GemmMicroKernel gemm[3];
  int gemm_count;
  // NCHWc kernels; nchwc_block = 0 (and null pointers) where the level has none.
  int nchwc_block;
  // Output blocks [ob0, ob1) (multiples of ocb_tile) x output rows [oy0, oy1).
  void (*f32_conv_nchwc)(const ConvNchwcArgs& a, int64_t ob0, int64_t ob1, int64_t oy0,
                         int64_t oy1);
  // Depthwise: channel blocks [cb0, cb1) x rows [oy0, oy1); icb = channel blocks.
  void (*f32_dwconv_nchwc)(const ConvNchwcArgs& a, int64_t cb0, int64_t cb1, int64_t oy0,
                           int64_t oy1);
  void (*f32_pool_nchwc)(const PoolNchwcArgs& a, int64_t cb0, int64_t cb1);
  void (*f32_winograd_in_nchwc)(const WinogradNchwcArgs& a);
  void (*f32_winograd_out_nchwc)(const WinogradNchwcArgs& a);
  const char* conv_nchwc_name;  // e.g. f32_conv_nchw16c_avx512
  const char* dwconv_nchwc_name;
};

enum class Isa : int32_t { scalar = 0, avx2 = 1, avx512 = 2 };

const KernelTable& kernels_scalar();
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();

}  // namespace walle
