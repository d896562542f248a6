// Parameter names, shapes, partition specs and shard boxes; loading from an HF folder; random
// init as transformers does it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <set>
#include <utility>

#include "backends/backend.hpp"
#include "magix/error.hpp"
#include "magix/hash.hpp"
#include "magix/hf_files.hpp"
#include "magix/model.hpp"
#include "model/layer_params.hpp"

namespace magix {
namespace {

std::string list_names(const std::vector<std::string>& names, size_t max_listed = 20) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < max_listed; ++i) {
    out += (i ? ", " : "") + names[i];
  }
  if (names.size() > max_listed) out += fmt::format(", ... ({} in all)", names.size());
  return out;
}

// Uniform in (0, 1] from 53 random bits.
double unit_open(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;
}

// Standard normal numbers 2·pair and 2·pair + 1 of the stream `key` (Box-Muller).
std::pair<double, double> normal_pair(uint64_t key, uint64_t pair) {
  const double u1 = unit_open(splitmix64(key ^ splitmix64(2 * pair)));
  const double u2 = unit_open(splitmix64(key ^ splitmix64(2 * pair + 1)));
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * std::numbers::pi * u2;
  return {r * std::cos(angle), r * std::sin(angle)};
}

// Standard normal number `e` of the stream `key` (Box-Muller on the pair e / 2).
double normal_at(uint64_t key, int64_t e) {
  const auto [even, odd] = normal_pair(key, static_cast<uint64_t>(e / 2));
  return e % 2 == 0 ? even : odd;
}

void check_storage_dtype(DType dtype) {
  MAGIX_CHECK(dtype == DType::kF32 || dtype == DType::kBF16,
              "parameters can be stored as F32 or BF16, not {}", dtype_name(dtype));
}

}  // namespace

std::map<std::string, int64_t, std::less<>> part_size_fields(const ModelConfig& c) {
  return {{"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_attention_heads", c.num_heads},
          {"num_key_value_heads", c.num_kv_heads},
          {"head_dim", c.head_dim}};
}

std::vector<ShardBox> local_boxes(const ParamInfo& p) {
  if (!p.pieces.empty()) return p.pieces;
  return {ShardBox{p.box_start, p.box_extent}};
}

std::vector<ParamInfo> expected_parameters(const ModelConfig& c) {
  std::vector<ParamInfo> out;
  const PartitionRules rules = default_partition_rules(std::string(family_name(c.family)));
  const auto fields = part_size_fields(c);
  auto add = [&](std::string name, Shape shape) {
    PartitionSpec spec = rules.spec_for(name, static_cast<int>(shape.size()));
    std::vector<int64_t> rows = resolve_parts(name, shape, spec, fields);
    out.push_back({std::move(name), shape, std::move(spec), Shape(shape.size(), 0), shape,
                   std::move(rows), {}});
  };
  const int64_t C = c.hidden_size;
  add("model.embed_tokens.weight", {c.vocab_size, C});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int p = 0; p < model::kNumLayerParams; ++p) {
      const auto lp = static_cast<model::LayerParam>(p);
      if (auto shape = model::layer_param_shape(c, lp)) add(model::layer_param_name(l, lp), *shape);
    }
  }
  add("model.norm.weight", {C});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, C});
  return out;
}

void apply_partition_rules(std::vector<ParamInfo>& infos, const PartitionRules& rules,
                           const ModelConfig& config) {
  const auto fields = part_size_fields(config);
  for (ParamInfo& p : infos) {
    p.spec = rules.spec_for(p.name, static_cast<int>(p.global_shape.size()));
    p.part_rows = resolve_parts(p.name, p.global_shape, p.spec, fields);
  }
}

void shard_parameters(std::vector<ParamInfo>& infos, const Mesh& mesh) {
  for (ParamInfo& p : infos) {
    std::vector<ShardBox> boxes = shard_pieces(p.name, p.global_shape, p.spec, p.part_rows, mesh);
    p.box_start = boxes.front().start;
    p.box_extent = boxes.front().extent;
    for (size_t i = 1; i < boxes.size(); ++i) p.box_extent[0] += boxes[i].extent[0];
    p.pieces = boxes.size() > 1 ? std::move(boxes) : std::vector<ShardBox>{};
  }
}

ParameterSet::ParameterSet(std::vector<ParamInfo> infos)
    : ParameterSet(std::move(infos), DType::kF32) {}

