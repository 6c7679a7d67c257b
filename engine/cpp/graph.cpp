#include "graph.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>

#include "budget.h"
#include "model_check.h"
#include "nchwc.h"
#include "threadpool.h"

namespace walle {

// ---- NodeDef attribute access ---------------------------------------------------------

int64_t NodeDef::get_int(const std::string& k, int64_t d) const {
  auto it = attrs.find(k);
  if (it == attrs.end()) return d;
  if (it->second.kind != Attr::kFloat) return it->second.i;
  const double f = it->second.f;
  if (!(f >= -9.2e18 && f <= 9.2e18))  // converting anything else to int64 is undefined
    throw Error(op + " node '" + name + "': attribute " + k + " is not a 64-bit integer");
  return int64_t(f);
}

double NodeDef::get_float(const std::string& k, double d) const {
  auto it = attrs.find(k);
  if (it == attrs.end()) return d;
  return it->second.kind == Attr::kInt ? double(it->second.i) : it->second.f;
}

std::vector<int64_t> NodeDef::get_ints(const std::string& k, std::vector<int64_t> d) const {
  auto it = attrs.find(k);
  return it == attrs.end() ? d : it->second.ints;
}

std::string NodeDef::get_string(const std::string& k, const std::string& d) const {
  auto it = attrs.find(k);
  return it == attrs.end() ? d : it->second.s;
}

std::map<std::string, DecomposeFn>& op_registry() {
  static std::map<std::string, DecomposeFn> r;
  return r;
}

// ---- Builder ---------------------------------------------------------------------------

const Slot& Builder::slot(int id) const {
  if (id < 0 || size_t(id) >= m_.slots_.size())
    throw Error(node_.op + " node '" + node_.name + "': a required input is missing");
  return m_.slots_[id];
}

bool Builder::is_const(int id) const {
  const Slot* s = &slot(id);
  while (s->alias_of >= 0) s = &m_.slots_[s->alias_of];
  return s->kind == Slot::kConst;
}

Tensor Builder::const_data(int id) const {
  if (!is_const(id))
    throw Error(node_.op + " node '" + node_.name + "': input '" + slot(id).name +
                "' must be a constant (computed from initializers and static shapes)");
  const Slot& s = m_.slots_[id];
  if (s.alias_of >= 0) {
    // Materialise a reshaped constant view once.
    Slot& mut = m_.slots_[id];
    const Slot* r = &s;
    while (r->alias_of >= 0) r = &m_.slots_[r->alias_of];
    mut.data = r->data.reshaped(s.shape);
    mut.kind = Slot::kConst;
    mut.alias_of = -1;
  }
  return m_.slots_[id].data;
}

std::vector<int64_t> Builder::const_ints(int id) const {
  const Tensor t = const_data(id);
  std::vector<int64_t> v(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype) {
      case DType::i64: v[i] = t.ptr<int64_t>()[i]; break;
      case DType::i32: v[i] = t.ptr<int32_t>()[i]; break;
      case DType::f32: {
        const float f = t.ptr<float>()[i];
        // An out-of-range float to int conversion is undefined: refuse it.
        if (!(f >= -9.2e18f && f <= 9.2e18f))
          throw Error(node_.op + " node '" + node_.name + "': input '" + slot(id).name +
                      "' holds a value that is not a 64-bit integer");
        v[i] = int64_t(f);
        break;
      }
      case DType::b8:
      case DType::u8: v[i] = t.ptr<uint8_t>()[i]; break;
    }
  }
  return v;
}

double Builder::const_scalar(int id) const {
  const Tensor t = const_data(id);
  if (t.numel() < 1) throw Error(node_.op + " node '" + node_.name + "': empty scalar input");
  switch (t.dtype) {
    case DType::f32: return t.ptr<float>()[0];
    case DType::i32: return t.ptr<int32_t>()[0];
    case DType::i64: return double(t.ptr<int64_t>()[0]);
    case DType::b8:
    case DType::u8: return t.ptr<uint8_t>()[0];
  }
  return 0;
}

int Builder::nchwc_block() const {
  if (!m_.opts_.nchwc) return 0;
  return kernels_for(std::min(current_isa(), m_.opts_.max_isa)).nchwc_block;
}

Shape Builder::logical_shape(int id) const {
  const Slot& s = slot(id);
  if (!s.nchwc) return s.shape;
  return {s.shape[0], s.channels, s.shape[2], s.shape[3]};
}

void Builder::mark_nchwc(int id, int cb, int64_t channels) {
  m_.slots_.at(id).nchwc = cb;
  m_.slots_.at(id).channels = channels;
}

int Builder::to_plain(int id) { return m_.to_plain(id); }
int Builder::to_nchwc(int id, int cb) { return m_.to_nchwc(id, cb); }

int Builder::temp(DType t, const Shape& s) {
  check_shape(s, node_.op + " node '" + node_.name + "': output shape");
  checked_value_bytes(t, s, node_.op + " node '" + node_.name + "': a value");
  Slot v;
  v.name = node_.name + ":" + std::to_string(m_.slots_.size());
  v.dtype = t;
  v.shape = s;
  m_.slots_.push_back(v);
  return int(m_.slots_.size()) - 1;
}

