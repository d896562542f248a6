#include "shard/shard_ops.hpp"

#include <algorithm>
#include <vector>

#include "backends/backend.hpp"
#include "dist/device_collectives.hpp"
#include "magix/error.hpp"

namespace magix::model {
namespace {

// rows x cols view of a tensor split along `dim`: dim 0 -> chunks are contiguous row blocks;
// dim 1 of (R, C) -> chunk r is columns [r * c, (r + 1) * c).
struct Split {
  int64_t rows, cols;  // of one chunk
};

Split split_of(const Tensor& local, int dim) {
  MAGIX_CHECK(local.ndim() >= 1 && local.ndim() <= 2 && dim < local.ndim(),
              "shard ops: unsupported tensor rank {} / dim {}", local.ndim(), dim);
  if (dim == 0) return {1, local.numel()};
  return {local.dim(0), local.dim(1)};
}

// The host implementations (every tensor in host memory).

void host_gather(Communicator& comm, const Tensor& local, int dim, Tensor& full) {
  const int64_t n = comm.size();
  const Split s = split_of(local, dim);
  if (s.rows == 1) {
    comm.all_gather(local.span<float>(), full.span<float>());
    return;
  }
  std::vector<float> buf(static_cast<size_t>(full.numel()));
  comm.all_gather(local.span<float>(), buf);
  float* out = full.data<float>();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < s.rows; ++i) {
      std::copy_n(buf.data() + (r * s.rows + i) * s.cols, s.cols,
                  out + i * n * s.cols + r * s.cols);
    }
  }
}

void host_reduce_scatter(Communicator& comm, const Tensor& full, int dim, Tensor& local) {
  const int64_t n = comm.size();
  const Split s = split_of(local, dim);
  std::vector<float> in(static_cast<size_t>(full.numel()));
  const float* src = full.data<float>();
  if (s.rows == 1) {
    std::copy_n(src, full.numel(), in.data());
  } else {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < s.rows; ++i) {
        std::copy_n(src + i * n * s.cols + r * s.cols, s.cols,
                    in.data() + (r * s.rows + i) * s.cols);
      }
    }
  }
  std::vector<float> out(static_cast<size_t>(local.numel()));
  comm.reduce_scatter(in, out);
  float* dst = local.data<float>();
  for (size_t i = 0; i < out.size(); ++i) dst[i] += out[i];
}

void host_all_reduce_add(Communicator& comm, const Tensor& full, Tensor& local) {
  std::vector<float> buf(full.span<float>().begin(), full.span<float>().end());
  comm.all_reduce(buf, ReduceOp::kSum);
  float* dst = local.data<float>();
  for (size_t i = 0; i < buf.size(); ++i) dst[i] += buf[i];
}

// Both tensors on one device (not the host): the device's own path applies.
bool on_one_device(const Tensor& a, const Tensor& b) {
  return a.device() != Device::kCpu && a.device() == b.device();
}

// The group's device collectives for a and b, or null (host staging).
DeviceCollectives* device_path(Communicator& comm, const Tensor& a, const Tensor& b) {
  return on_one_device(a, b) ? device_collectives(comm, a.device()) : nullptr;
}

}  // namespace

bool collectives_on_device(Communicator& comm, Device device) {
  return device_collectives(comm, device) != nullptr;
}

HostStaged::HostStaged(const Tensor& t, bool read) : target_(t) {
  if (t.device() == Device::kCpu) {
    host_ = t;
    return;
  }
  host_ = Tensor::empty(t.shape(), t.dtype());
  if (read) backend_for(t.device()).copy(host_, t);
}

void HostStaged::write_back() {
  if (target_.device() != Device::kCpu) backend_for(target_.device()).copy(target_, host_);
}

void gather_along_dim(Communicator& comm, const Tensor& local, int dim, Tensor& full) {
  MAGIX_CHECK(full.numel() == comm.size() * local.numel(), "gather: sizes do not match");
  if (comm.size() == 1 && on_one_device(local, full)) {
    backend_for(local.device()).copy(full, local);
    return;
  }
  if (DeviceCollectives* dc = device_path(comm, local, full)) {
    dc->gather(local, dim, full);
    return;
  }
  HostStaged in(local, /*read=*/true), out(full, /*read=*/false);
  host_gather(comm, in.host(), dim, out.host());
  out.write_back();
}

void reduce_scatter_along_dim(Communicator& comm, const Tensor& full, int dim, Tensor& local) {
  MAGIX_CHECK(full.numel() == comm.size() * local.numel(), "reduce_scatter: sizes do not match");
  if (comm.size() == 1 && on_one_device(local, full)) {
    backend_for(local.device()).add(local, full);
    return;
  }
  if (DeviceCollectives* dc = device_path(comm, full, local)) {
    dc->reduce_scatter_add(full, dim, local);
    return;
  }
  HostStaged in(full, /*read=*/true), out(local, /*read=*/true);
  host_reduce_scatter(comm, in.host(), dim, out.host());
  out.write_back();
}

void all_reduce_add(Communicator& comm, const Tensor& full, Tensor& local) {
  MAGIX_CHECK(full.numel() == local.numel(), "all_reduce_add: sizes do not match");
  if (comm.size() == 1 && on_one_device(local, full)) {
    backend_for(local.device()).add(local, full);
    return;
  }
  if (DeviceCollectives* dc = device_path(comm, full, local)) {
    dc->all_reduce_add(full, local);
    return;
  }
  HostStaged in(full, /*read=*/true), out(local, /*read=*/true);
  host_all_reduce_add(comm, in.host(), out.host());
  out.write_back();
}

void all_reduce(Communicator& comm, Tensor& x, ReduceOp op) {
  if (comm.size() <= 1) return;
  if (DeviceCollectives* dc = device_path(comm, x, x)) {
    dc->all_reduce(x, op);
    return;
  }
  HostStaged staged(x, /*read=*/true);
  comm.all_reduce(staged.host().span<float>(), op);
  staged.write_back();
}

}  // namespace magix::model
