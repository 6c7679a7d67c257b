// Graph runtime. A GraphDef (from the converted model file) is decomposed node by node
// into Steps over atomic ops; value shapes are static and inferred here; nodes whose
// inputs are all constant are evaluated at load (constant folding); chained rasters are
// merged; a memory plan packs intermediate values into one arena whose slots are reused
// once a value's last reader has run.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "atomic.h"
#include "gemm.h"
#include "isa.h"

namespace walle {

struct Attr {
  enum Kind { kInt, kFloat, kInts, kFloats, kString, kTensor } kind = kInt;
  int64_t i = 0;
  double f = 0;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::string s;
  Tensor t;
};

struct NodeDef {
  std::string op, name;
  std::vector<std::string> inputs, outputs;  // "" marks an omitted optional input
  std::map<std::string, Attr> attrs;

  bool has(const std::string& k) const { return attrs.count(k) != 0; }
  int64_t get_int(const std::string& k, int64_t d) const;
  double get_float(const std::string& k, double d) const;
  std::vector<int64_t> get_ints(const std::string& k, std::vector<int64_t> d = {}) const;
  std::string get_string(const std::string& k, const std::string& d = "") const;
};

struct ValueInfo {
  std::string name;
  DType dtype;
  Shape shape;
  // Search trials only: the value is NCHWc-blocked (shape is then the physical one).
  int nchwc = 0;
  int64_t channels = 0;
};

struct GraphDef {
  std::vector<ValueInfo> inputs;
  std::vector<std::string> outputs;
  std::map<std::string, Tensor> constants;
  std::vector<NodeDef> nodes;
};

struct Slot {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  enum Kind { kInput, kConst, kTemp } kind = kTemp;
  Tensor data;        // constants
  int alias_of = -1;  // reshape views share their root's storage
  int64_t arena_offset = -1;
  bool output = false;  // allocated per run and handed to the caller
  // NCHWc-blocked value (nchwc.h): `shape` is the physical [N, CB, H, W, nchwc] and
  // `channels` the logical C. Only layout-aware ops ever see such a slot.
  int nchwc = 0;
  int64_t channels = 0;
  size_t nbytes() const { return size_t(numel(shape)) * dtype_size(dtype); }
};

struct ExecCtx {
  std::vector<void*> ptr;
  const std::vector<Slot>* slots;
  View view(int id) const {
    const Slot& s = (*slots)[id];
    return walle::view(ptr[id], s.dtype, s.shape);
  }
};

struct Step {
  std::string kind;    // atomic op name: "binary:add", "matmul", "raster", "dwconv" ...
  std::string node;    // ONNX node it came from
  std::vector<int> in, out;
  std::function<void(const ExecCtx&)> fn;
  std::shared_ptr<RasterSpec> raster;  // raster steps: kept for merging, fn built late
  bool dead = false;
};

// The decision of the search for one op: algorithm, SIMD level, GEMM micro-kernel.
struct Choice {
  std::string algo;
  Isa isa = Isa::scalar;
  int gemm_variant = 0;
  std::string str() const;
  static Choice parse(const std::string& s);
};

struct Candidate {
  Choice choice;
  double cost = 0;  // cost-model estimate, seconds
};

struct ModelOptions {
  bool tune = true;              // time candidates at load (else: cost model only)
  int tune_top = 3;              // how many cost-model survivors are timed
  std::map<std::string, std::string> forced;  // op signature -> choice (search trials)
  Isa max_isa = Isa::avx512;
  bool nchwc = true;              // keep convolution chains in the blocked layout
  bool keep_nchwc_outputs = false;  // search trials: time the op, not a layout conversion
};

struct PlanEntry {
  std::string node, op, signature, choice, source;  // source: cache, timed, model, only
  double cost = 0, measured = 0;
  std::vector<std::string> candidates;  // every implementation considered, cheapest first
};

class Model;

// What op decompositions see: inputs as slot ids, helpers that append atomic steps.
class Builder {
 public:
  Builder(Model& m, const NodeDef& n) : m_(m), node_(n) {}
  const NodeDef& node() const { return node_; }
  const Slot& slot(int id) const;
  // By value: slots_ grows while a decomposition runs, so references would dangle.
  Shape shape(int id) const { return slot(id).shape; }
  DType dtype(int id) const { return slot(id).dtype; }
  bool is_const(int id) const;
  Tensor const_data(int id) const;  // throws naming the node if not constant
  std::vector<int64_t> const_ints(int id) const;
  double const_scalar(int id) const;
  const KernelTable& kt() const { return kernels_for(isa_); }
  // The NCHWc block size of this model (0: the blocked layout is off or unavailable).
  int nchwc_block() const;
  // Logical shape: [N, C, H, W] for an NCHWc slot, else the shape.
  Shape logical_shape(int id) const;
  void mark_nchwc(int id, int cb, int64_t channels);
  int to_plain(int id);             // the value in NCHW (one conversion, shared)
  int to_nchwc(int id, int cb);     // the value in NCHWc (one conversion, shared)
  void use_isa(Isa i) { isa_ = i; }
  Isa isa() const { return isa_; }

  int temp(DType t, const Shape& s);
  int alias(int src, const Shape& s);
  int add_const(const Tensor& t);

