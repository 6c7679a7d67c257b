#include "model_check.h"

#include <atomic>
#include <cmath>
#include <map>
#include <set>

namespace walle {

namespace {

std::atomic<int64_t> g_total_bytes{ModelLimits{}.total_bytes};
std::atomic<int64_t> g_value_bytes{ModelLimits{}.value_bytes};

constexpr int64_t kBig = int64_t(1) << 20;  // generous bound for window sizes, counts
constexpr size_t kMaxNodes = size_t(1) << 20;
constexpr size_t kMaxNodeValues = size_t(1) << 16;  // inputs or outputs of one node

enum class AK { kInt, kFloat, kString, kInts, kFloats, kTensor };

struct AttrRule {
  const char* name;
  AK kind;
  int64_t lo = INT64_MIN, hi = INT64_MAX;  // ints: every element in [lo, hi]
  size_t min_len = 0, max_len = SIZE_MAX;   // lists
  const char* choices = nullptr;            // strings: '|'-separated allowed values
};

struct OpSpec {
  size_t min_in = 1, max_in = 1, min_out = 1, max_out = 1;
  bool all_inputs_required = false;  // variadic ops: no omitted input anywhere
  std::vector<AttrRule> attrs;
};

const char* kind_name(AK k) {
  switch (k) {
    case AK::kInt: return "an integer";
    case AK::kFloat: return "a number";
    case AK::kString: return "a string";
    case AK::kInts: return "a list of integers";
    case AK::kFloats: return "a list of numbers";
    case AK::kTensor: return "a tensor";
  }
  return "?";
}

const char* attr_kind_name(Attr::Kind k) {
  switch (k) {
    case Attr::kInt: return "an integer";
    case Attr::kFloat: return "a number";
    case Attr::kString: return "a string";
    case Attr::kInts: return "a list of integers";
    case Attr::kFloats: return "a list of numbers";
    case Attr::kTensor: return "a tensor";
  }
  return "?";
}

AttrRule I(const char* n, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) {
  return {n, AK::kInt, lo, hi};
}
AttrRule F(const char* n) { return {n, AK::kFloat}; }
AttrRule S(const char* n, const char* choices) { return {n, AK::kString, 0, 0, 0, SIZE_MAX, choices}; }
AttrRule Is(const char* n, int64_t lo, int64_t hi, size_t min_len, size_t max_len) {
  return {n, AK::kInts, lo, hi, min_len, max_len};
}
AttrRule Fs(const char* n) { return {n, AK::kFloats}; }
AttrRule T(const char* n) { return {n, AK::kTensor}; }
AttrRule Bool(const char* n) { return I(n, 0, 1); }

OpSpec spec(size_t min_in, size_t max_in, std::vector<AttrRule> attrs = {}, size_t min_out = 1,
            size_t max_out = 1) {
  OpSpec s;
  s.min_in = min_in;
  s.max_in = max_in;
  s.min_out = min_out;
  s.max_out = max_out;
  s.attrs = std::move(attrs);
  return s;
}

const std::map<std::string, OpSpec>& op_specs() {
  static const std::map<std::string, OpSpec> specs = [] {
    std::map<std::string, OpSpec> m;
    const AttrRule act_lo = F("activation_min"), act_hi = F("activation_max");
    const AttrRule auto_pad = S("auto_pad", "NOTSET|SAME_UPPER|SAME_LOWER|VALID");
    const AttrRule window[] = {Is("strides", 1, kBig, 1, 2), Is("dilations", 1, kBig, 1, 2),
                               Is("pads", 0, kBig, 2, 4), Is("kernel_shape", 1, kBig, 1, 2)};
    m["Conv"] = spec(2, 4, {I("group", 1, kBig), window[0], window[1], window[2], window[3],
                            auto_pad, act_lo, act_hi});
    for (const char* op : {"MaxPool", "AveragePool"})
      m[op] = spec(1, 1, {window[0], window[1], window[2], window[3], auto_pad, Bool("ceil_mode"),
                          Bool("count_include_pad"), Bool("storage_order")},
                   1, 2);
    for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) m[op] = spec(1, 1);
    for (const char* op : {"Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs",
                           "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Sign",
                           "Softplus", "HardSwish", "Softsign", "Mish", "Not"})
      m[op] = spec(1, 1);
    m["Clip"] = spec(1, 3, {F("min"), F("max")});
    m["LeakyRelu"] = spec(1, 1, {F("alpha")});
    m["PRelu"] = spec(2, 2);
    m["HardSigmoid"] = spec(1, 1, {F("alpha"), F("beta")});
    m["Gelu"] = spec(1, 1, {S("approximate", "none|tanh")});
    m["Elu"] = spec(1, 1, {F("alpha")});
    m["Selu"] = spec(1, 1, {F("alpha"), F("gamma")});
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater",
                           "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"})
      m[op] = spec(2, 2);
    m["Mod"] = spec(2, 2, {Bool("fmod")});
    for (const char* op : {"Sum", "Mean", "Max", "Min"}) {
      m[op] = spec(1, kMaxNodeValues);
      m[op].all_inputs_required = true;
    }
    m["Where"] = spec(3, 3);
    m["Cast"] = spec(1, 1, {I("to"), I("saturate"), S("round_mode", nullptr)});
    m["CastLike"] = spec(2, 2, {I("saturate"), S("round_mode", nullptr)});
    m["Identity"] = spec(1, 1);
    m["Dropout"] = spec(1, 3, {F("ratio"), I("seed")}, 1, 2);
    m["Gather"] = spec(2, 2, {I("axis")});
    m["MatMul"] = spec(2, 4, {act_lo, act_hi});
    m["Gemm"] = spec(2, 4, {Bool("transA"), Bool("transB"), F("alpha"), F("beta"), act_lo, act_hi});
    m["LRN"] = spec(1, 1, {I("size", 1, kBig), F("alpha"), F("beta"), F("bias")});
    m["RMSNormalization"] = spec(2, 2, {I("axis"), F("epsilon"), I("stash_type")});
    m["LayerNormalization"] = spec(1, 3, {I("axis"), F("epsilon"), I("stash_type")}, 1, 3);
    m["InstanceNormalization"] = spec(3, 3, {F("epsilon")});
    m["BatchNormalization"] =
        spec(5, 5, {F("epsilon"), F("momentum"), Bool("training_mode"), Bool("spatial")}, 1, 3);
    for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                           "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"})
      m[op] = spec(1, 2, {Is("axes", INT64_MIN, INT64_MAX, 0, kMaxModelRank), Bool("keepdims"),
                          Bool("noop_with_empty_axes")});
    for (const char* op : {"ArgMax", "ArgMin"})
      m[op] = spec(1, 1, {I("axis"), Bool("keepdims"), Bool("select_last_index")});
    m["Reshape"] = spec(2, 2, {Bool("allowzero")});
    m["Flatten"] = spec(1, 1, {I("axis")});
    m["Squeeze"] = spec(1, 2, {Is("axes", INT64_MIN, INT64_MAX, 0, kMaxModelRank)});
    m["Unsqueeze"] = spec(1, 2, {Is("axes", INT64_MIN, INT64_MAX, 0, kMaxModelRank)});
    m["Transpose"] = spec(1, 1, {Is("perm", 0, kMaxModelRank - 1, 0, kMaxModelRank)});
    m["Concat"] = spec(1, kMaxNodeValues, {I("axis")});
    m["Concat"].all_inputs_required = true;
    m["Split"] = spec(1, 2, {I("axis"), Is("split", 0, INT64_MAX, 1, kMaxNodeValues),
                             I("num_outputs", 1, int64_t(kMaxNodeValues))},
                      1, kMaxNodeValues);
    m["Slice"] = spec(1, 5, {Is("starts", INT64_MIN, INT64_MAX, 0, kMaxModelRank),
                             Is("ends", INT64_MIN, INT64_MAX, 0, kMaxModelRank),
                             Is("axes", INT64_MIN, INT64_MAX, 0, kMaxModelRank)});
    m["Pad"] = spec(1, 4, {S("mode", "constant|reflect|edge"),
                           Is("pads", INT64_MIN, INT64_MAX, 0, 2 * kMaxModelRank), F("value")});
    m["Expand"] = spec(2, 2);
    m["Tile"] = spec(2, 2);
    m["Shape"] = spec(1, 1, {I("start"), I("end")});
    m["Size"] = spec(1, 1);
    m["ConstantOfShape"] = spec(1, 1, {T("value")});
    m["Range"] = spec(3, 3);
    m["Constant"] = spec(0, 0, {T("value"), F("value_float"), I("value_int"),
                                Is("value_ints", INT64_MIN, INT64_MAX, 0, kBig), Fs("value_floats")});
    for (const char* op : {"Softmax", "LogSoftmax"}) m[op] = spec(1, 1, {I("axis"), Bool("legacy_axes")});
    return m;
  }();
  return specs;
}