int Builder::alias(int src, const Shape& s) {
  if (check_shape(s, node_.op + " node '" + node_.name + "': shape") != numel(shape(src)))
    throw Error(node_.op + " node '" + node_.name + "': cannot reshape " +
                shape_str(shape(src)) + " to " + shape_str(s));
  Slot v;
  v.name = node_.name + ":" + std::to_string(m_.slots_.size());
  v.dtype = dtype(src);
  v.shape = s;
  int root = src;
  while (m_.slots_[root].alias_of >= 0) root = m_.slots_[root].alias_of;
  if (m_.slots_[root].kind == Slot::kConst) {
    v.kind = Slot::kConst;
    v.data = m_.slots_[root].data.reshaped(s);
  } else {
    v.alias_of = root;
  }
  m_.slots_.push_back(v);
  return int(m_.slots_.size()) - 1;
}

int Builder::add_const(const Tensor& t) {
  if (!t.data && t.numel() > 0)
    throw Error(node_.op + " node '" + node_.name + "': constant without data");
  check_shape(t.shape, node_.op + " node '" + node_.name + "': constant shape");
  Slot v;
  v.name = node_.name + ":const" + std::to_string(m_.slots_.size());
  v.dtype = t.dtype;
  v.shape = t.shape;
  v.kind = Slot::kConst;
  v.data = t;
  m_.slots_.push_back(v);
  return int(m_.slots_.size()) - 1;
}

namespace {
const char* unary_name(UnaryOp op) {
  static const char* n[] = {"abs", "neg", "exp", "log", "sqrt", "rsqrt", "reciprocal",
                            "sigmoid", "tanh", "erf", "relu", "floor", "ceil", "round",
                            "sin", "cos", "sign", "softplus", "affine", "clip"};
  return n[int(op)];
}
const char* binary_name(BinaryOp op) {
  static const char* n[] = {"add", "sub", "mul", "div", "pow", "max", "min", "eq", "lt",
                            "gt", "le", "ge", "and", "or", "xor", "mod"};
  return n[int(op)];
}
}  // namespace

void Builder::unary(UnaryOp op, int x, int y, float alpha, float beta) {
  // y may be x (in place) or a value made by the caller: it must hold what is written.
  if (numel(shape(x)) != numel(shape(y)) || dtype(x) != dtype(y))
    throw Error(node_.op + " node '" + node_.name + "': unary step of " + shape_str(shape(x)) +
                " into " + shape_str(shape(y)));
  const KernelTable* kt = &this->kt();
  if (dtype(x) == DType::f32) {  // pre-bound: no views or shape work per run
    const int64_t n = numel(shape(x));
    custom(std::string("unary:") + unary_name(op), {x}, {y}, [=](const ExecCtx& c) {
      fast::unary_f32(*kt, op, static_cast<const float*>(c.ptr[x]), static_cast<float*>(c.ptr[y]),
                      n, alpha, beta);
    });
    return;
  }
  custom(std::string("unary:") + unary_name(op), {x}, {y}, [=](const ExecCtx& c) {
    fast::unary(*kt, op, c.view(x), c.view(y), alpha, beta);
  });
}

int Builder::unary(UnaryOp op, int x, float alpha, float beta) {
  int y = temp(dtype(x), shape(x));
  unary(op, x, y, alpha, beta);
  return y;
}

void Builder::binary(BinaryOp op, int a, int b, int y) {
  {
    if (dtype(a) != dtype(b))
      throw Error(node_.op + " node '" + node_.name + "': inputs have different dtypes (" +
                  dtype_name(dtype(a)) + " vs " + dtype_name(dtype(b)) + ")");
    const DType out = (is_compare(op) || is_logical(op)) ? DType::b8 : dtype(a);
    if (broadcast_shapes(shape(a), shape(b)) != shape(y) || dtype(y) != out)
      throw Error(node_.op + " node '" + node_.name + "': binary step of " + shape_str(shape(a)) +
                  " and " + shape_str(shape(b)) + " into " + shape_str(shape(y)));
  }
  const KernelTable* kt = &this->kt();
  if (dtype(a) == DType::f32 && dtype(b) == DType::f32 && !is_compare(op) && !is_logical(op)) {
    // Pre-bound: the broadcast plan is worked out here, once.
    auto plan = std::make_shared<const BroadcastPlan>(
        fast::plan_broadcast(shape(y), shape(a), shape(b)));
    custom(std::string("binary:") + binary_name(op), {a, b}, {y}, [=](const ExecCtx& c) {
      fast::binary_f32(*kt, op, *plan, static_cast<const float*>(c.ptr[a]),
                       static_cast<const float*>(c.ptr[b]), static_cast<float*>(c.ptr[y]));
    });
    return;
  }
  custom(std::string("binary:") + binary_name(op), {a, b}, {y}, [=](const ExecCtx& c) {
    fast::binary(*kt, op, c.view(a), c.view(b), c.view(y));
  });
}

