// The blocked channel layout NCHWc: a [N, C, H, W] tensor stored as [N, ceil(C/c), H, W, c]
// with c = the vector width of the kernels (16 on AVX-512, 8 on AVX2) and the channels
// past C zero-filled. Convolutions, pools and elementwise ops between them keep it, so
// consecutive convolutions pass their activations without a single transpose; the graph
// converts with one raster where a value enters or leaves that region (graph.cpp).
#pragma once
#include "atomic.h"

namespace walle {

inline int64_t nchwc_blocks(int64_t c, int cb) { return (c + cb - 1) / cb; }
// Physical shape of a logical [N, C, H, W] value in blocks of cb.
inline Shape nchwc_shape(const Shape& logical, int cb) {
  return {logical[0], nchwc_blocks(logical[1], cb), logical[2], logical[3], cb};
}

// Weights [OC, IC, KH, KW] -> [OCB/ot][ICB][KH][KW][cbi][ot][cb] (zero-padded).
Tensor pack_conv_weights_nchwc(const float* w, int64_t oc, int64_t ic, int64_t kh, int64_t kw,
                               int cb, int cbi, int ocb_tile);
// Depthwise weights [C, 1, KH, KW] -> [CB][KH][KW][cb].
Tensor pack_dwconv_weights_nchwc(const float* w, int64_t c, int64_t kh, int64_t kw, int cb);
// A per-channel vector zero-padded to whole blocks (null bias: zeros).
Tensor pad_channels_nchwc(const float* v, int64_t c, int cb);

// Winograd F(r x r, 3x3) weights (r = tile: 2 or 4): U_k = (G g G^T)_k for the (r + 2)^2
// transform positions k, each packed like 1x1 weights; returns [(r+2)^2][stride] and sets
// *stride.
Tensor pack_winograd_weights_nchwc(const float* w, int64_t oc, int64_t ic, int cb, int ocb_tile,
                                   int64_t* stride, int tile = 2);

// Runs the kernel over a batch of n images, on the thread pool when it pays. `a` holds
// the first image's pointers; images follow each other by x_image / y_image floats.
// split: how threads share one image — 0 by output-block groups, 1 by output rows.
void conv_nchwc(const KernelTable& kt, const ConvNchwcArgs& a, int64_t n, int64_t ocb,
                int64_t x_image, int64_t y_image, bool depthwise, int split);
// Winograd F(r x r, 3x3) over a batch (r = a.tile: 2 or 4): per chunk of tiles (sized so
// the transformed tiles stay in L2), the input transform, (r + 2)^2 NCHWc 1x1 GEMMs (one
// per transform position) and the output transform with the epilogue. `a` holds geometry
// and the first image's x, y, bias, res; u the packed weights.
void winograd_nchwc(const KernelTable& kt, const WinogradNchwcArgs& a, const float* u,
                    int64_t u_stride, int ocb_tile, int64_t n, int64_t x_image, int64_t y_image);
void pool_nchwc(const KernelTable& kt, const PoolNchwcArgs& a, int64_t n, int64_t cblocks);

// Rasters converting [N, C, H*W] <-> [N, CB, H*W, cb] (channels past C filled with zeros).
RasterSpec to_nchwc_spec(int64_t n, int64_t c, int64_t hw, int cb);
RasterSpec from_nchwc_spec(int64_t n, int64_t c, int64_t hw, int cb);

namespace ref {
// The scalar oracle for every convolution kernel: plain NCHW, groups, double accumulation,
// y = clamp(conv(x, w) + bias + residual, lo, hi). bias and residual may be empty views.
void conv2d(const View& x, const View& w, const View& bias, const View& residual, int64_t sh,
            int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t group, float lo,
            float hi, const View& y);
}  // namespace ref

}  // namespace walle