std::string where(const NodeDef& n) { return n.op + " node '" + n.name + "'"; }

bool in_choices(const std::string& v, const char* choices) {
  std::string c(choices);
  size_t start = 0;
  while (start <= c.size()) {
    size_t end = c.find('|', start);
    if (end == std::string::npos) end = c.size();
    if (c.compare(start, end - start, v) == 0 && v.size() == end - start) return true;
    start = end + 1;
  }
  return false;
}

void check_attr(const NodeDef& n, const AttrRule& r, const Attr& a) {
  const std::string at = where(n) + ": attribute '" + r.name + "'";
  bool kind_ok = false;
  switch (r.kind) {
    case AK::kInt: kind_ok = a.kind == Attr::kInt; break;
    case AK::kFloat: kind_ok = a.kind == Attr::kFloat || a.kind == Attr::kInt; break;
    case AK::kString: kind_ok = a.kind == Attr::kString; break;
    case AK::kInts: kind_ok = a.kind == Attr::kInts; break;
    // An empty or all-integer list arrives as integers.
    case AK::kFloats: kind_ok = a.kind == Attr::kFloats || a.kind == Attr::kInts; break;
    case AK::kTensor: kind_ok = a.kind == Attr::kTensor; break;
  }
  if (!kind_ok)
    throw ModelError(at + " must be " + kind_name(r.kind) + ", got " + attr_kind_name(a.kind));
  if (r.kind == AK::kInt && (a.i < r.lo || a.i > r.hi))
    throw ModelError(at + " is " + std::to_string(a.i) + ", outside [" + std::to_string(r.lo) +
                     ", " + std::to_string(r.hi) + "]");
  if (r.kind == AK::kString && r.choices && !in_choices(a.s, r.choices))
    throw ModelError(at + " is '" + a.s.substr(0, 64) + "', expected one of " + r.choices);
  if (r.kind == AK::kInts) {
    if (a.ints.size() < r.min_len || a.ints.size() > r.max_len)
      throw ModelError(at + " has " + std::to_string(a.ints.size()) + " entries, expected " +
                       std::to_string(r.min_len) + " to " + std::to_string(r.max_len));
    for (int64_t v : a.ints)
      if (v < r.lo || v > r.hi)
        throw ModelError(at + " has entry " + std::to_string(v) + ", outside [" +
                         std::to_string(r.lo) + ", " + std::to_string(r.hi) + "]");
  }
  if (r.kind == AK::kFloats && a.floats.size() > size_t(kBig))
    throw ModelError(at + " has too many entries");
  if (r.kind == AK::kTensor) {
    if (a.t.rank() > kMaxModelRank)
      throw ModelError(at + " has rank " + std::to_string(a.t.rank()) + " (at most " +
                       std::to_string(kMaxModelRank) + ")");
    checked_value_bytes(a.t.dtype, a.t.shape, at);
    if (!a.t.data && a.t.numel() != 0) throw ModelError(at + " has no data");
  }
}