int Builder::binary(BinaryOp op, int a, int b) {
  if (dtype(a) != dtype(b))
    throw Error(node_.op + " node '" + node_.name + "': inputs have different dtypes (" +
                dtype_name(dtype(a)) + " vs " + dtype_name(dtype(b)) + ")");
  const DType out = (is_compare(op) || is_logical(op)) ? DType::b8 : dtype(a);
  int y = temp(out, broadcast_shapes(shape(a), shape(b)));
  binary(op, a, b, y);
  return y;
}

int Builder::select(int cnd, int a, int b) {
  if (dtype(cnd) != DType::b8)
    throw Error(node_.op + " node '" + node_.name + "': the condition must be bool, not " +
                dtype_name(dtype(cnd)));
  if (dtype(a) != dtype(b))
    throw Error(node_.op + " node '" + node_.name + "': inputs have different dtypes (" +
                dtype_name(dtype(a)) + " vs " + dtype_name(dtype(b)) + ")");
  int y = temp(dtype(a), broadcast_shapes(shape(cnd), broadcast_shapes(shape(a), shape(b))));
  const KernelTable* kt = &this->kt();
  custom("select", {cnd, a, b}, {y}, [=](const ExecCtx& c) {
    fast::select(*kt, c.view(cnd), c.view(a), c.view(b), c.view(y));
  });
  return y;
}

int Builder::cast(int x, DType t) {
  if (dtype(x) == t) return x;
  int y = temp(t, shape(x));
  custom(std::string("cast:") + dtype_name(t), {x}, {y},
         [=](const ExecCtx& c) { fast::cast(c.view(x), c.view(y)); });
  return y;
}

int Builder::reduce(ReduceOp op, int x, const std::vector<int64_t>& axes, bool keepdims) {
  const Shape out = reduced_shape(shape(x), axes, keepdims);
  int y = temp(dtype(x), out);
  const KernelTable* kt = &this->kt();
  static const char* names[] = {"sum", "mean", "max", "min", "prod"};
  custom(std::string("reduce:") + names[int(op)], {x}, {y}, [=](const ExecCtx& c) {
    fast::reduce(*kt, op, c.view(x), axes, c.view(y));
  });
  return y;
}

int Builder::argmax(int x, int64_t axis, bool keepdims, bool select_last) {
  int y = temp(DType::i64, reduced_shape(shape(x), {axis}, keepdims));
  custom("argmax", {x}, {y}, [=](const ExecCtx& c) {
    fast::argmax(c.view(x), axis, select_last, c.view(y));
  });
  return y;
}

