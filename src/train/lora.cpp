// LoRA adapters: which weights get them, their shapes, specs and boxes, their initialisation,
// merging them into weights and projecting dense weight gradients onto them (magix/lora.hpp).
#include "magix/lora.hpp"

#include <algorithm>
#include <cmath>
#include <regex>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/hash.hpp"
#include "shard/shard_ops.hpp"

namespace magix {
namespace {

// Sums `x` over the group of ranks sharding `axis` (nothing when there is no such axis).
void all_reduce_axis(const Mesh& mesh, const std::optional<std::string>& axis, Tensor& x) {
  if (!axis) return;
  Communicator& comm = *axis == "data" ? mesh.data() : mesh.model();
  model::all_reduce(comm, x, ReduceOp::kSum);
}

// Checks that adapters 2k, 2k+1 are the A and B of the k-th adapted weight of `params` and
// returns the parameter index of each adapted weight.
std::vector<size_t> adapted_indices(const ParameterSet& params, const ParameterSet& adapters) {
  MAGIX_CHECK(adapters.size() % 2 == 0, "LoRA adapters: {} tensors, expected pairs (A, B)",
              adapters.size());
  std::vector<size_t> out;
  for (size_t k = 0; k < adapters.size(); k += 2) {
    const ParamInfo& a = adapters.info(k);
    const ParamInfo& b = adapters.info(k + 1);
    const std::string suffix = ".lora_A.weight";
    MAGIX_CHECK(a.name.size() > suffix.size() &&
                    a.name.compare(a.name.size() - suffix.size(), suffix.size(), suffix) == 0,
                "LoRA adapter {} ('{}') is not a lora_A", k, a.name);
    const std::string weight = a.name.substr(0, a.name.size() - suffix.size()) + ".weight";
    MAGIX_CHECK(b.name == lora_adapter_name(weight, 'B'), "LoRA adapter '{}' must follow '{}'",
                lora_adapter_name(weight, 'B'), a.name);
    const std::optional<size_t> i = params.find(weight);
    MAGIX_CHECK(i.has_value(), "LoRA adapter '{}' has no base weight '{}' in the model", a.name,
                weight);
    const ParamInfo& w = params.info(*i);
    MAGIX_CHECK(
        w.global_shape.size() == 2 && a.global_shape.size() == 2 && b.global_shape.size() == 2 &&
            a.global_shape[1] == w.global_shape[1] && b.global_shape[0] == w.global_shape[0] &&
            a.global_shape[0] == b.global_shape[1],
        "LoRA adapters of '{}' {}: lora_A {} and lora_B {} must be [r, in] and [out, r]", weight,
        shape_str(w.global_shape), shape_str(a.global_shape), shape_str(b.global_shape));
    MAGIX_CHECK(a.box_extent[1] == w.box_extent[1] && a.box_start[1] == w.box_start[1] &&
                    b.box_extent[0] == w.box_extent[0] && b.box_start[0] == w.box_start[0],
                "LoRA adapters of '{}' are not sharded like the weight (its box {} at {})", weight,
                shape_str(w.box_extent), shape_str(w.box_start));
    out.push_back(*i);
  }
  return out;
}

}  // namespace

std::string lora_adapter_name(const std::string& weight_name, char which) {
  MAGIX_CHECK(which == 'A' || which == 'B', "LoRA adapter must be 'A' or 'B', not '{}'", which);
  const std::string suffix = ".weight";
  MAGIX_CHECK(
      weight_name.size() > suffix.size() &&
          weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) == 0,
      "LoRA can only adapt a weight ('...weight'), not '{}'", weight_name);
  return weight_name.substr(0, weight_name.size() - suffix.size()) + ".lora_" + which + ".weight";
}

