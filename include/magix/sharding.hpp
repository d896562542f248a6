// Parameter sharding over the mesh: partition specs, ordered regex rules over HF parameter
// names, and the box of a tensor that each rank holds.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "magix/tensor.hpp"

namespace magix {

class Mesh;

// One named part of a fused tensor's dim 0 (e.g. the q rows of qkv_proj). `size` is its row
// count as an expression: an integer, or a product of integers and config fields
// (kPartSizeFields), e.g. "num_key_value_heads*head_dim".
struct SpecPart {
  std::string name;
  std::string size;
  bool operator==(const SpecPart&) const = default;
};

// The config fields a part size may name.
inline constexpr std::array<std::string_view, 6> kPartSizeFields = {
    "vocab_size",          "hidden_size",         "intermediate_size",
    "num_attention_heads", "num_key_value_heads", "head_dim"};

// Per tensor dim, the mesh axis ("data" or "model") that shards it, or none. A spec shorter
// than the tensor leaves the trailing dims unsharded; an empty spec means replicated.
//
// `parts` (optional, at least two) says that dim 0 is the concatenation of named parts, as in a
// fused weight (Phi-3's qkv_proj = q, k, v rows): then the axis on dim 0 splits each part on its
// own, and a rank's shard holds its slice of every part, in order (its q rows, then its k rows,
// then its v rows).
struct PartitionSpec {
  std::vector<std::optional<std::string>> dims;
  std::vector<SpecPart> parts;

  PartitionSpec() = default;
  PartitionSpec(std::initializer_list<std::optional<std::string>> d) : dims(d) {}
  PartitionSpec(std::initializer_list<std::optional<std::string>> d, std::vector<SpecPart> p)
      : dims(d), parts(std::move(p)) {}

  bool replicated() const;
  // The axis of dim `i`, or none (also for dims past the spec's end).
  std::optional<std::string> axis(size_t i) const;
  // True if some dim is sharded over `axis`.
  bool uses(std::string_view axis) const;
  // e.g. "(model, data)", "(None, model)", "()", "(model, data) parts [q: num_attention_heads*
  // head_dim, k: 32, v: 32]"
  std::string str() const;
  bool operator==(const PartitionSpec&) const = default;
};

using RuleList = std::vector<std::pair<std::string, PartitionSpec>>;

// An ordered list of (regex, spec): the first rule whose regex is found in a name gives its
// spec (Python re.search semantics); no match means replicated.
class PartitionRules {
 public:
  PartitionRules() = default;
  // Throws magix::Error on an invalid regex, an unknown axis, or an axis used twice in a spec.
  explicit PartitionRules(std::vector<std::pair<std::string, PartitionSpec>> rules);

  // The spec for a parameter of `ndim` dims; scalars are replicated. Throws, naming the
  // parameter and the rule, if the spec has more entries than the tensor has dims.
  PartitionSpec spec_for(std::string_view name, int ndim) const;
  // Index of the first matching rule, if any.
  std::optional<size_t> match(std::string_view name) const;

  const std::vector<std::pair<std::string, PartitionSpec>>& rules() const { return rules_; }

 private:
  std::vector<std::pair<std::string, PartitionSpec>> rules_;
  std::vector<std::regex> compiled_;
};

// The default rules (DESIGN.md §3), the same for every family: vocab and column-parallel
// weights (model, data), row-parallel weights (data, model), column biases (model), everything
// else replicated; the fused column-parallel weights of phi3 (qkv_proj: q, k, v; gate_up_proj:
// gate, up) are (model, data) split part by part. Throws for an unknown family.
PartitionRules default_partition_rules(const std::string& family);

// Reads a rules file: a JSON list of [regex, spec] or [regex, spec, parts] entries, spec a list
// of "data" / "model" / null, parts a list of [name, size] pairs (size an integer or an
// expression as SpecPart's), e.g. [["(q|k|v)_proj\\.weight$", ["model", "data"]], ["norm", []],
// ["qkv_proj\\.weight$", ["model", "data"], [["q", "num_attention_heads*head_dim"],
// ["k", "num_key_value_heads*head_dim"], ["v", "num_key_value_heads*head_dim"]]]]. Errors name
// the file and the entry.
PartitionRules load_partition_rules(const std::filesystem::path& path);

// The part of a tensor that one rank holds: per dim [start, start + extent).
struct ShardBox {
  Shape start;
  Shape extent;
  bool operator==(const ShardBox&) const = default;
};

// The row count of each part of `spec` for a tensor `name` of shape `global`, evaluating the
// size expressions with `fields` (config field -> value): empty when the spec has no parts.
// Errors (naming the tensor): fewer than two parts, duplicate or empty part names, an unknown
// field or a malformed expression, a size <= 0, sizes that do not sum to dim 0.
std::vector<int64_t> resolve_parts(std::string_view name, const Shape& global,
                                   const PartitionSpec& spec,
                                   const std::map<std::string, int64_t, std::less<>>& fields);

// The box of `global` that the rank at (data_rank, model_rank) of a (data_size, model_size)
// mesh holds under `spec` (its parts ignored: for a tensor with parts the extent is right but the
// rank's rows are shard_pieces'). Every sharded dim must divide evenly by its axis size: otherwise a
// magix::Error naming `name`, the dim and the axis.
ShardBox shard_box(std::string_view name, const Shape& global, const PartitionSpec& spec,
                   int data_size, int model_size, int data_rank, int model_rank);
ShardBox shard_box(std::string_view name, const Shape& global, const PartitionSpec& spec,
                   const Mesh& mesh);

// The boxes a rank holds of a tensor whose dim 0 is made of parts (`part_rows`, from
// resolve_parts; empty: one part): each part's rows split over dim 0's axis on their own, the
// other dims as shard_box. The rank's local tensor is its boxes stacked along dim 0, in order;
// adjacent boxes are merged (one box where dim 0 is not split). Each part's rows must divide by
// dim 0's axis size: otherwise an error naming the tensor, the part and the axis.
std::vector<ShardBox> shard_pieces(std::string_view name, const Shape& global,
                                   const PartitionSpec& spec,
                                   const std::vector<int64_t>& part_rows, int data_size,
                                   int model_size, int data_rank, int model_rank);
std::vector<ShardBox> shard_pieces(std::string_view name, const Shape& global,
                                   const PartitionSpec& spec,
                                   const std::vector<int64_t>& part_rows, const Mesh& mesh);

}  // namespace magix