  void unary(UnaryOp op, int x, int y, float alpha = 0, float beta = 0);
  int unary(UnaryOp op, int x, float alpha = 0, float beta = 0);
  void binary(BinaryOp op, int a, int b, int y);
  int binary(BinaryOp op, int a, int b);
  int select(int c, int a, int b);
  int cast(int x, DType t);
  int reduce(ReduceOp op, int x, const std::vector<int64_t>& axes, bool keepdims);
  int argmax(int x, int64_t axis, bool keepdims, bool select_last);
  struct MatmulOpts {
    bool trans_a = false, trans_b = false;
    int bias = -1;
    char bias_axis = 0;
    int addend = -1;  // a value shaped like the output, added before the clamp
    float lo = -INFINITY, hi = INFINITY;
    int variant = 0;
    bool pack_const = true;
  };
  void matmul(int a, int b, int y, const MatmulOpts& o);
  void raster(const std::vector<int>& inputs, const RasterSpec& spec, int y);
  int raster(const std::vector<int>& inputs, const RasterSpec& spec, DType t, const Shape& s);
  void custom(const std::string& kind, const std::vector<int>& in, const std::vector<int>& out,
              std::function<void(const ExecCtx&)> fn);

  // Semi-auto search: returns the chosen candidate for this op signature (cache, timing
  // of the best few under the cost model, or the cost model alone).
  Choice choose(const std::string& signature, std::vector<Candidate> candidates);
  std::vector<int> in_ids;  // this node's input slots (-1: omitted)

 private:
  Model& m_;
  const NodeDef& node_;
  Isa isa_ = current_isa();
};

using DecomposeFn = std::vector<int> (*)(Builder&, const std::vector<int>& inputs);
std::map<std::string, DecomposeFn>& op_registry();
struct OpRegistration {
  OpRegistration(std::initializer_list<const char*> names, DecomposeFn fn) {
    for (auto n : names) op_registry()[n] = fn;
  }
};
#define WALLE_REGISTER_OPS(var, fn, ...) \
  static ::walle::OpRegistration var({__VA_ARGS__}, fn)

class Model {
  friend class Builder;  // decompositions append slots and steps while the model is built

 public:
  Model(const GraphDef& g, const ModelOptions& opts);
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;
  // Same as run, adding each step's wall time to `step_seconds` (size = steps()).
  std::vector<Tensor> run_timed(const std::vector<Tensor>& inputs,
                                std::vector<double>* step_seconds) const;

  const std::vector<ValueInfo>& inputs() const { return inputs_; }
  const std::vector<ValueInfo>& outputs() const { return outputs_; }
  const std::vector<PlanEntry>& plan() const { return plan_; }
  std::vector<std::string> steps() const;
  size_t arena_bytes() const { return arena_bytes_; }
  size_t unplanned_bytes() const { return unplanned_bytes_; }  // sum of temp sizes
  int merged_rasters() const { return merged_rasters_; }

 private:
  std::vector<Slot> slots_;  // values: inputs, constants, temporaries, aliases
  std::vector<Step> steps_;  // the decomposed program, in execution order
  ModelOptions opts_;
  std::vector<PlanEntry> plan_;
  void fold_constants(size_t first_step, const std::vector<int>& outs);
  void merge_rasters();
  void finalize_rasters();
  void plan_memory();
  int to_plain(int id);
  int to_nchwc(int id, int cb);
  std::map<int, int> plain_of_, nchwc_of_;  // layout conversions made so far
  NodeDef layout_node_;  // names the conversion steps

  std::vector<ValueInfo> inputs_, outputs_;
  std::vector<int> input_ids_, output_ids_;
  size_t arena_bytes_ = 0, unplanned_bytes_ = 0;
  int64_t folded_bytes_ = 0;  // values computed at load (bounded by the model limits)
  int merged_rasters_ = 0;
  // Where each slot's data lives in a run, worked out once after the memory plan so a run
  // resolves pointers with one pass and no alias walks: a constant's data, an input or
  // output by index, or an arena offset.
  struct SlotBinding {
    enum Kind : uint8_t { kNone, kConst, kInput, kOutput, kArena } kind = kNone;
    int64_t index = 0;  // input / output number, or arena offset
    const void* data = nullptr;
  };
  std::vector<SlotBinding> bindings_;
  void bind_slots();
  // A run's scratch: the arena and the pointer table, reused by later runs.
  struct RunState {
    std::shared_ptr<void> arena;
    ExecCtx ctx;
  };
  mutable std::mutex arena_mutex_;
  mutable std::vector<std::unique_ptr<RunState>> free_states_;
  // Packed constant operands by (data, shape, 'a' or 'b', transposed, panel width): a
  // weight shared by many nodes (tied embeddings, a repeated block) is packed once. The
  // entry keeps the source alive, so its address cannot be reused by another constant.
  struct Packed {
    Tensor source;
    std::shared_ptr<PackedMatrix> packed;
  };
  std::map<std::tuple<const void*, Shape, char, bool, int>, Packed> packed_;
};

// Tuning decisions: (cpu signature, op signature) -> choice. In memory; the Python facade
// persists it to disk and exports/imports profiles.
struct TuningRecord {
  std::string cpu, op, choice;
  double micros = 0;
};
std::vector<TuningRecord> tuning_records();
void tuning_add(const std::vector<TuningRecord>& r);
void tuning_clear();

}  // namespace walle
