// A small fork-join pool. Kernels split work into tasks with parallel_for; the calling
// thread takes part, so num_threads == 1 means no synchronisation at all. When another
// run already owns the pool (several threads running models), the call runs inline
// instead of queueing: concurrent runs then parallelise across requests instead.
#pragma once
#include <cstdint>
#include <functional>

namespace walle {

void set_num_threads(int n);
int num_threads();
void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn);

}  // namespace walle