ParameterSet::ParameterSet(std::vector<ParamInfo> infos, DType dtype) : infos_(std::move(infos)) {
  check_storage_dtype(dtype);
  tensors_.reserve(infos_.size());
  for (const ParamInfo& p : infos_) tensors_.emplace_back(p.box_extent, dtype);
}

std::optional<size_t> ParameterSet::find(std::string_view name) const {
  for (size_t i = 0; i < infos_.size(); ++i) {
    if (infos_[i].name == name) return i;
  }
  return std::nullopt;
}

Tensor& ParameterSet::at(std::string_view name) {
  auto i = find(name);
  MAGIX_CHECK(i.has_value(), "no parameter named '{}'", name);
  return tensors_[*i];
}

const Tensor& ParameterSet::at(std::string_view name) const {
  auto i = find(name);
  MAGIX_CHECK(i.has_value(), "no parameter named '{}'", name);
  return tensors_[*i];
}

ParameterSet ParameterSet::zeros_like() const {
  ParameterSet out;
  out.infos_ = infos_;
  for (const Tensor& t : tensors_) {
    out.tensors_.push_back(backend_for(t.device()).zeros(t.shape(), DType::kF32));
  }
  return out;
}

Device ParameterSet::device() const {
  return tensors_.empty() ? Device::kCpu : tensors_.front().device();
}

ParameterSet ParameterSet::to_device(Device device) const {
  ParameterSet out;
  out.infos_ = infos_;
  for (const Tensor& t : tensors_) {
    Tensor d = backend_for(device).empty(t.shape(), t.dtype());
    // The device side's backend copies across (either side may be the host).
    backend_for(device == Device::kCpu ? t.device() : device).copy(d, t);
    out.tensors_.push_back(std::move(d));
  }
  return out;
}

void ParameterSet::convert(DType dtype) {
  check_storage_dtype(dtype);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    Tensor& t = tensors_[i];
    if (t.dtype() == dtype) continue;
    MAGIX_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16 || t.dtype() == DType::kF16,
                "parameter '{}' holds {} values; only float parameters can be converted to {}",
                infos_[i].name, dtype_name(t.dtype()), dtype_name(dtype));
    if (t.device() == Device::kCpu) {
      t = t.to(dtype);
    } else {
      const Backend& ops = backend_for(t.device());
      Tensor d = ops.empty(t.shape(), dtype);
      ops.copy(d, t);
      t = std::move(d);
    }
  }
}

size_t ParameterSet::nbytes() const {
  size_t n = 0;
  for (const Tensor& t : tensors_) n += t.nbytes();
  return n;
}

void ParameterSet::fill_zero() {
  for (Tensor& t : tensors_) backend_for(t.device()).fill_zero(t);
}

void validate_weight_names(const std::vector<ParamInfo>& expected, const HfWeights& weights) {
  std::vector<std::string> missing, unexpected, misshaped;
  std::set<std::string, std::less<>> known;
  bool tied = true;
  for (const ParamInfo& p : expected) {
    known.insert(p.name);
    if (p.name == "lm_head.weight") tied = false;
    if (!weights.contains(p.name)) {
      missing.push_back(p.name);
      continue;
    }
    const Shape& stored = weights.entry(p.name).shape;
    if (stored != p.global_shape) {
      misshaped.push_back(fmt::format("{} (file {}, expected {})", p.name, shape_str(stored),
                                      shape_str(p.global_shape)));
    }
  }
  for (const std::string& name : weights.names()) {
    if (known.count(name)) continue;
    if (tied && name == "lm_head.weight") continue;  // transformers ties it and ignores the copy
    if (name.ends_with("rotary_emb.inv_freq")) continue;  // a buffer older checkpoints saved
    unexpected.push_back(name);
  }
  if (missing.empty() && unexpected.empty() && misshaped.empty()) return;
  std::string msg =
      fmt::format("model weights in '{}' do not match its config:", weights.dir().string());
  if (!missing.empty()) msg += fmt::format("\n  missing tensors: {}", list_names(missing));
  if (!misshaped.empty()) msg += fmt::format("\n  wrong shapes: {}", list_names(misshaped));
  if (!unexpected.empty()) msg += fmt::format("\n  unexpected tensors: {}", list_names(unexpected));
  MAGIX_FAIL("{}", msg);
}