void Builder::matmul(int a, int b, int y, const MatmulOpts& o) {
  {
    const Shape sa = shape(a), sb = shape(b);
    const std::string who = node_.op + " node '" + node_.name + "': ";
    if (dtype(a) != DType::f32 || dtype(b) != DType::f32 || dtype(y) != DType::f32)
      throw Error(who + "matmul needs float32 tensors");
    if (sa.size() < 2 || sb.size() < 2) throw Error(who + "matmul needs operands of rank >= 2");
    const int64_t K = o.trans_a ? sa[sa.size() - 2] : sa.back();
    const int64_t K2 = o.trans_b ? sb.back() : sb[sb.size() - 2];
    if (K != K2)
      throw Error(who + "matmul inner dimensions differ: " + shape_str(sa) + " x " + shape_str(sb));
    const int64_t M = o.trans_a ? sa.back() : sa[sa.size() - 2];
    const int64_t N = o.trans_b ? sb[sb.size() - 2] : sb.back();
    Shape want = broadcast_shapes(Shape(sa.begin(), sa.end() - 2), Shape(sb.begin(), sb.end() - 2));
    want.push_back(M);
    want.push_back(N);
    if (check_shape(want, who + "matmul output") != numel(shape(y)))
      throw Error(who + "matmul of " + shape_str(sa) + " x " + shape_str(sb) + " into " +
                  shape_str(shape(y)));
    if (o.bias >= 0 && (dtype(o.bias) != DType::f32 ||
                        numel(shape(o.bias)) != (o.bias_axis == 'm' ? M : N) ||
                        (o.bias_axis != 'm' && o.bias_axis != 'n')))
      throw Error(who + "matmul bias of shape " + shape_str(shape(o.bias)) + " does not fit");
    if (o.addend >= 0 && dtype(o.addend) != DType::f32)
      throw Error(who + "matmul addend must be float32");
  }
  const KernelTable* kt = &this->kt();
  const int variant = std::clamp(o.variant, 0, 2 * kt->gemm_count - 1);
  const GemmMicroKernel& uk = kt->gemm[variant % kt->gemm_count];
  std::shared_ptr<PackedMatrix> pa, pb;
  // Weights are packed once here instead of on every call: for batch-1 inference the
  // packing of B would otherwise cost as much as the multiply itself.
  if (o.pack_const && is_const(b)) {
    const Tensor t = const_data(b);
    auto& entry = m_.packed_[{t.data, t.shape, 'b', o.trans_b, uk.nr}];
    auto& slot = entry.packed;
    if (!slot) {
      entry.source = t;
      const int r = t.rank();
      const int64_t K = o.trans_b ? t.shape[r - 1] : t.shape[r - 2];
      const int64_t N = o.trans_b ? t.shape[r - 2] : t.shape[r - 1];
      const int64_t nb = t.numel() / std::max<int64_t>(1, K * N);
      slot = std::make_shared<PackedMatrix>(pack_b(t.ptr<float>(), nb, K * N, K, N,
                                                   o.trans_b ? 1 : N, o.trans_b ? K : 1, uk.nr));
    }
    pb = slot;
  }
  if (o.pack_const && is_const(a)) {
    const Tensor t = const_data(a);
    auto& entry = m_.packed_[{t.data, t.shape, 'a', o.trans_a, uk.mr}];
    auto& slot = entry.packed;
    if (!slot) {
      entry.source = t;
      const int r = t.rank();
      const int64_t M = o.trans_a ? t.shape[r - 1] : t.shape[r - 2];
      const int64_t K = o.trans_a ? t.shape[r - 2] : t.shape[r - 1];
      const int64_t nb = t.numel() / std::max<int64_t>(1, K * M);
      slot = std::make_shared<PackedMatrix>(pack_a(t.ptr<float>(), nb, M * K, M, K,
                                                   o.trans_a ? 1 : K, o.trans_a ? M : 1, uk.mr));
    }
    pa = slot;
  }
  std::vector<int> in = {a, b};
  if (o.bias >= 0) in.push_back(o.bias);
  if (o.addend >= 0) {
    if (numel(shape(o.addend)) != numel(shape(y)))
      throw Error("matmul addend of shape " + shape_str(shape(o.addend)) + " does not match " +
                  shape_str(shape(y)));
    in.push_back(o.addend);
  }
  const int addend = o.addend;
  const int bias = o.bias;
  const char axis = o.bias_axis;
  const float lo = o.lo, hi = o.hi;
  if (dtype(a) != DType::f32 || dtype(b) != DType::f32) throw Error("matmul needs float32 tensors");
  // Pre-bound: shapes, batch offsets and packed operands are settled here, once.
  auto plan = std::make_shared<const MatmulPlan>(fast::plan_matmul(shape(a), o.trans_a, shape(b), o.trans_b));
  custom(std::string("matmul:") + uk.name, in, {y}, [=](const ExecCtx& c) {
    MatmulEpilogue ep;
    if (addend >= 0) ep.addend = static_cast<const float*>(c.ptr[addend]);
    if (bias >= 0) {
      ep.bias = static_cast<const float*>(c.ptr[bias]);
      ep.bias_axis = axis;
    }
    ep.lo = lo;
    ep.hi = hi;
    fast::matmul_f32(*kt, variant, *plan, static_cast<const float*>(c.ptr[a]),
                     static_cast<const float*>(c.ptr[b]), static_cast<float*>(c.ptr[y]), ep,
                     pa.get(), pb.get());
  });
}

void Builder::raster(const std::vector<int>& inputs, const RasterSpec& spec, int y) {
  // Every region must stay inside its source and the output (checked here, at load, so a
  // run never copies out of bounds), and copy elements of the output's size.
  std::vector<int64_t> numels;
  for (int i : inputs) {
    if (dtype_size(dtype(i)) != dtype_size(dtype(y)))
      throw Error(node_.op + " node '" + node_.name + "': raster of " + dtype_name(dtype(i)) +
                  " into " + dtype_name(dtype(y)));
    numels.push_back(numel(shape(i)));
  }
  try {
    check_raster(spec, numels, numel(shape(y)));
  } catch (const Error& e) {
    throw Error(node_.op + " node '" + node_.name + "': " + e.what());
  }
  Step s;
  s.kind = "raster";
  s.node = node_.name;
  s.in = inputs;
  s.out = {y};
  s.raster = std::make_shared<RasterSpec>(spec);
  m_.steps_.push_back(std::move(s));
}

int Builder::raster(const std::vector<int>& inputs, const RasterSpec& spec, DType t,
                    const Shape& s) {
  int y = temp(t, s);
  raster(inputs, spec, y);
  return y;
}

void Builder::custom(const std::string& kind, const std::vector<int>& in,
                     const std::vector<int>& out, std::function<void(const ExecCtx&)> fn) {
  Step s;
  s.kind = kind;
  s.node = node_.name;
  s.in = in;
  s.out = out;
  s.fn = std::move(fn);
  m_.steps_.push_back(std::move(s));
}

// ---- Layout ----------------------------------------------------------------------------