// Rules between attributes of one node that single-attribute rules cannot express.
void check_node_rules(const NodeDef& n) {
  const std::string w = where(n);
  auto ints = [&](const char* k) -> const std::vector<int64_t>* {
    auto it = n.attrs.find(k);
    return it == n.attrs.end() ? nullptr : &it->second.ints;
  };
  if (n.op == "Conv" || n.op == "MaxPool" || n.op == "AveragePool") {
    // Every window attribute names one entry per spatial axis (pads: two).
    size_t spatial = 0;
    for (const char* k : {"strides", "dilations", "kernel_shape"})
      if (const auto* v = ints(k)) {
        if (spatial && v->size() != spatial)
          throw ModelError(w + ": attributes strides, dilations and kernel_shape disagree on "
                               "the number of spatial axes");
        spatial = v->size();
      }
    if (const auto* p = ints("pads")) {
      if (p->size() % 2 || (spatial && p->size() != 2 * spatial))
        throw ModelError(w + ": attribute 'pads' needs a begin and an end per spatial axis");
    }
    if (n.op != "Conv" && !ints("kernel_shape"))
      throw ModelError(w + ": attribute 'kernel_shape' is required");
  }
  if (n.op == "Transpose") {
    if (const auto* p = ints("perm")) {
      std::set<int64_t> seen(p->begin(), p->end());
      if (seen.size() != p->size() || (!p->empty() && *seen.rbegin() != int64_t(p->size()) - 1))
        throw ModelError(w + ": attribute 'perm' is not a permutation of 0.." +
                         std::to_string(int64_t(p->size()) - 1));
    }
  }
  if (n.op == "Slice" && n.inputs.size() == 1) {  // opset < 10: starts / ends attributes
    const auto* s = ints("starts");
    const auto* e = ints("ends");
    const auto* a = ints("axes");
    if (!s || !e || s->size() != e->size() || (a && a->size() != s->size()))
      throw ModelError(w + ": attributes 'starts', 'ends' (and 'axes') must have equal lengths");
  }
  if (n.op == "Slice" && n.inputs.size() > 1 && (n.inputs.size() < 3 || n.inputs[2].empty()))
    throw ModelError(w + ": inputs 'starts' and 'ends' come together");
  if (n.op == "ConstantOfShape" && n.has("value")) {
    if (n.attrs.at("value").t.numel() != 1)
      throw ModelError(w + ": attribute 'value' must hold exactly one element");
  }
  if (n.op == "Constant") {
    int values = 0;
    for (const char* k : {"value", "value_float", "value_int", "value_ints", "value_floats"})
      values += n.has(k);
    if (values != 1)
      throw ModelError(w + ": needs exactly one of value, value_float, value_int, value_ints, "
                           "value_floats");
  }
  if (n.op == "Split") {
    if (const auto* s = ints("split"); s && s->size() != n.outputs.size())
      throw ModelError(w + ": attribute 'split' has " + std::to_string(s->size()) +
                       " entries for " + std::to_string(n.outputs.size()) + " outputs");
  }
}