ParameterSet load_parameters(const std::vector<ParamInfo>& infos, const HfWeights& weights,
                             DType dtype) {
  check_storage_dtype(dtype);
  validate_weight_names(infos, weights);
  // Read and converted one tensor at a time: no fp32 copy of the whole model is ever held.
  ParameterSet params(infos, dtype);
  for (size_t i = 0; i < infos.size(); ++i) {
    const ParamInfo& p = infos[i];
    Tensor t;
    if (p.box_extent == p.global_shape) {
      t = weights.read_f32(p.name);
    } else if (p.pieces.empty()) {
      t = weights.read_box_f32(p.name, p.box_start, p.box_extent);
    } else {  // a fused tensor's parts, stacked along dim 0
      t = Tensor(p.box_extent, DType::kF32);
      int64_t row = 0;
      for (const ShardBox& box : p.pieces) {
        Tensor piece = weights.read_box_f32(p.name, box.start, box.extent);
        Tensor dst = t.rows(row, box.extent[0]);
        MAGIX_CHECK(piece.nbytes() == dst.nbytes(), "tensor '{}': read {} bytes, expected {}",
                    p.name, piece.nbytes(), dst.nbytes());
        std::memcpy(dst.bytes(), piece.bytes(), piece.nbytes());
        row += box.extent[0];
      }
    }
    MAGIX_CHECK(t.shape() == p.box_extent, "tensor '{}': read shape {}, expected {}", p.name,
                shape_str(t.shape()), shape_str(p.box_extent));
    t = t.reshape(p.box_extent);
    const int64_t bad = first_non_finite(t.bytes(), DType::kF32, static_cast<size_t>(t.numel()));
    MAGIX_CHECK(bad < 0,
                "tensor '{}' in {} has a non-finite value ({}) at {}: the weights are "
                "damaged",
                p.name, weights.file_of(p.name).string(), t.data<float>()[bad],
                box_coordinates(bad, p.box_start, p.box_extent));
    params.tensor(i) = dtype == DType::kF32 ? t : t.to(dtype);
  }
  return params;
}

ParameterSet init_parameters(const ModelConfig& c, const std::vector<ParamInfo>& infos,
                             uint64_t seed, DType dtype) {
  ParameterSet params(infos, dtype);
  const double stdev = c.initializer_range;
  for (size_t i = 0; i < infos.size(); ++i) {
    const ParamInfo& p = infos[i];
    // Drawn in fp32, then stored as `dtype` (one fp32 tensor alive at a time).
    Tensor drawn(p.box_extent, DType::kF32);
    float* out = drawn.data<float>();
    const int64_t n = drawn.numel();
    const bool norm = p.name.ends_with("norm.weight");
    const bool bias = p.name.ends_with(".bias");
    auto store = [&] { params.tensor(i) = dtype == DType::kF32 ? drawn : drawn.to(dtype); };
    if (norm) {
      std::fill(out, out + n, c.norm_offset != 0 ? 0.0f : 1.0f);  // (1 + w) norms start at 0
      store();
      continue;
    }
    if (bias) {
      store();  // zeros
      continue;
    }
    // Linear or Embedding weight: element (r, k) of the global tensor is normal draw number
    // r * cols + k of the stream keyed by (seed, name).
    const uint64_t key = splitmix64(seed ^ splitmix64(fnv1a64(p.name)));
    const int64_t cols = p.global_shape[1];
    const int64_t rows_local = p.box_extent[0], cols_local = p.box_extent[1];
    std::vector<int64_t> global_row;  // of each local row (fused tensors: part by part)
    for (const ShardBox& box : local_boxes(p)) {
      for (int64_t r = 0; r < box.extent[0]; ++r) global_row.push_back(box.start[0] + r);
    }
    // Every element is a pure function of its index: the rows split over threads freely.
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t r = 0; r < rows_local; ++r) {
      const int64_t gr = global_row[static_cast<size_t>(r)];
      const bool pad_row =
          p.name == "model.embed_tokens.weight" && c.pad_token_id && gr == *c.pad_token_id;
      float* row = out + r * cols_local;
      if (pad_row) {
        std::fill(row, row + cols_local, 0.0f);
        continue;
      }
      for (int64_t k = 0; k < cols_local; ++k) {
        const int64_t e = gr * cols + p.box_start[1] + k;
        if (e % 2 == 0 && k + 1 < cols_local) {  // both numbers of the pair at once
          const auto [even, odd] = normal_pair(key, static_cast<uint64_t>(e / 2));
          row[k] = static_cast<float>(stdev * even);
          row[++k] = static_cast<float>(stdev * odd);
        } else {
          row[k] = static_cast<float>(stdev * normal_at(key, e));
        }
      }
    }
    store();
  }
  return params;
}

}  // namespace magix
