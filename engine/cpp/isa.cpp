#include "isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "tensor.h"

namespace walle {

namespace {

Isa probe() {
  __builtin_cpu_init();
  // The AVX-512 table uses F/BW/DQ/VL; require all four (and OS support, which
  // __builtin_cpu_supports checks through XGETBV).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::scalar;
}

Isa initial() {
  Isa best = probe();
  if (const char* env = std::getenv("WALLE_ENGINE_ISA")) {
    if (*env) {
      Isa want = isa_from_name(env);
      return want < best ? want : best;
    }
  }
  return best;
}

std::atomic<int>& level() {
  static std::atomic<int> l{int(initial())};
  return l;
}

}  // namespace

Isa detect_isa() {
  static const Isa best = probe();
  return best;
}

Isa current_isa() { return Isa(level().load(std::memory_order_relaxed)); }

void set_isa(Isa l) {
  if (l > detect_isa())
    throw Error(std::string("this CPU does not support ") + isa_name(l) + "; best is " +
                isa_name(detect_isa()));
  level().store(int(l));
}

Isa isa_from_name(const std::string& s) {
  if (s == "scalar") return Isa::scalar;
  if (s == "avx2") return Isa::avx2;
  if (s == "avx512") return Isa::avx512;
  throw Error("unknown ISA level '" + s + "': use scalar, avx2 or avx512");
}

const char* isa_name(Isa l) {
  switch (l) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> v;
  for (int i = 0; i <= int(detect_isa()); ++i) v.push_back(Isa(i));
  return v;
}

const KernelTable& kernels_for(Isa l) {
  switch (l) {
    case Isa::avx512: return kernels_avx512();
    case Isa::avx2: return kernels_avx2();
    default: return kernels_scalar();
  }
}

std::string cpu_signature() {
  unsigned regs[12] = {};
  char brand[49] = {};
  unsigned max_ext = __get_cpuid_max(0x80000000u, nullptr);
  if (max_ext >= 0x80000004u) {
    for (unsigned i = 0; i < 3; ++i)
      __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2],
                  &regs[4 * i + 3]);
    std::memcpy(brand, regs, 48);
  }
  std::string b(brand);
  while (!b.empty() && b.back() == ' ') b.pop_back();
  size_t s = b.find_first_not_of(' ');
  b = s == std::string::npos ? "unknown-cpu" : b.substr(s);
  return b + "/" + isa_name(detect_isa());
}

}  // namespace walle
