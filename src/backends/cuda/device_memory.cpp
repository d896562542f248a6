#include "backends/cuda/device_memory.hpp"

#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_check.hpp"

namespace magix::cuda {

DeviceAllocator::~DeviceAllocator() {
  // Every Tensor holds a reference: nothing is in use here. At process exit the runtime may be
  // gone already; cudaFree's error is ignored then.
  for (auto& [size, blocks] : free_)
    for (void* p : blocks) (void)cudaFree(p);
}

size_t DeviceAllocator::block_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{1} << 20;
  if (bytes == 0) return kSmall;
  if (bytes <= kLarge) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

std::shared_ptr<std::byte[]> DeviceAllocator::allocate(size_t bytes) {
  const size_t size = block_size(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_ -= size;
    }
  }
  if (p == nullptr) {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it, empty the cache and try once more
      release_cached();
      err = cudaMalloc(&p, size);
    }
    MAGIX_CHECK(err == cudaSuccess,
                "CUDA call cudaMalloc({} bytes) failed: {} ({}); {} bytes cached", size,
                cudaGetErrorString(err), cudaGetErrorName(err), cached_bytes());
  }
  std::shared_ptr<DeviceAllocator> self = shared_from_this();
  return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p),
                                      [self, size](std::byte* q) { self->give_back(q, size); });
}

void DeviceAllocator::give_back(void* p, size_t size) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_[size].push_back(p);
  cached_ += size;
}

void DeviceAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) (void)cudaFree(p);
    blocks.clear();
  }
  cached_ = 0;
}

size_t DeviceAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_;
}

}  // namespace magix::cuda
