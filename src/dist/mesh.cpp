#include "magix/mesh.hpp"

#include <algorithm>
#include <cstring>
#include <exception>

#include "dist/device_collectives.hpp"
#include "magix/error.hpp"

namespace magix {

PendingCollective& PendingCollective::operator=(PendingCollective&& other) noexcept {
  if (this != &other) {
    if (wait_) {
      try {
        wait();
      } catch (...) {  // the task's error is lost with the handle that would report it
      }
    }
    wait_ = std::move(other.wait_);
    other.wait_ = nullptr;
  }
  return *this;
}

PendingCollective::~PendingCollective() {
  if (!wait_) return;
  try {
    wait();
  } catch (...) {  // only while unwinding from another error: that one is reported
  }
}

void PendingCollective::wait() {
  if (!wait_) return;
  std::function<void()> w = std::move(wait_);
  wait_ = nullptr;
  w();
}

Communicator::Communicator() = default;
Communicator::~Communicator() = default;

PendingCollective Communicator::run_async(std::function<void(Communicator&)> task) {
  std::exception_ptr error;
  try {
    task(*this);
  } catch (...) {
    error = std::current_exception();
  }
  if (!error) return PendingCollective();
  return PendingCollective([error] { std::rethrow_exception(error); });
}

void LocalCommunicator::all_gather(std::span<const float> in, std::span<float> out) {
  MAGIX_CHECK(out.size() == in.size(), "all_gather: output size {} != input size {}", out.size(),
              in.size());
  std::copy(in.begin(), in.end(), out.begin());
}

void LocalCommunicator::reduce_scatter(std::span<const float> in, std::span<float> out) {
  MAGIX_CHECK(out.size() == in.size(), "reduce_scatter: output size {} != input size {}",
              out.size(), in.size());
  std::copy(in.begin(), in.end(), out.begin());
}

Mesh::Mesh()
    : world_(std::make_unique<LocalCommunicator>()),
      data_(std::make_unique<LocalCommunicator>()),
      model_(std::make_unique<LocalCommunicator>()) {}

Mesh::Mesh(int data_size, int model_size, std::unique_ptr<Communicator> world,
           std::unique_ptr<Communicator> data, std::unique_ptr<Communicator> model)
    : data_size_(data_size),
      model_size_(model_size),
      world_(std::move(world)),
      data_(std::move(data)),
      model_(std::move(model)) {}

int Mesh::axis_size(const std::string& axis) const {
  if (axis == "data") return data_size_;
  if (axis == "model") return model_size_;
  MAGIX_FAIL("unknown mesh axis '{}' (axes are 'data' and 'model')", axis);
}

int Mesh::axis_rank(const std::string& axis) const {
  if (axis == "data") return data_rank();
  if (axis == "model") return model_rank();
  MAGIX_FAIL("unknown mesh axis '{}' (axes are 'data' and 'model')", axis);
}

std::vector<int> resolve_mesh_shape(std::vector<int> shape, int world_size) {
  MAGIX_CHECK(!shape.empty(), "mesh shape is empty");
  int inferred = -1;
  long long product = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MAGIX_CHECK(inferred < 0, "mesh shape may contain at most one -1");
      inferred = static_cast<int>(i);
    } else {
      MAGIX_CHECK(shape[i] > 0, "mesh shape entries must be positive or -1, got {}", shape[i]);
      product *= shape[i];
    }
  }
  if (inferred >= 0) {
    MAGIX_CHECK(world_size % product == 0,
                "mesh shape [{}] cannot be fitted to {} processes: {} does not divide {}",
                fmt::join(shape, ", "), world_size, product, world_size);
    shape[inferred] = static_cast<int>(world_size / product);
  } else {
    MAGIX_CHECK(product == world_size, "mesh shape [{}] needs {} processes but {} are running",
                fmt::join(shape, ", "), product, world_size);
  }
  return shape;
}

}  // namespace magix
