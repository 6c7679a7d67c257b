// Run-time SIMD dispatch: the CPU's best level from cpuid, optionally capped by the
// WALLE_ENGINE_ISA environment variable or set_isa(), so tests can run every level
// against the reference oracle on one machine.
#pragma once
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace walle {

Isa detect_isa();                      // best level this CPU supports
Isa current_isa();                     // level new steps are built with
void set_isa(Isa level);               // throws if the CPU lacks it
Isa isa_from_name(const std::string&);
const char* isa_name(Isa);
std::vector<Isa> supported_isas();     // ascending
const KernelTable& kernels_for(Isa);
inline const KernelTable& kernels() { return kernels_for(current_isa()); }
std::string cpu_signature();           // vendor/brand + level: the key of tuning decisions

}  // namespace walle
