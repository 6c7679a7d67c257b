// Tensor: a typed, shaped view of a contiguous buffer with shared ownership.
// The buffer is either allocated by the engine (64-byte aligned for AVX-512 loads) or
// borrowed from a Python object through the buffer protocol, which makes numpy
// interchange zero-copy in both directions.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace walle {

// u8 is a storage type (images): cast, raster, select and argmax take it; arithmetic,
// reductions and matmul refuse it, so callers cast to int32/float32 instead of wrapping.
enum class DType : uint8_t { f32 = 0, i32 = 1, i64 = 2, b8 = 3, u8 = 4 };

using Shape = std::vector<int64_t>;

// Engine-wide size limits. Every shape a tensor, a view, a raster or a graph value takes is
// validated against them with overflow-checked arithmetic, so a size computation can never
// wrap into a small allocation under a huge shape: at most kMaxDims dimensions, every dim
// >= 0, at most kMaxElements elements (2**40: 8 TiB of int64, far past any device, yet
// small enough that elements * 8 bytes and offsets + extents stay far from int64 overflow).
constexpr int kMaxDims = 16;
constexpr int64_t kMaxElements = int64_t(1) << 40;

// a * b and a + b, or an Error naming `what` when the result does not fit in int64.
int64_t checked_mul(int64_t a, int64_t b, const char* what = "size");
int64_t checked_add(int64_t a, int64_t b, const char* what = "size");
// Throws unless `s` is a valid tensor shape (see the limits above); returns its element
// count. `what` names the value in the message.
int64_t check_shape(const Shape& s, const std::string& what = "shape");
// The same test without throwing.
bool valid_numel(const Shape& s);

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType dtype_from_name(const std::string& s);
int64_t numel(const Shape& s);
std::string shape_str(const Shape& s);

// Contiguous row-major strides in elements.
Shape contiguous_strides(const Shape& s);

struct Tensor {
  DType dtype = DType::f32;
  Shape shape;
  std::shared_ptr<void> owner;  // keeps the storage alive
  void* data = nullptr;
  bool readonly = false;  // borrowed from a read-only buffer (a memory-mapped model)
  // Storage belongs to a Python object (the buffer protocol): releasing it needs that
  // object's interpreter, so such a tensor never crosses to another interpreter as is.
  bool borrowed = false;

  int64_t numel() const { return walle::numel(shape); }
  size_t nbytes() const {  // overflow-checked: a wrapped size would allocate too little
    size_t n;
    if (__builtin_mul_overflow(size_t(numel()), dtype_size(dtype), &n))
      throw std::overflow_error("tensor byte size overflows");
    return n;
  }
  int64_t dim(int i) const { return shape[i < 0 ? i + int(shape.size()) : i]; }
  int rank() const { return int(shape.size()); }
  template <class T> T* ptr() const { return static_cast<T*>(data); }

  static Tensor empty(DType t, const Shape& s);
  static Tensor zeros(DType t, const Shape& s);
  Tensor reshaped(const Shape& s) const;  // shares storage
  Tensor clone() const;
};

// Hand-off between interpreters (the VM's task results): a process-wide table of
// engine-owned tensors by handle. Export a tensor in one interpreter, import it in
// another: the storage is shared, never copied (a borrowed tensor is copied once on
// export). Import removes the entry; drop discards one nobody will import. `owner` is a
// token the importer chose for one run: import and drop find a handle only under the
// owner it was exported with, so a forged or guessed handle never reaches another run's
// tensor.
uint64_t export_tensor(const Tensor& t, uint64_t owner = 0);
Tensor import_tensor(uint64_t handle, uint64_t owner = 0);
bool drop_exported(uint64_t handle, uint64_t owner = 0);

// 64-byte aligned allocation with a deleter, used for tensors and the arena.
std::shared_ptr<void> aligned_alloc_shared(size_t bytes);

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace walle
