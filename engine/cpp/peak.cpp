// The 1-thread FMA peak of this CPU, measured: independent chains of fused multiply-adds
// held in registers, one vector width per ISA. bench/engine.py reports GEMM GFLOP/s as a
// share of this number rather than of a constant for one machine class (hosts change).
#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "isa.h"

namespace walle {
namespace {

constexpr int kChains = 12;  // more than FMA latency x ports on current x86 cores
constexpr long kIters = 20'000'000;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Written out per ISA: lambdas would not inherit the target attribute.
__attribute__((target("avx2,fma"))) double peak_avx2() {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 1e-3f * float(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < kIters; ++it)
#pragma GCC unroll 12  // unrolled, the chains live in registers rather than on the stack
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  const double s = seconds_since(t0);
  float keep = 0;
  for (int i = 0; i < kChains; ++i) keep += _mm_cvtss_f32(_mm256_castps256_ps128(acc[i]));
  volatile float sink = keep;  // the chains must not be optimised away
  (void)sink;
  return 2.0 * 8 * kChains * double(kIters) / s / 1e9;
}

__attribute__((target("avx512f"))) double peak_avx512() {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 1e-3f * float(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < kIters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  const double s = seconds_since(t0);
  float keep = 0;
  for (int i = 0; i < kChains; ++i) keep += _mm512_reduce_add_ps(acc[i]);
  volatile float sink = keep;
  (void)sink;
  return 2.0 * 16 * kChains * double(kIters) / s / 1e9;
}

}  // namespace

// GFLOP/s of one thread at the current ISA, best of `reps`; 0 at the scalar level.
double fma_peak_gflops(int reps) {
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const Isa level = current_isa();
    if (level == Isa::avx512) best = std::max(best, peak_avx512());
    else if (level == Isa::avx2) best = std::max(best, peak_avx2());
  }
  return best;
}

}  // namespace walle
