// Internals shared by the files of the CUDA backend (cuda_backend.cpp, cuda_backend_sequence.cpp):
// its state and the accessors its kernels read their tensors with.
#pragma once

#include <memory>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_memory.hpp"
#include "backends/cuda/gemm.hpp"
#include "backends/op_shapes.hpp"

namespace magix::cuda {

struct CudaBackend::State {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  std::shared_ptr<DeviceAllocator> allocator;
  std::unique_ptr<Gemm> gemm;
};

// Tensor accessors of the kernels (their arguments checked by the op: backends/op_checks.cpp).
namespace access {

using backends::heads;
using backends::Heads;
using backends::mat;
using backends::Mat;
using backends::rope_dims;
using backends::RopeDims;

inline bool is(const Tensor& t, DType d) {
  return t.dtype() == d;
}

// Device pointers (the backend's own storage; never dereferenced on the host).
inline float* f32(Tensor& t) {
  return t.data<float>();
}
inline const float* f32(const Tensor& t) {
  return t.data<float>();
}
inline const float* f32_or_null(const Tensor* t) {
  return t ? t->data<float>() : nullptr;
}
inline const int32_t* i32(const Tensor& t) {
  return t.data<int32_t>();
}
inline void* raw(Tensor& t) {
  return t.bytes();
}
inline const void* raw(const Tensor& t) {
  return t.bytes();
}

}  // namespace access
}  // namespace magix::cuda