namespace {

// How a node meets NCHWc inputs: `plain` ops get NCHW copies; `elementwise` ops run on the
// blocked storage as it is (padding channels stay finite: every op here maps finite
// values to finite values, and convolutions give padding channels zero weights);
// `native` ops (convolution, pooling) read the blocked layout themselves.
enum class LayoutUse { plain, elementwise, native };

const std::set<std::string>& nchwc_native_ops() {
  static const std::set<std::string> s = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
                                          "GlobalMaxPool"};
  return s;
}
const std::set<std::string>& nchwc_elementwise_ops() {
  static const std::set<std::string> s = {"Relu", "Clip", "LeakyRelu", "HardSigmoid",
                                          "HardSwish", "Sigmoid", "Tanh", "Add", "Sub",
                                          "Mul", "Max", "Min", "Sum"};
  return s;
}

}  // namespace

int Model::to_plain(int id) {
  auto it = plain_of_.find(id);
  if (it != plain_of_.end()) return it->second;
  const Slot s = slots_[id];
  Builder b(*this, layout_node_);
  const int64_t n = s.shape[0], h = s.shape[2], w = s.shape[3];
  if (h * w == 1 && s.channels % s.nchwc == 0) {  // [N, C/c, 1, 1, c] is [N, C, 1, 1]
    const int y = b.alias(id, {n, s.channels, 1, 1});
    plain_of_[id] = y;
    return y;
  }
  const int y = b.raster({id}, from_nchwc_spec(n, s.channels, h * w, s.nchwc), s.dtype,
                         {n, s.channels, h, w});
  plain_of_[id] = y;
  return y;
}

int Model::to_nchwc(int id, int cb) {
  auto it = nchwc_of_.find(id);
  if (it != nchwc_of_.end()) return it->second;
  const Slot s = slots_[id];
  if (s.shape.size() != 4) throw Error("NCHWc needs a 4-D value, got " + shape_str(s.shape));
  Builder b(*this, layout_node_);
  const int64_t n = s.shape[0], c = s.shape[1], hw = s.shape[2] * s.shape[3];
  const int y = b.raster({id}, to_nchwc_spec(n, c, hw, cb), s.dtype, nchwc_shape(s.shape, cb));
  b.mark_nchwc(y, cb, c);
  nchwc_of_[id] = y;
  return y;
}

// ---- Model -----------------------------------------------------------------------------