std::vector<size_t> lora_target_indices(const std::vector<ParamInfo>& base,
                                        const LoraConfig& config) {
  MAGIX_CHECK(config.rank >= 1, "--lora_rank must be at least 1 (got {})", config.rank);
  MAGIX_CHECK(std::isfinite(config.alpha), "--lora_alpha must be finite (got {})", config.alpha);
  std::regex re;
  try {
    re = std::regex(config.targets, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    MAGIX_FAIL("--lora_targets '{}' is not a valid regular expression: {}", config.targets,
               e.what());
  }
  std::vector<size_t> out;
  for (size_t i = 0; i < base.size(); ++i) {
    if (!std::regex_search(base[i].name, re)) continue;
    MAGIX_CHECK(base[i].global_shape.size() == 2,
                "--lora_targets '{}' matches '{}' {}, which is not a linear weight (2-D); only "
                "weights [out, in] can get adapters",
                config.targets, base[i].name, shape_str(base[i].global_shape));
    lora_adapter_name(base[i].name, 'A');  // checks the name ends in ".weight"
    out.push_back(i);
  }
  MAGIX_CHECK(!out.empty(), "--lora_targets '{}' matches no parameter of the model (e.g. '{}')",
              config.targets, base.empty() ? std::string("none") : base.front().name);
  return out;
}

std::vector<ParamInfo> lora_adapter_infos(const std::vector<ParamInfo>& base,
                                          const LoraConfig& config, const Mesh& mesh) {
  std::vector<ParamInfo> out;
  const int64_t r = config.rank;
  for (size_t i : lora_target_indices(base, config)) {
    out.push_back(lora_adapter_info(base[i], 'A', r, mesh));
    out.push_back(lora_adapter_info(base[i], 'B', r, mesh));
  }
  return out;
}

ParamInfo lora_adapter_info(const ParamInfo& w, char which, int64_t rank, const Mesh& mesh) {
  MAGIX_CHECK(w.global_shape.size() == 2, "LoRA adapters need a 2-D weight, '{}' is {}", w.name,
              shape_str(w.global_shape));
  std::vector<ParamInfo> p(1);
  p[0].name = lora_adapter_name(w.name, which);
  if (which == 'A') {
    p[0].global_shape = {rank, w.global_shape[1]};
    p[0].spec = {std::nullopt, w.spec.axis(1)};
  } else {
    p[0].global_shape = {w.global_shape[0], rank};
    p[0].spec = {w.spec.axis(0), std::nullopt};
    p[0].spec.parts = w.spec.parts;
    p[0].part_rows = w.part_rows;
  }
  shard_parameters(p, mesh);
  return std::move(p[0]);
}

ParameterSet init_lora_adapters(const std::vector<ParamInfo>& adapter_infos, uint64_t seed) {
  ParameterSet out(adapter_infos);
  for (size_t k = 0; k < out.size(); k += 2) {
    const ParamInfo& a = out.info(k);
    const int64_t cols = a.global_shape[1];
    // He (Kaiming) uniform over fan_in = in: variance 2 / in.
    const double bound = std::sqrt(6.0 / static_cast<double>(cols));
    const uint64_t key = splitmix64(seed ^ fnv1a64(a.name));
    float* dst = out.tensor(k).data<float>();
    const int64_t nr = a.box_extent[0], nc = a.box_extent[1];
    for (int64_t i = 0; i < nr; ++i) {
      for (int64_t j = 0; j < nc; ++j) {
        const int64_t e = (a.box_start[0] + i) * cols + a.box_start[1] + j;  // global element
        const double u =
            static_cast<double>(splitmix64(key ^ splitmix64(static_cast<uint64_t>(e))) >> 11) *
            0x1.0p-53;  // [0, 1)
        dst[i * nc + j] = static_cast<float>((2.0 * u - 1.0) * bound);
      }
    }
  }
  return out;
}

void merge_lora(ParameterSet& params, const ParameterSet& adapters, double scale) {
  const std::vector<size_t> idx = adapted_indices(params, adapters);
  for (size_t k = 0; k < idx.size(); ++k) {
    Tensor& w = params.tensor(idx[k]);
    const Tensor a = to_device(adapters.tensor(2 * k), w.device());
    const Tensor b = to_device(adapters.tensor(2 * k + 1), w.device());
    MAGIX_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16,
                "merge_lora: '{}' is stored as {}, not F32 or BF16", params.info(idx[k]).name,
                dtype_name(w.dtype()));
    const Backend& ops = backend_for(w.device());
    Tensor w32 = w;
    if (w.dtype() != DType::kF32) {
      w32 = ops.empty(w.shape(), DType::kF32);
      ops.copy(w32, w);
    }
    // W (ob, ib) += scale · B (ob, r) · A (r, ib)
    ops.lora_merge(w32, a, b, static_cast<float>(scale), nullptr);
    if (w.dtype() != DType::kF32) ops.copy(w, w32);
  }
}

void lora_project_grads(const ParameterSet& dense_grads, const ParameterSet& adapters, double scale,
                        const Mesh& mesh, ParameterSet& adapter_grads) {
  const std::vector<size_t> idx = adapted_indices(dense_grads, adapters);
  MAGIX_CHECK(adapter_grads.size() == adapters.size(), "LoRA gradients: {} tensors for {} adapters",
              adapter_grads.size(), adapters.size());
  for (size_t k = 0; k < idx.size(); ++k) {
    const ParamInfo& w = dense_grads.info(idx[k]);
    const Tensor& dw = dense_grads.tensor(idx[k]);
    const Tensor a = to_device(adapters.tensor(2 * k), dw.device());
    const Tensor b = to_device(adapters.tensor(2 * k + 1), dw.device());
    const Backend& ops = backend_for(dw.device());
    // dA (r, ib) = scale · B^T (r, ob) · dW (ob, ib), summed over the out-boxes;
    // dB (ob, r) = scale · dW (ob, ib) · A^T (ib, r), summed over the in-boxes.
    Tensor da = ops.zeros(a.shape(), DType::kF32);
    Tensor db = ops.zeros(b.shape(), DType::kF32);
    ops.lora_project(da, db, dw.reshape(w.box_extent), a, b, static_cast<float>(scale));
    all_reduce_axis(mesh, w.spec.axis(0), da);
    all_reduce_axis(mesh, w.spec.axis(1), db);
    MAGIX_CHECK(adapter_grads.tensor(2 * k).numel() == da.numel() &&
                    adapter_grads.tensor(2 * k + 1).numel() == db.numel(),
                "LoRA gradients of '{}' do not have the adapters' layout", w.name);
    ops.add(adapter_grads.tensor(2 * k), da);
    ops.add(adapter_grads.tensor(2 * k + 1), db);
  }
}

AdamW initialize_lora_opt_state(const AdamWOptions& options, const ParameterSet& adapters) {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (const ParamInfo& info : adapters.infos()) {
    names.push_back(info.name);
    shapes.push_back(info.box_extent);
  }
  return AdamW(options, std::move(names), shapes, adapters.device());
}

}  // namespace magix
