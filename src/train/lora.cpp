// LoRA adapters: which weights get them, their shapes, specs and boxes, their initialisation,
// merging them into weights and projecting dense weight gradients onto them (magix/lora.hpp).
#include "magix/lora.hpp"

#include <algorithm>
#include <cmath>
#include <regex>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/hash.hpp"

namespace magix {
namespace {

// The box of a 2-D base weight: rows [o0, o0 + ob), columns [i0, i0 + ib).
struct WeightBox {
  int64_t ob, ib;
};

WeightBox weight_box(const ParamInfo& w) {
  return {w.box_extent.at(0), w.box_extent.at(1)};
}

// Sums `x` over the group of ranks sharding `axis` (nothing when there is no such axis).
void all_reduce_axis(const Mesh& mesh, const std::optional<std::string>& axis, Tensor& x) {
  if (!axis) return;
  Communicator& comm = *axis == "data" ? mesh.data() : mesh.model();
  if (comm.size() > 1) comm.all_reduce(x.span<float>(), ReduceOp::kSum);
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

// w (ob, ib) += scale · (b (ob, r) · a (r, ib)), row by row (rows in parallel; each row's sum
// over r in a fixed order, so the result does not depend on the thread count). Memory-bound: a
// BLAS GEMM with an inner dimension of r runs far below its peak on these shapes.
// With `base` (F32 or BF16, shape (ob, ib)): w = base + scale · (b · a) in the same single pass
// (the W_eff rebuild of LoraModel), instead of w += ...
void merge_box(float* w, const float* a, const float* b, int64_t ob, int64_t ib, int64_t r,
               float scale, const Tensor* base = nullptr) {
  const float* base32 = base && base->dtype() == DType::kF32 ? base->data<float>() : nullptr;
  const uint16_t* base16 = base && base->dtype() == DType::kBF16 ? base->data<uint16_t>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(ib));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < ob; ++o) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      float* ac = acc.data();
      for (int64_t k = 0; k < r; ++k) {
        const float bk = b[o * r + k];
        const float* ak = a + k * ib;
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) ac[i] += bk * ak[i];
      }
      float* wo = w + o * ib;
      if (base32) {
        const float* bo = base32 + o * ib;
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) wo[i] = bo[i] + scale * ac[i];
      } else if (base16) {
        const uint16_t* bo = base16 + o * ib;
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) wo[i] = bf16_to_float(bo[i]) + scale * ac[i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < ib; ++i) wo[i] += scale * ac[i];
      }
    }
  }
}