Model::Model(const GraphDef& g, const ModelOptions& opts) : opts_(opts) {
  if (const char* e = std::getenv("WALLE_ENGINE_NCHWC"); e && std::string(e) == "0")
    opts_.nchwc = false;  // A/B switch for benchmarks
  layout_node_.op = "Layout";
  layout_node_.name = "layout";
  check_model(g);  // structure first: every later step may assume a well-formed graph
  std::map<std::string, int> ids;
  for (const auto& in : g.inputs) {
    check_shape(in.shape, "input '" + in.name + "' shape");
    if (in.nchwc && (in.shape.size() != 5 || in.channels < 1))
      throw Error("input '" + in.name + "': a blocked input needs a 5-D shape");
    Slot s;
    s.name = in.name;
    s.dtype = in.dtype;
    s.shape = in.shape;
    s.nchwc = in.nchwc;
    s.channels = in.channels;
    s.kind = Slot::kInput;
    ids[in.name] = int(slots_.size());
    input_ids_.push_back(int(slots_.size()));
    slots_.push_back(s);
    inputs_.push_back(in);
  }
  for (const auto& [name, t] : g.constants) {
    check_shape(t.shape, "constant '" + name + "' shape");
    if (!t.data && t.numel() > 0) throw Error("constant '" + name + "' has no data");
    Slot s;
    s.name = name;
    s.dtype = t.dtype;
    s.shape = t.shape;
    s.kind = Slot::kConst;
    s.data = t;
    ids[name] = int(slots_.size());
    slots_.push_back(s);
  }
  auto& reg = op_registry();
  for (const NodeDef& n : g.nodes) {
    auto it = reg.find(n.op);
    if (it == reg.end())
      throw Error("operator " + n.op + " (node '" + n.name + "') is not supported by walle_engine");
    std::vector<int> in;
    bool all_const = true;
    for (const auto& name : n.inputs) {
      if (name.empty()) {
        in.push_back(-1);
        continue;
      }
      auto f = ids.find(name);
      if (f == ids.end())
        throw Error("node '" + n.name + "' reads '" + name + "', which no node produces");
      in.push_back(f->second);
      int root = f->second;
      while (slots_[root].alias_of >= 0) root = slots_[root].alias_of;
      if (slots_[root].kind != Slot::kConst) all_const = false;
    }
    // Layout: which NCHWc inputs this node may see as they are (copied out of slots_,
    // which grows when conversions are added).
    LayoutUse use = LayoutUse::plain;
    int blocked = -1;
    for (int id : in)
      if (id >= 0 && slots_[id].nchwc) blocked = id;
    const int cb = blocked >= 0 ? slots_[blocked].nchwc : 0;
    const int64_t channels = blocked >= 0 ? slots_[blocked].channels : 0;
    if (blocked >= 0 && nchwc_native_ops().count(n.op)) {
      use = LayoutUse::native;
    } else if (blocked >= 0 && nchwc_elementwise_ops().count(n.op)) {
      use = LayoutUse::elementwise;  // unless an input is neither blocked alike nor a scalar
      for (int id : in) {
        if (id < 0) continue;
        const Slot& s = slots_[id];
        int root = id;
        while (slots_[root].alias_of >= 0) root = slots_[root].alias_of;
        const bool scalar_const = numel(s.shape) == 1 && slots_[root].kind == Slot::kConst;
        if (s.nchwc ? (s.shape != slots_[blocked].shape || s.channels != channels)
                    : !scalar_const)
          use = LayoutUse::plain;
      }
    }
    if (blocked >= 0 && use == LayoutUse::plain)
      for (int& id : in)
        if (id >= 0 && slots_[id].nchwc) id = to_plain(id);
    const size_t first = steps_.size();
    Builder b(*this, n);
    b.in_ids = in;
    // Decompositions index their inputs by position: pad with "omitted" (-1) so reading a
    // missing input is a clean error (Builder::slot) rather than an out-of-range read.
    // Variadic ops (Concat, Sum, ...) skip the padding.
    std::vector<int> padded = in;
    if (padded.size() < 8) padded.resize(8, -1);
    std::vector<int> outs;
    try {
      outs = it->second(b, padded);
    } catch (const Error& e) {
      std::string msg = e.what();
      if (msg.find(n.name) == std::string::npos)
        msg = n.op + " node '" + n.name + "': " + msg;
      throw Error(msg);
    }
    if (use == LayoutUse::elementwise)
      for (int o : outs)
        if (slots_[o].nchwc == 0 && slots_[o].shape.size() == 5) b.mark_nchwc(o, cb, channels);
    if (all_const && steps_.size() > first) fold_constants(first, outs);
    for (size_t i = 0; i < n.outputs.size() && i < outs.size(); ++i)
      if (!n.outputs[i].empty()) ids[n.outputs[i]] = outs[i];
  }
  // Graph outputs get their own buffers: alias, constant or input outputs get a copy.
  NodeDef out_node;
  out_node.op = "Output";
  out_node.name = "output";
  for (const auto& name : g.outputs) {
    auto f = ids.find(name);
    if (f == ids.end()) throw Error("graph output '" + name + "' is never produced");
    int id = f->second;
    if (slots_[id].nchwc && !opts_.keep_nchwc_outputs) id = to_plain(id);
    const Slot& s = slots_[id];
    const bool owned = s.kind == Slot::kTemp && s.alias_of < 0 && !s.output &&
                       std::find(output_ids_.begin(), output_ids_.end(), id) == output_ids_.end();
    if (!owned) {
      Builder b(*this, out_node);
      RasterSpec spec;
      Region r;
      r.ndim = 1;
      r.size[0] = numel(slots_[id].shape);
      r.src_stride[0] = r.dst_stride[0] = 1;
      spec.regions.push_back(r);
      const int src = id;
      id = b.temp(slots_[src].dtype, slots_[src].shape);
      b.raster({src}, spec, id);
    }
    slots_[id].output = true;
    output_ids_.push_back(id);
    outputs_.push_back({name, slots_[id].dtype, slots_[id].shape});
  }
  merge_rasters();
  finalize_rasters();
  plan_memory();
  int64_t const_bytes = 0;
  for (const Slot& s : slots_)
    if (s.kind == Slot::kConst && s.alias_of < 0) const_bytes += int64_t(s.nbytes());
  check_total_bytes(const_bytes + int64_t(arena_bytes_), "the model (constants and arena)");
  bind_slots();
}

void Model::bind_slots() {
  bindings_.assign(slots_.size(), SlotBinding{});
  std::map<int, int64_t> out_index, in_index;
  for (size_t i = 0; i < output_ids_.size(); ++i) out_index[output_ids_[i]] = int64_t(i);
  for (size_t i = 0; i < input_ids_.size(); ++i) in_index[input_ids_[i]] = int64_t(i);
  for (size_t id = 0; id < slots_.size(); ++id) {
    int r = int(id);
    while (slots_[r].alias_of >= 0) r = slots_[r].alias_of;
    const Slot& s = slots_[r];
    SlotBinding& b = bindings_[id];
    if (s.kind == Slot::kConst) {
      b.kind = SlotBinding::kConst;
      b.data = s.data.data;
    } else if (s.output) {
      b.kind = SlotBinding::kOutput;
      b.index = out_index.at(r);
    } else if (s.kind == Slot::kInput) {
      b.kind = SlotBinding::kInput;
      b.index = in_index.at(r);
    } else if (s.arena_offset >= 0) {
      b.kind = SlotBinding::kArena;
      b.index = s.arena_offset;
    }
  }
}

