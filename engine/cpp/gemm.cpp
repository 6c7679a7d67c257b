#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "threadpool.h"

namespace walle {
namespace {

// Block sizes: a KC x NR panel of B (384 x 32 floats = 48 KiB) streams from L1/L2 while an
// MC x KC block of A (144 x 384 = 216 KiB) stays in L2. MC is a multiple of every MR. KC
// was 256: the encoder's K = 384 layers then took two passes over C and K = 1536 six; at
// 384 they take one and four (MiniLM encoder, one thread: 32.2-32.6 -> 31.0-31.7 ms with
// the AVX-512 kernels, 35.3 -> 33.0 ms with the AVX2 ones, on the same host).
constexpr int64_t kKC = 384;
constexpr int64_t kMC = 144;
constexpr int64_t kNC = 2048;

struct Scratch {
  std::shared_ptr<void> mem;
  size_t cap = 0;
  float* get(size_t floats) {
    if (floats > cap) {
      mem = aligned_alloc_shared(floats * sizeof(float));
      cap = floats;
    }
    return static_cast<float*>(mem.get());
  }
};

// Pack rows [m0, m0+mc) x k-range [k0, k0+kc) of A into [panel][kc][mr], zero-padding rows.
void pack_a_block(const float* a, int64_t rs, int64_t cs, int64_t m_total, int64_t m0,
                  int64_t mc, int64_t k0, int64_t kc, int mr, float* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    const int64_t rows = std::min<int64_t>(mr, m_total - (m0 + i0));
    if (cs == 1 && rows == mr) {
      // Row-major A (activations): read each row contiguously and scatter into the panel,
      // which is L1-sized; reading column-wise would touch mr cache lines per k.
      for (int64_t i = 0; i < mr; ++i) {
        const float* src = a + (m0 + i0 + i) * rs + k0;
        for (int64_t p = 0; p < kc; ++p) out[p * mr + i] = src[p];
      }
      out += kc * mr;
      continue;
    }
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = a + (m0 + i0) * rs + (k0 + p) * cs;
      int64_t i = 0;
      for (; i < rows; ++i) out[i] = src[i * rs];
      for (; i < mr; ++i) out[i] = 0.0f;
      out += mr;
    }
  }
}

// Pack columns [n0, n0+nc) x k-range of B into [panel][kc][nr], zero-padding columns.
void pack_b_block(const float* b, int64_t rs, int64_t cs, int64_t n_total, int64_t n0,
                  int64_t nc, int64_t k0, int64_t kc, int nr, float* out) {
  for (int64_t j0 = 0; j0 < nc; j0 += nr) {
    const int64_t cols = std::min<int64_t>(nr, n_total - (n0 + j0));
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b + (k0 + p) * rs + (n0 + j0) * cs;
      if (cs == 1 && cols == nr) {
        std::memcpy(out, src, sizeof(float) * nr);
      } else {
        int64_t j = 0;
        for (; j < cols; ++j) out[j] = src[j * cs];
        for (; j < nr; ++j) out[j] = 0.0f;
      }
      out += nr;
    }
  }
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// One thread's share: rows [m0, m1) x columns [n0, n1) (multiples of MR / NR at the start).
void gemm_range(const GemmMicroKernel& uk, const KernelTable& kt, const GemmCall& g, bool direct,
                int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int MR = uk.mr, NR = uk.nr;
  thread_local Scratch sa, sb;
  alignas(64) float tile[16 * 64];
  const int64_t K = g.k;
  for (int64_t jc = n0; jc < n1; jc += kNC) {
    const int64_t nc = std::min(kNC, n1 - jc);
    for (int64_t pc = 0; pc < K || pc == 0; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc);
      const bool first = pc == 0, last = pc + kc >= K;
      float* bbuf = nullptr;
      // Direct B: full panels are read in place from the row-major B; only the ragged
      // last panel is packed (zero-padded).
      const int64_t full_cols = direct ? (nc / NR) * NR : 0;
      if (!g.packed_b && full_cols < nc) {
        bbuf = sb.get(size_t(round_up(nc - full_cols, NR) * std::max<int64_t>(kc, 1)));
        pack_b_block(g.b, g.b_rs, g.b_cs, g.n, jc + full_cols, nc - full_cols, pc, kc, NR, bbuf);
      }
      for (int64_t ic = m0; ic < m1; ic += kMC) {
        const int64_t mc = std::min(kMC, m1 - ic);
        float* abuf = nullptr;
        if (!g.packed_a) {
          abuf = sa.get(size_t(round_up(mc, MR) * std::max<int64_t>(kc, 1)));
          pack_a_block(g.a, g.a_rs, g.a_cs, g.m, ic, mc, pc, kc, MR, abuf);
        }
        // One register tile: rows ir.., columns jr.. of this block.
        auto tile_at = [&](int64_t jr, int64_t ir) {
          const float* bp;
          int64_t ldb = NR;
          if (g.packed_b) {
            bp = g.packed_b + ((jc + jr) / NR * K + pc) * NR;
          } else if (jr < full_cols) {
            bp = g.b + pc * g.b_rs + (jc + jr);
            ldb = g.b_rs;
          } else {
            bp = bbuf + ((jr - full_cols) / NR) * kc * NR;
          }
          const int64_t nr = std::min<int64_t>(NR, nc - jr);
          const float* ap = g.packed_a ? g.packed_a + ((ic + ir) / MR * K + pc) * MR
                                       : abuf + (ir / MR) * kc * MR;
          const int64_t mr = std::min<int64_t>(MR, mc - ir);
          float* c = g.c + (ic + ir) * g.ldc + jc + jr;
          if (mr == MR && nr == NR) {
            uk.run(kc, ap, bp, ldb, c, g.ldc, !first);
          } else {
            uk.run(kc, ap, bp, ldb, tile, NR, 0);
            for (int64_t i = 0; i < mr; ++i)
              for (int64_t j = 0; j < nr; ++j)
                c[i * g.ldc + j] = first ? tile[i * NR + j] : c[i * g.ldc + j] + tile[i * NR + j];
          }
          if (last && g.ep.addend) {
            const float* r = g.ep.addend + (ic + ir) * g.ldc + jc + jr;
            for (int64_t i = 0; i < mr; ++i)
              for (int64_t j = 0; j < nr; ++j) c[i * g.ldc + j] += r[i * g.ldc + j];
          }
          if (last && (g.ep.bias_axis || g.ep.lo > -INFINITY || g.ep.hi < INFINITY)) {
            kt.f32_bias_clamp(c, g.ldc, mr, nr,
                              g.ep.bias_axis == 'm' ? g.ep.bias + ic + ir : nullptr,
                              g.ep.bias_axis == 'n' ? g.ep.bias + jc + jr : nullptr, g.ep.lo,
                              g.ep.hi);
          }
        };
        if (nc <= 4 * NR) {
          // Few column panels (late conv layers, N = 7x7 or 14x14): walk each A panel across
          // all of them while it is in L1; prepacked weights then stream from memory once.
          for (int64_t ir = 0; ir < mc; ir += MR)
            for (int64_t jr = 0; jr < nc; jr += NR) tile_at(jr, ir);
        } else {
          for (int64_t jr = 0; jr < nc; jr += NR)
            for (int64_t ir = 0; ir < mc; ir += MR) tile_at(jr, ir);
        }
      }
      if (K == 0) break;
    }
  }
}

}  // namespace

