#include "tensor.h"

#include "budget.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <sstream>

namespace walle {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::b8: return 1;
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::b8: return "bool";
    case DType::u8: return "uint8";
  }
  return "?";
}

DType dtype_from_name(const std::string& s) {
  if (s == "float32") return DType::f32;
  if (s == "int32") return DType::i32;
  if (s == "int64") return DType::i64;
  if (s == "bool") return DType::b8;
  if (s == "uint8") return DType::u8;
  throw Error("unsupported dtype '" + s + "': use float32, int32, int64, bool or uint8");
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s)
    if (__builtin_mul_overflow(n, d, &n)) throw Error("element count of " + shape_str(s) + " overflows");
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  if (s.size() == 1) o << ",";
  o << ")";
  return o.str();
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size(), 1);
  for (int i = int(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

std::shared_ptr<void> aligned_alloc_shared(size_t bytes) {
  // Round up so vector tails may over-read within the allocation, and never ask for 0.
  size_t n = ((bytes + 63) / 64) * 64 + 64;
  std::shared_ptr<Account> acct = charge(int64_t(n));  // throws past the task's cap
  void* p = std::aligned_alloc(64, n);
  if (!p) {
    if (acct) release(*acct, int64_t(n));
    throw std::bad_alloc();
  }
  if (!acct) return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return std::shared_ptr<void>(p, [acct, n](void* q) {
    std::free(q);
    release(*acct, int64_t(n));
  });
}

Tensor Tensor::empty(DType t, const Shape& s) {
  for (auto d : s)
    if (d < 0) throw Error("negative dimension in shape " + shape_str(s));
  Tensor x;
  x.dtype = t;
  x.shape = s;
  x.owner = aligned_alloc_shared(x.nbytes());
  x.data = x.owner.get();
  return x;
}

Tensor Tensor::zeros(DType t, const Shape& s) {
  Tensor x = empty(t, s);
  std::memset(x.data, 0, x.nbytes());
  return x;
}

Tensor Tensor::reshaped(const Shape& s) const {
  if (walle::numel(s) != numel())
    throw Error("cannot reshape " + shape_str(shape) + " to " + shape_str(s));
  Tensor x = *this;
  x.shape = s;
  return x;
}

namespace {
std::mutex exchange_mutex;
struct Exported {
  uint64_t owner;
  Tensor tensor;
};
std::unordered_map<uint64_t, Exported>& exchange() {
  static auto* table = new std::unordered_map<uint64_t, Exported>();  // outlives exit-time frees
  return *table;
}
uint64_t next_handle = 1;
}  // namespace

uint64_t export_tensor(const Tensor& t, uint64_t owner) {
  Tensor owned = t.borrowed ? t.clone() : t;
  std::lock_guard<std::mutex> g(exchange_mutex);
  const uint64_t h = next_handle++;
  exchange().emplace(h, Exported{owner, std::move(owned)});
  return h;
}

Tensor import_tensor(uint64_t handle, uint64_t owner) {
  std::lock_guard<std::mutex> g(exchange_mutex);
  auto it = exchange().find(handle);
  if (it == exchange().end() || it->second.owner != owner)
    throw Error("no exported tensor " + std::to_string(handle) + " for this owner");
  Tensor t = std::move(it->second.tensor);
  exchange().erase(it);
  return t;
}

bool drop_exported(uint64_t handle, uint64_t owner) {
  Tensor doomed;  // freed after the lock is released
  std::lock_guard<std::mutex> g(exchange_mutex);
  auto it = exchange().find(handle);
  if (it == exchange().end() || it->second.owner != owner) return false;
  doomed = std::move(it->second.tensor);
  exchange().erase(it);
  return true;
}

Tensor Tensor::clone() const {
  Tensor x = empty(dtype, shape);
  std::memcpy(x.data, data, nbytes());
  return x;
}

}  // namespace walle
