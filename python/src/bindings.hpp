// Shared pieces of the extension module magix._magix (python/): the process's MPI runtime and
// meshes, keyword arguments onto option structs, and NumPy conversions.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "magix/batch.hpp"
#include "magix/mesh.hpp"
#include "magix/model.hpp"
#include "magix/optimizer.hpp"
#include "magix/sharding.hpp"

namespace magix::python {

namespace nb = nanobind;

// Token ids as the Python layer passes them: int32, C-contiguous (B, T).
using IdArray = nb::ndarray<const int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// The mesh of `shape` (one entry may be -1) over this process's world. The world is MPI's when
// the process was started by a launcher (MPI is initialised at the first mesh and finalised by
// finalize_runtime at interpreter exit), else this process alone. Meshes live until the process
// ends and are reused per resolved shape: their communicators must be freed before MPI is
// finalised, which Python's object lifetimes cannot promise. Every rank asks for the same shapes
// in the same order (SPMD), so the reuse is the same on all ranks.
Mesh& mesh_for(const std::vector<int>& shape);
void finalize_runtime();

// A Python-held handle on one of those meshes.
struct PyMesh {
  Mesh* mesh = nullptr;
};

// A decoder on a mesh, with the rules it was placed by (initialize_opt_state checks them).
struct PyModel {
  std::unique_ptr<Decoder> decoder;
  Mesh* mesh = nullptr;
  PartitionRules rules;
  std::string family;
  std::string source;  // the folder it was loaded from (its tokenizer, for generate with text)
};

struct PyOptState {
  std::unique_ptr<AdamW> adamw;
  PyModel* model = nullptr;
};

// Keyword arguments onto the fields of an options struct: each keyword name is a flag name of
// the matching CLI command. An unknown keyword or a value of the wrong type is a TypeError
// naming it, as Python's own calls report them.
template <class T>
using FieldSetter = std::function<void(T&, nb::handle)>;
template <class T>
using FieldTable = std::vector<std::pair<std::string, FieldSetter<T>>>;

template <class T>
void apply_kwargs(T& target, const nb::dict& kwargs, const FieldTable<T>& table,
                  const char* function) {
  for (auto [key, value] : kwargs) {
    const std::string name = nb::cast<std::string>(key);
    bool found = false;
    for (const auto& [field, set] : table) {
      if (field != name) continue;
      found = true;
      try {
        set(target, value);
      } catch (const nb::cast_error&) {
        throw nb::type_error(("magix." + std::string(function) + "(): keyword argument '" + name +
                              "' has the wrong type (" +
                              nb::cast<std::string>(nb::str(value.type().attr("__name__"))) + ")")
                                 .c_str());
      }
    }
    if (!found) {
      throw nb::type_error(("magix." + std::string(function) +
                            "() got an unexpected keyword argument '" + name + "'")
                               .c_str());
    }
  }
}

template <class T>
std::vector<std::string> field_names(const FieldTable<T>& table) {
  std::vector<std::string> out;
  for (const auto& entry : table) out.push_back(entry.first);
  return out;
}

// A field set from a keyword by nb::cast to its own type.
#define MAGIX_PY_FIELD(name, member)                                  \
  {                                                                   \
    name, [](auto& a, nb::handle v) {                                 \
      a.member = nb::cast<std::decay_t<decltype(a.member)>>(v, true); \
    }                                                                 \
  }

// Rows of token ids from a (B, T) array, each cut to its `lengths[b]` tokens (all T when empty).
std::vector<std::vector<int32_t>> rows_of(const IdArray& ids, const std::vector<int64_t>& lengths);

// A float array owned by Python (copied from `values`).
nb::ndarray<nb::numpy, float> float_array(std::vector<float> values, std::vector<size_t> shape);
nb::ndarray<nb::numpy, double> double_array(std::vector<double> values);

void bind_model(nb::module_& m);
void bind_tokenizer(nb::module_& m);
void bind_commands(nb::module_& m);

}  // namespace magix::python