PackedMatrix pack_a(const float* a, int64_t batches, int64_t batch_stride, int64_t m, int64_t k,
                    int64_t rs, int64_t cs, int mr) {
  PackedMatrix p;
  p.k = k;
  p.extent = m;
  p.width = mr;
  p.batches = batches;
  p.batch_stride = round_up(m, mr) * std::max<int64_t>(k, 1);
  p.owner = aligned_alloc_shared(size_t(p.batch_stride * batches) * sizeof(float));
  p.data = static_cast<float*>(p.owner.get());
  for (int64_t b = 0; b < batches; ++b)
    pack_a_block(a + b * batch_stride, rs, cs, m, 0, round_up(m, mr), 0, k, mr,
                 p.data + b * p.batch_stride);
  return p;
}

PackedMatrix pack_b(const float* b, int64_t batches, int64_t batch_stride, int64_t k, int64_t n,
                    int64_t rs, int64_t cs, int nr) {
  PackedMatrix p;
  p.k = k;
  p.extent = n;
  p.width = nr;
  p.batches = batches;
  p.batch_stride = round_up(n, nr) * std::max<int64_t>(k, 1);
  p.owner = aligned_alloc_shared(size_t(p.batch_stride * batches) * sizeof(float));
  p.data = static_cast<float*>(p.owner.get());
  for (int64_t i = 0; i < batches; ++i)
    pack_b_block(b + i * batch_stride, rs, cs, n, 0, round_up(n, nr), 0, k, nr,
                 p.data + i * p.batch_stride);
  return p;
}

void f32_gemm(const KernelTable& kt, int variant, const GemmCall& g, bool allow_threads) {
  if (g.m == 0 || g.n == 0) return;
  // Variants: [0, count) packed B; [count, 2 count) direct B (needs unit column stride).
  if (variant < 0 || variant >= 2 * kt.gemm_count) variant = 0;
  const bool direct = variant >= kt.gemm_count && g.b_cs == 1 && !g.packed_b;
  const GemmMicroKernel& uk = kt.gemm[variant % kt.gemm_count];
  const int T = allow_threads ? num_threads() : 1;
  const double flops = 2.0 * double(g.m) * double(g.n) * double(g.k);
  // Below ~20 us of work a fork-join costs more than it saves, more so when the second
  // vCPU is time-shared by the host.
  if (T <= 1 || flops < 4e6) {
    gemm_range(uk, kt, g, direct, 0, g.m, 0, g.n);
    return;
  }
  // Split the larger dimension into 2*T chunks (aligned to the register tile) so an
  // unevenly shared second core does not leave the other waiting.
  const int64_t chunks = 2 * T;
  const int64_t n_tiles = (g.n + uk.nr - 1) / uk.nr, m_tiles = (g.m + uk.mr - 1) / uk.mr;
  if (n_tiles >= chunks || n_tiles * uk.nr >= m_tiles * uk.mr) {
    const int64_t per = std::max<int64_t>(1, (n_tiles + chunks - 1) / chunks) * uk.nr;
    const int64_t parts = (g.n + per - 1) / per;
    parallel_for(parts, [&](int64_t i) {
      gemm_range(uk, kt, g, direct, 0, g.m, i * per, std::min(g.n, (i + 1) * per));
    });
  } else {
    const int64_t per = std::max<int64_t>(1, (m_tiles + chunks - 1) / chunks) * uk.mr;
    const int64_t parts = (g.m + per - 1) / per;
    parallel_for(parts, [&](int64_t i) {
      gemm_range(uk, kt, g, direct, i * per, std::min(g.m, (i + 1) * per), 0, g.n);
    });
  }
}

}  // namespace walle
