// Device memory of the CUDA backend: cudaMalloc'd blocks handed out as the shared storage of
// Tensors, cached by rounded size so that a training step's buffers do not call cudaMalloc
// again. A block released by its last Tensor goes back to the cache at once: the backend runs
// every op on one stream, so a later op that reuses the block is ordered after the earlier ops
// that used it.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace magix::cuda {

class DeviceAllocator : public std::enable_shared_from_this<DeviceAllocator> {
 public:
  static std::shared_ptr<DeviceAllocator> create() {
    return std::shared_ptr<DeviceAllocator>(new DeviceAllocator);
  }
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // At least `bytes` (one block for 0), aligned to 256 bytes; throws magix::Error when the
  // device is out of memory even after the cache is emptied.
  std::shared_ptr<std::byte[]> allocate(size_t bytes);
  // cudaFree of every cached block.
  void release_cached();
  size_t cached_bytes() const;

  // The size a request is served with: multiples of 512 bytes up to 1 MiB, then of 1 MiB.
  static size_t block_size(size_t bytes);

 private:
  DeviceAllocator() = default;
  void give_back(void* p, size_t size);

  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size -> cached blocks
  size_t cached_ = 0;
};

}  // namespace magix::cuda
