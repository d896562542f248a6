// Parameter sharding over the mesh: partition specs, ordered regex rules over HF parameter
// names, and the box of a tensor that each rank holds.
#pragma once

#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "magix/tensor.hpp"

namespace magix {

class Mesh;

// Per tensor dim, the mesh axis ("data" or "model") that shards it, or none. A spec shorter
// than the tensor leaves the trailing dims unsharded; an empty spec means replicated.
struct PartitionSpec {
  std::vector<std::optional<std::string>> dims;

  PartitionSpec() = default;
  PartitionSpec(std::initializer_list<std::optional<std::string>> d) : dims(d) {}

  bool replicated() const;
  // The axis of dim `i`, or none (also for dims past the spec's end).
  std::optional<std::string> axis(size_t i) const;
  // True if some dim is sharded over `axis`.
  bool uses(std::string_view axis) const;
  std::string str() const;  // e.g. "(model, data)", "(None, model)", "()"
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

// The default rules (DESIGN.md §3), the same for llama, mistral, gemma, qwen2, qwen3, gemma2 and
// gemma3_text: vocab and
// column-parallel weights (model, data), row-parallel weights (data, model), column biases
// (model), everything else replicated. Throws for an unknown family.
PartitionRules default_partition_rules(const std::string& family);

// Reads a rules file: a JSON list of [regex, spec] pairs, spec a list of "data" / "model" /
// null, e.g. [["(q|k|v)_proj\\.weight$", ["model", "data"]], ["norm", []]]. Errors name the
// file and the entry.
PartitionRules load_partition_rules(const std::filesystem::path& path);

// The part of a tensor that one rank holds: per dim [start, start + extent).
struct ShardBox {
  Shape start;
  Shape extent;
  bool operator==(const ShardBox&) const = default;
};

// The box of `global` that the rank at (data_rank, model_rank) of a (data_size, model_size)
// mesh holds under `spec`. Every sharded dim must divide evenly by its axis size: otherwise a
// magix::Error naming `name`, the dim and the axis.
ShardBox shard_box(std::string_view name, const Shape& global, const PartitionSpec& spec,
                   int data_size, int model_size, int data_rank, int model_rank);
ShardBox shard_box(std::string_view name, const Shape& global, const PartitionSpec& spec,
                   const Mesh& mesh);

}  // namespace magix
