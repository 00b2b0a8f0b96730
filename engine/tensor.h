#pragma once
// A dense float32 tensor in row-major (NCHW) order. Storage is shared between copies of a
// Tensor (like a PyTorch tensor); clone() makes a deep copy. The device tag says where the
// bytes live: CUDA storage exists only in a build with the CUDA backend (SPADE_WITH_CUDA), comes
// from its caching allocator and is ordered on the engine's stream (kernels/cuda/device.h).
// data() of a CUDA tensor is a device pointer: element access (operator[]) is for CPU tensors
// only; to_vector(), clone(), slice0(), fill(), copy_from() and cat0() work on either device.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"

namespace spade {

enum class Device { CPU, CUDA };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[1, 3, 224, 224]"

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor of the given shape on the CPU.
  explicit Tensor(Shape shape);
  static Tensor zeros(Shape shape) { return Tensor(std::move(shape)); }
  static Tensor full(Shape shape, float value);
  static Tensor from_vector(Shape shape, const std::vector<float>& values);
  // A tensor of the given shape whose contents are not initialised (for outputs that are
  // fully overwritten).
  static Tensor empty(Shape shape);
  static Tensor empty(Shape shape, Device device);
  static Tensor zeros(Shape shape, Device device);

  bool defined() const { return storage_ != nullptr; }
  // True when no other Tensor shares this storage, so it may be overwritten in place.
  bool sole_owner() const { return storage_ && storage_.use_count() == 1; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  Device device() const { return device_; }

  float* data() { return data_; }
  const float* data() const { return data_; }
  float& operator[](int64_t i) { return data_[i]; }
  float operator[](int64_t i) const { return data_[i]; }
  std::vector<float> to_vector() const;

  // This tensor on `device`: itself when it is already there, else a copy (blocking).
  Tensor to(Device device) const;
  Tensor cpu() const { return to(Device::CPU); }

  Tensor clone() const;
  // Same storage, new shape with the same number of elements.
  Tensor reshape(Shape shape) const;
  // Copy of images [begin, end) along dimension 0.
  Tensor slice0(int64_t begin, int64_t end) const;
  void fill(float value);
  void copy_from(const Tensor& other);  // same numel required

 private:
  Shape shape_;
  int64_t numel_ = 0;
  Device device_ = Device::CPU;
  std::shared_ptr<float> storage_;
  float* data_ = nullptr;
};

// Stacks tensors of equal shape along a new leading dimension, or concatenates along dim 0
// when they already have a batch dimension of their own (cat0).
Tensor cat0(const std::vector<Tensor>& parts);

// Frees the large blocks that tensors returned for reuse (see tensor.cpp).
void release_host_cache();

// Bytes held by CPU tensors (as asked for, before rounding): now, and the most since the last
// reset_host_tensor_peak() (which sets it to what is held now).
struct HostTensorMemory {
  int64_t live = 0;
  int64_t peak = 0;
};
HostTensorMemory host_tensor_memory();
void reset_host_tensor_peak();

// Whether this build has the CUDA backend and a usable GPU; the default device of commands.
bool cuda_backend_available();
Device default_device();
// "cpu", "cuda" or "auto" (the default device) -> Device; throws spade::Error naming the choices,
// or saying why CUDA cannot be used.
Device parse_device(const std::string& name);
// Waits for the device's queued work (no-op on the CPU): for timings.
void synchronize(Device device);

}  // namespace spade
