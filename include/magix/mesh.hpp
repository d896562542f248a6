// The device mesh: world ranks in a (data, model) grid, model axis fastest.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "magix/communicator.hpp"

namespace magix {

class Mesh {
 public:
  // A 1x1 mesh of this process alone.
  Mesh();
  Mesh(int data_size, int model_size, std::unique_ptr<Communicator> world,
       std::unique_ptr<Communicator> data, std::unique_ptr<Communicator> model);

  int data_size() const { return data_size_; }
  int model_size() const { return model_size_; }
  int data_rank() const { return data_->rank(); }
  int model_rank() const { return model_->rank(); }
  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  Communicator& world() const { return *world_; }
  Communicator& data() const { return *data_; }    // ranks that share a model rank
  Communicator& model() const { return *model_; }  // ranks that share a data rank
  // Size of a named axis ("data" or "model").
  int axis_size(const std::string& axis) const;
  int axis_rank(const std::string& axis) const;

 private:
  int data_size_ = 1;
  int model_size_ = 1;
  std::unique_ptr<Communicator> world_, data_, model_;
};

// Resolves a requested shape (one entry may be -1) against a world size; throws magix::Error
// if it does not fit.
std::vector<int> resolve_mesh_shape(std::vector<int> shape, int world_size);

}  // namespace magix
