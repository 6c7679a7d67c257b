// Semi-auto search. An op decomposition lists its candidate implementations (algorithm x
// SIMD level x GEMM micro-kernel) with a cost-model estimate; the search keeps the
// cheapest few, times them on the op's real shapes with a one-node model, and remembers
// the winner per (CPU signature, op signature) so the next load — or another device of
// the same model, through an imported profile — skips the timing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>

#include "graph.h"
#include "threadpool.h"

namespace walle {

std::string Choice::str() const {
  return algo + ":" + isa_name(isa) + ":" + std::to_string(gemm_variant);
}

Choice Choice::parse(const std::string& s) {
  Choice c;
  const auto a = s.find(':'), b = s.rfind(':');
  if (a == std::string::npos || a == b) throw Error("malformed tuning choice '" + s + "'");
  c.algo = s.substr(0, a);
  c.isa = isa_from_name(s.substr(a + 1, b - a - 1));
  c.gemm_variant = std::stoi(s.substr(b + 1));
  return c;
}

namespace {

std::mutex& store_mutex() {
  static std::mutex m;
  return m;
}

std::map<std::pair<std::string, std::string>, TuningRecord>& store() {
  static std::map<std::pair<std::string, std::string>, TuningRecord> s;
  return s;
}

double time_model(const Model& m, int reps) {
  std::vector<Tensor> ins;
  for (const auto& vi : m.inputs()) {
    Tensor t = Tensor::zeros(vi.dtype, vi.shape);
    if (vi.dtype == DType::f32)
      for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = float((i * 7) % 13) * 0.1f - 0.6f;
    ins.push_back(t);
  }
  m.run(ins);  // warm-up: first-touch of the arena, caches
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    m.run(ins);
    const double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, dt);
  }
  return best;
}

}  // namespace

std::vector<TuningRecord> tuning_records() {
  std::lock_guard<std::mutex> g(store_mutex());
  std::vector<TuningRecord> v;
  for (auto& [k, r] : store()) v.push_back(r);
  return v;
}

void tuning_add(const std::vector<TuningRecord>& recs) {
  std::lock_guard<std::mutex> g(store_mutex());
  for (const auto& r : recs) {
    Choice::parse(r.choice);  // validate before accepting
    store()[{r.cpu, r.op}] = r;
  }
}

void tuning_clear() {
  std::lock_guard<std::mutex> g(store_mutex());
  store().clear();
}

Choice Builder::choose(const std::string& sig_in, std::vector<Candidate> cands) {
  // The key includes the thread count and a digest of the candidate set, so a decision
  // made before an engine upgrade added (or removed) an implementation is re-tuned.
  uint32_t digest = 2166136261u;  // FNV-1a
  for (const auto& c : cands)
    for (char ch : c.choice.str()) digest = (digest ^ uint8_t(ch)) * 16777619u;
  // A decision made with the SIMD level capped below the CPU's (set_isa, max_isa) chose
  // among fewer kernels: it is kept apart, or an AVX2 pick tuned under a cap would be
  // reused on the same CPU's uncapped runs (the cache is per CPU signature, which names the
  // detected level).
  const Isa cap = std::min(current_isa(), m_.opts_.max_isa);
  if (cap != detect_isa())
    for (char ch : std::string("cap:") + isa_name(cap)) digest = (digest ^ uint8_t(ch)) * 16777619u;
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", digest);
  // "p2": timings at more than one thread predate the polling pool (threadpool.cpp) when
  // the suffix is missing, and chose single-threaded splits that now lose: re-tuned.
  const int threads = num_threads();
  const std::string sig = sig_in + "|t" + std::to_string(threads) + (threads > 1 ? "p2" : "") +
                          "|" + hex;
  PlanEntry pe;
  pe.node = node_.name;
  pe.op = node_.op;
  pe.signature = sig;
  auto forced = m_.opts_.forced.find(sig);
  if (forced != m_.opts_.forced.end()) {
    // Only one of this op's own candidates: another algorithm or an ISA this CPU lacks
    // would run kernels on shapes (or instructions) they were not chosen for.
    for (const auto& c : cands)
      if (c.choice.str() == forced->second) return Choice::parse(forced->second);
    throw Error("forced choice '" + forced->second + "' is not a candidate for " + sig);
  }

  cands.erase(std::remove_if(cands.begin(), cands.end(),
                             [&](const Candidate& c) { return c.choice.isa > cap; }),
              cands.end());
  if (cands.empty()) throw Error("no implementation of " + node_.op + " for this CPU");
  std::stable_sort(cands.begin(), cands.end(),
                   [](const Candidate& a, const Candidate& b) { return a.cost < b.cost; });
  for (const auto& c : cands) pe.candidates.push_back(c.choice.str());
  Choice pick = cands[0].choice;
  pe.cost = cands[0].cost;
  pe.source = cands.size() == 1 ? "only" : "model";
  const std::string cpu = cpu_signature();
  bool cached = false;
  {
    std::lock_guard<std::mutex> g(store_mutex());
    auto it = store().find({cpu, sig});
    if (it != store().end()) {
      for (const auto& c : cands)
        if (c.choice.str() == it->second.choice) {
          pick = c.choice;
          pe.cost = c.cost;
          pe.measured = it->second.micros * 1e-6;
          pe.source = "cache";
          cached = true;
        }
    }
  }
  if (!cached && cands.size() > 1 && m_.opts_.tune) {
    // One-node model per survivor: the same decomposition code path, forced to a choice.
    GraphDef g;
    NodeDef n = node_;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (n.inputs[i].empty() || i >= in_ids.size()) continue;
      const int id = in_ids[i];
      const std::string name = "in" + std::to_string(i);
      n.inputs[i] = name;
      if (is_const(id)) g.constants[name] = const_data(id);
      else g.inputs.push_back({name, dtype(id), shape(id), slot(id).nchwc, slot(id).channels});
    }
    for (size_t i = 0; i < n.outputs.size(); ++i)
      n.outputs[i] = n.outputs[i].empty() ? "" : "out" + std::to_string(i);
    g.outputs.push_back(n.outputs[0]);
    g.nodes.push_back(n);
    const size_t top = std::min<size_t>(cands.size(), size_t(std::max(1, m_.opts_.tune_top)));
    double best = 1e30;
    for (size_t i = 0; i < top; ++i) {
      ModelOptions o;
      o.tune = false;
      o.nchwc = m_.opts_.nchwc;
      o.max_isa = m_.opts_.max_isa;
      o.keep_nchwc_outputs = true;
      o.forced[sig] = cands[i].choice.str();
      double dt = 1e30;
      try {
        Model trial(g, o);
        dt = time_model(trial, 3);
      } catch (const Error&) {
        continue;  // a candidate that cannot build for these shapes is simply skipped
      }
      if (dt < best) {
        best = dt;
        pick = cands[i].choice;
        pe.cost = cands[i].cost;
      }
    }
    pe.measured = best;
    pe.source = "timed";
    std::lock_guard<std::mutex> gl(store_mutex());
    store()[{cpu, sig}] = TuningRecord{cpu, sig, pick.str(), best * 1e6};
  }
  pe.choice = pick.str();
  m_.plan_.push_back(pe);
  return pick;
}

}  // namespace walle