std::string count_range(size_t lo, size_t hi) {
  if (lo == hi) return std::to_string(lo);
  if (hi >= kMaxNodeValues) return "at least " + std::to_string(lo);
  return std::to_string(lo) + " to " + std::to_string(hi);
}

}  // namespace

ModelLimits model_limits() { return {g_total_bytes.load(), g_value_bytes.load()}; }

void set_model_limits(const ModelLimits& l) {
  if (l.total_bytes <= 0 || l.value_bytes <= 0)
    throw Error("model limits must be positive byte counts");
  g_total_bytes.store(l.total_bytes);
  g_value_bytes.store(l.value_bytes);
}

int64_t checked_value_bytes(DType t, const Shape& shape, const std::string& what) {
  if (shape.size() > size_t(kMaxModelRank))
    throw ModelError(what + " has rank " + std::to_string(shape.size()) + " (at most " +
                     std::to_string(kMaxModelRank) + ")");
  int64_t n = int64_t(dtype_size(t));
  bool overflow = false;
  for (int64_t d : shape) {
    if (d < 0)
      throw ModelError(what + " has a negative dimension in shape " + shape_str(shape));
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  const int64_t limit = g_value_bytes.load();
  if (overflow || n > limit)
    throw ModelTooLarge(what + " of shape " + shape_str(shape) + " would take " +
                        (overflow ? std::string("more than 2**63") : std::to_string(n)) +
                        " bytes; the limit per value is " + std::to_string(limit) +
                        " (walle_engine.set_model_limits)");
  return n;
}

void check_total_bytes(int64_t bytes, const std::string& what) {
  const int64_t limit = g_total_bytes.load();
  if (bytes < 0 || bytes > limit)
    throw ModelTooLarge(what + " needs " + std::to_string(bytes) +
                        " bytes; the limit per model is " + std::to_string(limit) +
                        " (walle_engine.set_model_limits)");
}

void check_model(const GraphDef& g) {
  if (g.nodes.size() > kMaxNodes)
    throw ModelError("the model has " + std::to_string(g.nodes.size()) + " nodes (at most " +
                     std::to_string(kMaxNodes) + ")");
  std::set<std::string> defined;
  auto define = [&](const std::string& name, const std::string& by) {
    if (name.empty()) throw ModelError(by + " defines a value with an empty name");
    if (!defined.insert(name).second)
      throw ModelError(by + " defines '" + name.substr(0, 256) +
                       "', which is already defined: every value must be defined once");
  };
  int64_t const_bytes = 0;
  for (const auto& in : g.inputs) {
    define(in.name, "graph input '" + in.name.substr(0, 256) + "'");
    checked_value_bytes(in.dtype, in.shape, "graph input '" + in.name.substr(0, 256) + "'");
  }
  for (const auto& [name, t] : g.constants) {
    const std::string what = "constant '" + name.substr(0, 256) + "'";
    define(name, what);
    const_bytes += checked_value_bytes(t.dtype, t.shape, what);
    if (!t.data && t.numel() != 0) throw ModelError(what + " has no data");
    check_total_bytes(const_bytes, "the model's constants");
  }
  const auto& specs = op_specs();
  const auto& reg = op_registry();
  for (const NodeDef& n : g.nodes) {
    const std::string w = where(n);
    if (!reg.count(n.op))
      throw ModelError("operator " + n.op.substr(0, 256) + " (node '" + n.name.substr(0, 256) +
                       "') is not supported by walle_engine");
    auto sp = specs.find(n.op);
    if (sp == specs.end()) throw ModelError(w + ": no structural rules for this operator");
    const OpSpec& s = sp->second;
    if (n.inputs.size() < s.min_in || n.inputs.size() > s.max_in)
      throw ModelError(w + " has " + std::to_string(n.inputs.size()) + " inputs, " + n.op +
                       " takes " + count_range(s.min_in, s.max_in));
    if (n.outputs.size() < s.min_out || n.outputs.size() > s.max_out)
      throw ModelError(w + " has " + std::to_string(n.outputs.size()) + " outputs, " + n.op +
                       " gives " + count_range(s.min_out, s.max_out));
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const std::string& name = n.inputs[i];
      if (name.empty()) {
        if (i < s.min_in || s.all_inputs_required)
          throw ModelError(w + ": input " + std::to_string(i) + " is required but omitted");
        continue;
      }
      if (!defined.count(name))
        throw ModelError(w + " reads '" + name.substr(0, 256) +
                         "', which is not defined before it (no graph input, constant or "
                         "earlier node output has that name)");
    }
    if (n.outputs.empty() || n.outputs[0].empty())
      throw ModelError(w + ": its first output must be named");
    for (const auto& [k, a] : n.attrs) {
      for (const auto& r : s.attrs)
        if (k == r.name) check_attr(n, r, a);
    }
    check_node_rules(n);
    for (const auto& o : n.outputs)
      if (!o.empty()) define(o, w);
  }
  for (const auto& o : g.outputs)
    if (!defined.count(o))
      throw ModelError("graph output '" + o.substr(0, 256) + "' is never produced");
}

}  // namespace walle