void Model::fold_constants(size_t first, const std::vector<int>& outs) {
  // Run the node's steps now on private buffers; its outputs become constants.
  std::set<int> produced;
  for (size_t i = first; i < steps_.size(); ++i)
    for (int o : steps_[i].out) produced.insert(o);
  std::vector<Step> steps(steps_.begin() + first, steps_.end());
  steps_.resize(first);
  ExecCtx c;
  c.slots = &slots_;
  c.ptr.assign(slots_.size(), nullptr);
  std::map<int, Tensor> bufs;
  auto root = [&](int id) {
    while (slots_[id].alias_of >= 0) id = slots_[id].alias_of;
    return id;
  };
  for (size_t id = 0; id < slots_.size(); ++id) {
    const int r = root(int(id));
    if (slots_[r].kind == Slot::kConst) c.ptr[id] = slots_[r].data.data;
  }
  for (int p : produced) {
    const int r = root(p);
    if (bufs.count(r)) continue;
    folded_bytes_ += int64_t(slots_[r].nbytes());
    check_total_bytes(folded_bytes_, "constant folding");
    bufs[r] = Tensor::zeros(slots_[r].dtype, slots_[r].shape);
  }
  for (size_t id = 0; id < slots_.size(); ++id) {
    const int r = root(int(id));
    if (bufs.count(r)) c.ptr[id] = bufs[r].data;
  }
  for (auto& s : steps) {
    if (s.raster) {
      std::vector<View> ins;
      for (int i : s.in) ins.push_back(c.view(i));
      fast::raster(*s.raster, ins, c.view(s.out[0]));
    } else {
      s.fn(c);
    }
  }
  for (auto& [r, t] : bufs) {
    slots_[r].kind = Slot::kConst;
    slots_[r].data = t;
  }
  for (int o : outs) {
    Slot& s = slots_[o];
    if (s.alias_of >= 0) {
      s.data = slots_[root(o)].data.reshaped(s.shape);
      s.alias_of = -1;
      s.kind = Slot::kConst;
    }
  }
}

void Model::merge_rasters() {
  auto root = [&](int id) {
    while (slots_[id].alias_of >= 0) id = slots_[id].alias_of;
    return id;
  };
  // Producer step and reader count per root slot.
  std::map<int, int> producer;
  std::map<int, int> readers;
  for (size_t i = 0; i < steps_.size(); ++i) {
    for (int o : steps_[i].out) producer[root(o)] = int(i);
    for (int x : steps_[i].in) readers[root(x)]++;
  }
  for (size_t i = 0; i < steps_.size(); ++i) {
    Step& outer = steps_[i];
    if (!outer.raster || outer.in.size() != 1) continue;
    const int v = root(outer.in[0]);
    auto p = producer.find(v);
    if (p == producer.end() || readers[v] != 1 || slots_[v].output) continue;
    Step& inner = steps_[p->second];
    if (!inner.raster || inner.dead) continue;
    RasterSpec merged;
    if (!compose_raster(*inner.raster, slots_[v].shape, *outer.raster, &merged)) continue;
    try {  // the merged copy must stay inside inner's inputs, like any raster
      std::vector<int64_t> numels;
      for (int x : inner.in) numels.push_back(numel(slots_[x].shape));
      check_raster(merged, numels, numel(slots_[outer.out[0]].shape));
    } catch (const Error&) {
      continue;
    }
    outer.raster = std::make_shared<RasterSpec>(merged);
    outer.in = inner.in;
    outer.node = inner.node + "+" + outer.node;
    inner.dead = true;
    ++merged_rasters_;
    for (int x : inner.in) readers[root(x)]++;  // outer now reads them too
  }
  steps_.erase(std::remove_if(steps_.begin(), steps_.end(), [](const Step& s) { return s.dead; }),
               steps_.end());
}

void Model::finalize_rasters() {
  for (auto& s : steps_) {
    if (!s.raster) continue;
    auto spec = s.raster;
    auto in = s.in;
    const int y = s.out[0];
    s.fn = [spec, in, y](const ExecCtx& c) {
      std::vector<View> ins;
      ins.reserve(in.size());
      for (int i : in) ins.push_back(c.view(i));
      fast::raster(*spec, ins, c.view(y));
    };
  }
}