// The projection of one box of dW (ob, ib), reading dW once:
//   da (r, ib) += scale · b^T · dW      db (ob, r) = scale · dW · a^T
// Column blocks in parallel: a block owns its columns of da (rows summed in order) and writes
// its partial dot products for db, summed over the blocks in order afterwards, so the result
// does not depend on the thread count.
void project_box(const float* dw, const float* a, const float* b, int64_t ob, int64_t ib, int64_t r,
                 float scale, float* da, float* db) {
  constexpr int64_t kCols = 512;
  const int64_t blocks = (ib + kCols - 1) / kCols;
  std::vector<float> part(static_cast<size_t>(ob * blocks * r));
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, n = std::min(kCols, ib - c0);
    for (int64_t o = 0; o < ob; ++o) {
      const float* row = dw + o * ib + c0;
      float* out = part.data() + (o * blocks + blk) * r;
      int64_t k = 0;
      // Four ranks at a time: four independent accumulators, the row segment read once.
      for (; k + 4 <= r; k += 4) {
        const float *a0 = a + k * ib + c0, *a1 = a0 + ib, *a2 = a1 + ib, *a3 = a2 + ib;
        float *d0 = da + k * ib + c0, *d1 = d0 + ib, *d2 = d1 + ib, *d3 = d2 + ib;
        const float* bo = b + o * r + k;
        const float b0 = scale * bo[0], b1 = scale * bo[1], b2 = scale * bo[2], b3 = scale * bo[3];
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t i = 0; i < n; ++i) {
          const float x = row[i];
          s0 += x * a0[i];
          s1 += x * a1[i];
          s2 += x * a2[i];
          s3 += x * a3[i];
          d0[i] += b0 * x;
          d1[i] += b1 * x;
          d2[i] += b2 * x;
          d3[i] += b3 * x;
        }
        out[k] = s0;
        out[k + 1] = s1;
        out[k + 2] = s2;
        out[k + 3] = s3;
      }
      for (; k < r; ++k) {
        const float* ak = a + k * ib + c0;
        float* dak = da + k * ib + c0;
        const float bk = scale * b[o * r + k];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < n; ++i) {
          dot += row[i] * ak[i];
          dak[i] += bk * row[i];
        }
        out[k] = dot;
      }
    }
  }
  for (int64_t o = 0; o < ob; ++o) {
    for (int64_t k = 0; k < r; ++k) {
      float sum = 0.0f;
      for (int64_t blk = 0; blk < blocks; ++blk)
        sum += part[static_cast<size_t>((o * blocks + blk) * r + k)];
      db[o * r + k] = scale * sum;
    }
  }
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
    const ParamInfo& w = base[i];
    const int64_t rows = w.global_shape[0], cols = w.global_shape[1];
    ParamInfo a{lora_adapter_name(w.name, 'A'), {r, cols}, {std::nullopt, w.spec.axis(1)}, {}, {}};
    ParamInfo b{lora_adapter_name(w.name, 'B'), {rows, r}, {w.spec.axis(0), std::nullopt}, {}, {}};
    for (ParamInfo* p : {&a, &b}) {
      const ShardBox box = shard_box(p->name, p->global_shape, p->spec, mesh);
      p->box_start = box.start;
      p->box_extent = box.extent;
    }
    out.push_back(std::move(a));
    out.push_back(std::move(b));
  }
  return out;
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
    const Tensor& a = adapters.tensor(2 * k);
    const Tensor& b = adapters.tensor(2 * k + 1);
    Tensor& w = params.tensor(idx[k]);
    const auto [ob, ib] = weight_box(params.info(idx[k]));
    const int64_t r = a.dim(0);
    Tensor w32 = w.dtype() == DType::kF32 ? w : w.to(DType::kF32);
    // W (ob, ib) += scale · B (ob, r) · A (r, ib)
    merge_box(w32.data<float>(), a.data<float>(), b.data<float>(), ob, ib, r,
              static_cast<float>(scale));
    if (w.dtype() == DType::kBF16) {
      float_to_bf16(w32.span<float>(), w.span<uint16_t>());
    } else {
      MAGIX_CHECK(w.dtype() == DType::kF32, "merge_lora: '{}' is stored as {}, not F32 or BF16",
                  params.info(idx[k]).name, dtype_name(w.dtype()));
    }
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
    const Tensor& a = adapters.tensor(2 * k);
    const Tensor& b = adapters.tensor(2 * k + 1);
    const auto [ob, ib] = weight_box(w);
    const int64_t r = a.dim(0);
    const float s = static_cast<float>(scale);
    // dA (r, ib) = scale · B^T (r, ob) · dW (ob, ib), summed over the out-boxes;
    // dB (ob, r) = scale · dW (ob, ib) · A^T (ib, r), summed over the in-boxes.
    Tensor da({r, ib});
    Tensor db({ob, r});
    project_box(dw.data<float>(), a.data<float>(), b.data<float>(), ob, ib, r, s, da.data<float>(),
                db.data<float>());
    all_reduce_axis(mesh, w.spec.axis(0), da);
    all_reduce_axis(mesh, w.spec.axis(1), db);
    float* ga = adapter_grads.tensor(2 * k).data<float>();
    float* gb = adapter_grads.tensor(2 * k + 1).data<float>();
    MAGIX_CHECK(adapter_grads.tensor(2 * k).numel() == da.numel() &&
                    adapter_grads.tensor(2 * k + 1).numel() == db.numel(),
                "LoRA gradients of '{}' do not have the adapters' layout", w.name);
    for (int64_t i = 0; i < da.numel(); ++i) ga[i] += da.data<float>()[i];
    for (int64_t i = 0; i < db.numel(); ++i) gb[i] += db.data<float>()[i];
  }
}

void LoraModel::refresh_weights() {
  ParameterSet& params = model_.params();
  for (size_t k = 0; k < targets_.size(); ++k) {
    Tensor& w = params.tensor(targets_[k]);
    const auto [ob, ib] = weight_box(params.info(targets_[k]));
    const Tensor& a = adapters_.tensor(2 * k);
    MAGIX_CHECK(base_[k].numel() == ob * ib && w.dtype() == DType::kF32,
                "LoRA: the base copy of '{}' does not match its weight",
                params.info(targets_[k]).name);
    // W_eff = W + scale · B · A, written over the decoder's weight in one pass.
    merge_box(w.data<float>(), a.data<float>(), adapters_.tensor(2 * k + 1).data<float>(), ob, ib,
              a.dim(0), static_cast<float>(config_.scale()), &base_[k]);
  }
  applied_.clear();
  for (size_t i = 0; i < adapters_.size(); ++i) applied_.push_back(adapters_.tensor(i).clone());
}

AdamW initialize_lora_opt_state(const AdamWOptions& options, const ParameterSet& adapters) {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (const ParamInfo& info : adapters.infos()) {
    names.push_back(info.name);
    shapes.push_back(info.box_extent);
  }
  return AdamW(options, std::move(names), shapes);
}

}  // namespace magix
