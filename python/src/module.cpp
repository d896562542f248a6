// magix._magix: the module, its exception, the MPI runtime and meshes (see bindings.hpp).
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <map>

#include "bindings.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace magix::python {

namespace {

// The process's MPI world and its meshes: process-wide by nature (one MPI world per process).
struct World {
  std::unique_ptr<Runtime> runtime;
  std::map<std::vector<int>, std::unique_ptr<Mesh>> meshes;  // by resolved shape
  bool finalized = false;
};

World& world() {
  static World* w = new World();  // never destroyed: see finalize_runtime
  return *w;
}

}  // namespace

Mesh& mesh_for(const std::vector<int>& shape) {
  World& w = world();
  MAGIX_CHECK(!w.finalized, "magix: the MPI runtime was already finalised");
  if (!w.runtime) w.runtime = std::make_unique<Runtime>(nullptr, nullptr);
  const std::vector<int> resolved = resolve_mesh_shape(shape, w.runtime->world_size());
  std::unique_ptr<Mesh>& slot = w.meshes[resolved];
  if (!slot) slot = std::make_unique<Mesh>(create_device_mesh(resolved));
  return *slot;
}

void finalize_runtime() {
  World& w = world();
  if (w.finalized) return;
  w.finalized = true;
  if (!w.runtime || !w.runtime->uses_mpi()) return;
  // The meshes are never destroyed (models point at them), so no communicator is freed after
  // MPI_Finalize.
  w.runtime.reset();
}

std::vector<std::vector<int32_t>> rows_of(const IdArray& ids, const std::vector<int64_t>& lengths) {
  const int64_t rows = static_cast<int64_t>(ids.shape(0)), len = static_cast<int64_t>(ids.shape(1));
  MAGIX_CHECK(lengths.empty() || static_cast<int64_t>(lengths.size()) == rows,
              "{} lengths for {} rows", lengths.size(), rows);
  std::vector<std::vector<int32_t>> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = lengths.empty() ? len : lengths[r];
    MAGIX_CHECK(n >= 1 && n <= len, "row {}: length {} outside [1, {}]", r, n, len);
    out[r].assign(ids.data() + r * len, ids.data() + r * len + n);
  }
  return out;
}

nb::ndarray<nb::numpy, float> float_array(std::vector<float> values, std::vector<size_t> shape) {
  auto* owned = new std::vector<float>(std::move(values));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return nb::ndarray<nb::numpy, float>(owned->data(), shape.size(), shape.data(), owner);
}

nb::ndarray<nb::numpy, double> double_array(std::vector<double> values) {
  auto* owned = new std::vector<double>(std::move(values));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<double>*>(p); });
  const size_t shape[1] = {owned->size()};
  return nb::ndarray<nb::numpy, double>(owned->data(), 1, shape, owner);
}

}  // namespace magix::python

NB_MODULE(_magix, m) {
  using namespace magix::python;
  m.doc() = "magix's C++ core; use the package `magix`, which wraps this module.";
  nb::exception<magix::Error>(m, "MagixError", PyExc_RuntimeError);

  nb::class_<PyMesh>(m, "Mesh")
      .def_prop_ro("shape",
                   [](const PyMesh& p) {
                     return std::vector<int>{p.mesh->data_size(), p.mesh->model_size()};
                   })
      .def_prop_ro("names",
                   [](const PyMesh&) {
                     return std::vector<std::string>{"data", "model"};
                   })
      .def_prop_ro("world_rank", [](const PyMesh& p) { return p.mesh->world_rank(); })
      .def_prop_ro("world_size", [](const PyMesh& p) { return p.mesh->world_size(); })
      .def_prop_ro("data_rank", [](const PyMesh& p) { return p.mesh->data_rank(); })
      .def_prop_ro("model_rank", [](const PyMesh& p) { return p.mesh->model_rank(); })
      .def("axis_size",
           [](const PyMesh& p, const std::string& axis) { return p.mesh->axis_size(axis); });

  m.def(
      "create_device_mesh",
      [](const std::vector<int>& shape, const std::vector<std::string>& names) {
        MAGIX_CHECK(names == std::vector<std::string>({"data", "model"}),
                    "mesh axis names must be (\"data\", \"model\")");
        MAGIX_CHECK(shape.size() == 2, "a mesh has 2 axes (data, model), got {}", shape.size());
        return PyMesh{&mesh_for(shape)};
      },
      nb::arg("shape"), nb::arg("names"));
  m.def("finalize", &finalize_runtime,
        "Finalises MPI (registered with atexit by the package; no mesh may be used after).");
  m.def("launched_by_mpi", &magix::launched_by_mpi);
  m.def("abort", [](const std::string& message, int code) {
    // Stops every rank of the world (MPI_Abort), so that no peer waits in a collective.
    if (!world().runtime) world().runtime = std::make_unique<magix::Runtime>(nullptr, nullptr);
    world().runtime->abort(message, code);
  });

  bind_model(m);
  bind_tokenizer(m);
  bind_commands(m);
}
