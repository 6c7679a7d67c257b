// Dispatch and threading for the fused row kernels (rows.h), and their oracles: each
// written the obvious way in double precision with libm, the way reference.cpp writes the
// atomic ops, so a fused kernel is held to the same answer as the unfused decomposition.
#include "kernels/rows.h"

#include <algorithm>
#include <cmath>

#include "threadpool.h"

namespace walle {

const RowKernels& row_kernels_for(Isa isa) {
  switch (isa) {
    case Isa::avx512: return avx512::row_kernels();
    case Isa::avx2: return avx2::row_kernels();
    case Isa::scalar: break;
  }
  return scalar::row_kernels();
}

namespace fast {
namespace {

// Runs fn(first_row, row_count) over all rows, in chunks over the pool when the work is
// worth a fork-join (~64 K elements, as for the elementwise kernels).
template <class F>
void split_rows(int64_t rows, int64_t n, F fn) {
  const int T = num_threads();
  if (T <= 1 || rows < 2 || rows * n < (1 << 16)) {
    fn(int64_t(0), rows);
    return;
  }
  const int64_t chunks = std::min<int64_t>(rows, 4 * T);
  const int64_t per = (rows + chunks - 1) / chunks;
  parallel_for((rows + per - 1) / per, [&](int64_t c) {
    const int64_t r0 = c * per;
    fn(r0, std::min(rows, r0 + per) - r0);
  });
}

}  // namespace

void softmax_rows(const RowKernels& rk, const float* x, float* y, int64_t rows, int64_t n,
                  float scale, bool log) {
  split_rows(rows, n, [&](int64_t r0, int64_t nr) {
    rk.f32_softmax(x + r0 * n, y + r0 * n, nr, n, scale, log ? 1 : 0);
  });
}

void layernorm_rows(const RowKernels& rk, const float* x, float* y, int64_t rows, int64_t n,
                    float eps, const float* gamma, const float* beta) {
  split_rows(rows, n, [&](int64_t r0, int64_t nr) {
    rk.f32_layernorm(x + r0 * n, y + r0 * n, nr, n, eps, gamma, beta);
  });
}

void gelu(const RowKernels& rk, const float* x, float* y, int64_t n) {
  constexpr int64_t kBlock = 4096;  // one task per block of elements
  split_rows((n + kBlock - 1) / kBlock, kBlock, [&](int64_t b0, int64_t nb) {
    const int64_t s = b0 * kBlock, e = std::min(n, (b0 + nb) * kBlock);
    rk.f32_gelu(x + s, y + s, e - s);
  });
}

}  // namespace fast

namespace ref {

void softmax_rows(const float* x, float* y, int64_t rows, int64_t n, float scale, bool log) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double m = -INFINITY;
    bool nan = false;
    for (int64_t i = 0; i < n; ++i) {
      nan = nan || xr[i] != xr[i];
      m = std::max(m, double(xr[i]));
    }
    if (nan) m = NAN;
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp((double(xr[i]) - m) * scale);
    for (int64_t i = 0; i < n; ++i) {
      const double d = (double(xr[i]) - m) * scale;
      yr[i] = float(log ? d - std::log(s) : std::exp(d) / s);
    }
  }
}

void layernorm_rows(const float* x, float* y, int64_t rows, int64_t n, float eps,
                    const float* gamma, const float* beta) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += xr[i];
    mean /= double(n);
    for (int64_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const double rstd = 1.0 / std::sqrt(var / double(n) + eps);
    for (int64_t i = 0; i < n; ++i) {
      const double v = (xr[i] - mean) * rstd * (gamma ? gamma[i] : 1.0) + (beta ? beta[i] : 0.0);
      y[r * n + i] = float(v);
    }
  }
}

void gelu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = float(0.5 * v * std::erfc(-v * 0.70710678118654752440));
  }
}

}  // namespace ref

}  // namespace walle
