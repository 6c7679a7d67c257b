// Structural checks of a model graph, run once at load before any decomposition: a model
// file comes from outside the device and must be refused with a message, never crash,
// hang or exhaust the process. What is checked here (shape arithmetic is the ops' job):
//
//   - every value is defined exactly once (a graph input, a constant or one node output)
//     and before it is read, so there are no dangling references and no cycles;
//   - every node's op is known, with an input and output count the op accepts, and no
//     omitted input where the op requires one;
//   - attributes the op reads have the right kind and a value in range (strides >= 1,
//     a permutation for perm, a known auto_pad, ...);
//   - sizes: graph inputs of rank <= kMaxModelRank with dims >= 0, and every value and
//     the whole load within the limits below.
#pragma once
#include <cstdint>
#include <string>

#include "graph.h"

namespace walle {

// A model that is malformed (Python: walle_engine.ModelError, a ValueError).
struct ModelError : Error {
  using Error::Error;
};
// A model whose sizes exceed the limits (Python: MemoryError).
struct ModelTooLarge : Error {
  using Error::Error;
};

constexpr int kMaxModelRank = 8;

struct ModelLimits {
  int64_t total_bytes = int64_t(4) << 30;  // constants + folded values + arena of one model
  int64_t value_bytes = int64_t(2) << 30;  // any one value
};
ModelLimits model_limits();
void set_model_limits(const ModelLimits& l);

// Throws ModelError naming the first problem found.
void check_model(const GraphDef& g);

// Bytes of a value of `shape` and `dtype`; throws ModelError for a negative dimension and
// ModelTooLarge when the size overflows or exceeds the per-value limit. `what` names the
// value in the message.
int64_t checked_value_bytes(DType t, const Shape& shape, const std::string& what);

// Throws ModelTooLarge when `bytes` exceeds the total limit.
void check_total_bytes(int64_t bytes, const std::string& what);

}  // namespace walle