void Model::plan_memory() {
  auto root = [&](int id) {
    while (slots_[id].alias_of >= 0) id = slots_[id].alias_of;
    return id;
  };
  const int n = int(slots_.size());
  std::vector<int> first(n, -1), last(n, -1);
  for (int i = 0; i < int(steps_.size()); ++i) {
    for (int o : steps_[i].out) {
      const int r = root(o);
      if (first[r] < 0) first[r] = i;
      last[r] = std::max(last[r], i);
    }
    for (int x : steps_[i].in) {
      if (x < 0) continue;
      last[root(x)] = std::max(last[root(x)], i);
    }
  }
  // Greedy best-fit over free blocks, in step order: outputs of step i are placed before
  // its inputs are released, so a step never writes over what it reads.
  struct Block { size_t off, size; };
  std::vector<Block> free_list;
  size_t top = 0;
  std::vector<std::vector<int>> release(steps_.size());
  for (int s = 0; s < n; ++s)
    if (last[s] >= 0 && first[s] >= 0 && slots_[s].kind == Slot::kTemp && slots_[s].alias_of < 0 &&
        !slots_[s].output)
      release[last[s]].push_back(s);
  auto align = [](size_t b) { return (b + 63) / 64 * 64 + 64; };
  for (int i = 0; i < int(steps_.size()); ++i) {
    for (int o : steps_[i].out) {
      const int r = root(o);
      Slot& s = slots_[r];
      if (s.kind != Slot::kTemp || s.output || s.arena_offset >= 0 || first[r] != i) continue;
      const size_t need = align(s.nbytes());
      unplanned_bytes_ += need;
      int best = -1;
      for (int b = 0; b < int(free_list.size()); ++b)
        if (free_list[b].size >= need && (best < 0 || free_list[b].size < free_list[best].size))
          best = b;
      if (best >= 0) {
        s.arena_offset = int64_t(free_list[best].off);
        free_list[best].off += need;
        free_list[best].size -= need;
        if (free_list[best].size == 0) free_list.erase(free_list.begin() + best);
      } else {
        s.arena_offset = int64_t(top);
        top += need;
        if (top > (size_t(1) << 50))
          throw Error("model needs more than 2**50 bytes of intermediate values");
      }
    }
    for (int r : release[i]) {
      Slot& s = slots_[r];
      if (s.arena_offset < 0) continue;
      free_list.push_back({size_t(s.arena_offset), align(s.nbytes())});
      // Coalesce neighbours so later large values can reuse space.
      std::sort(free_list.begin(), free_list.end(),
                [](const Block& a, const Block& b) { return a.off < b.off; });
      std::vector<Block> merged;
      for (auto& b : free_list) {
        if (!merged.empty() && merged.back().off + merged.back().size == b.off)
          merged.back().size += b.size;
        else
          merged.push_back(b);
      }
      free_list.swap(merged);
    }
  }
  arena_bytes_ = top;
}

std::vector<Tensor> Model::run(const std::vector<Tensor>& inputs) const {
  return run_timed(inputs, nullptr);
}

std::vector<Tensor> Model::run_timed(const std::vector<Tensor>& inputs,
                                     std::vector<double>* step_seconds) const {
  if (inputs.size() != input_ids_.size())
    throw Error("model expects " + std::to_string(input_ids_.size()) + " inputs, got " +
                std::to_string(inputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Slot& s = slots_[input_ids_[i]];
    if (inputs[i].dtype != s.dtype)
      throw Error("input '" + s.name + "' must be " + dtype_name(s.dtype) + ", got " +
                  dtype_name(inputs[i].dtype));
    if (inputs[i].shape != s.shape)
      throw Error("input '" + s.name + "' must have shape " + shape_str(s.shape) + ", got " +
                  shape_str(inputs[i].shape));
  }
  std::unique_ptr<RunState> st;
  {
    std::lock_guard<std::mutex> g(arena_mutex_);
    if (!free_states_.empty()) {
      st = std::move(free_states_.back());
      free_states_.pop_back();
    }
  }
  if (!st) {
    st = std::make_unique<RunState>();
    st->arena = aligned_alloc_shared(arena_bytes_);
    st->ctx.slots = &slots_;
    st->ctx.ptr.assign(slots_.size(), nullptr);
  }
  ExecCtx& c = st->ctx;
  std::vector<Tensor> outs;
  outs.reserve(output_ids_.size());
  for (int id : output_ids_) outs.push_back(Tensor::empty(slots_[id].dtype, slots_[id].shape));
  char* base = static_cast<char*>(st->arena.get());
  void** ptr = c.ptr.data();
  for (size_t id = 0; id < bindings_.size(); ++id) {
    const SlotBinding& b = bindings_[id];
    switch (b.kind) {
      case SlotBinding::kConst: ptr[id] = const_cast<void*>(b.data); break;
      case SlotBinding::kInput: ptr[id] = inputs[b.index].data; break;
      case SlotBinding::kOutput: ptr[id] = outs[b.index].data; break;
      case SlotBinding::kArena: ptr[id] = base + b.index; break;
      case SlotBinding::kNone: break;
    }
  }
  if (step_seconds) {
    step_seconds->resize(steps_.size(), 0.0);
    for (size_t i = 0; i < steps_.size(); ++i) {
      check_cancelled();
      const auto t0 = std::chrono::steady_clock::now();
      steps_[i].fn(c);
      (*step_seconds)[i] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  } else {
    for (const Step& s : steps_) {
      check_cancelled();  // a task over its time budget stops between steps
      s.fn(c);
    }
  }
  {
    std::lock_guard<std::mutex> g(arena_mutex_);
    free_states_.push_back(std::move(st));
  }
  return outs;
}

std::vector<std::string> Model::steps() const {
  std::vector<std::string> v;
  for (const auto& s : steps_) v.push_back(s.node + ": " + s.kind);
  return v;
}

}  // namespace walle
