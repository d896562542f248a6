#include <fstream>

#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/mesh.hpp"
#include "magix/sharding.hpp"

namespace magix {

namespace {

void check_spec(const PartitionSpec& spec, const std::string& where) {
  std::vector<std::string> seen;
  for (const auto& d : spec.dims) {
    if (!d) continue;
    MAGIX_CHECK(*d == "data" || *d == "model",
                "{}: unknown mesh axis '{}' in spec {} (axes are 'data' and 'model')", where, *d,
                spec.str());
    MAGIX_CHECK(std::find(seen.begin(), seen.end(), *d) == seen.end(),
                "{}: mesh axis '{}' shards two dims in spec {}", where, *d, spec.str());
    seen.push_back(*d);
  }
}

}  // namespace

bool PartitionSpec::replicated() const {
  for (const auto& d : dims)
    if (d) return false;
  return true;
}

std::optional<std::string> PartitionSpec::axis(size_t i) const {
  return i < dims.size() ? dims[i] : std::nullopt;
}

bool PartitionSpec::uses(std::string_view a) const {
  for (const auto& d : dims)
    if (d && *d == a) return true;
  return false;
}

std::string PartitionSpec::str() const {
  std::vector<std::string> parts;
  for (const auto& d : dims) parts.push_back(d ? *d : "None");
  return fmt::format("({})", fmt::join(parts, ", "));
}

PartitionRules::PartitionRules(std::vector<std::pair<std::string, PartitionSpec>> rules)
    : rules_(std::move(rules)) {
  for (const auto& [pattern, spec] : rules_) {
    try {
      compiled_.emplace_back(pattern, std::regex::ECMAScript | std::regex::optimize);
    } catch (const std::regex_error& e) {
      MAGIX_FAIL("partition rule '{}': invalid regular expression: {}", pattern, e.what());
    }
    check_spec(spec, fmt::format("partition rule '{}'", pattern));
  }
}

std::optional<size_t> PartitionRules::match(std::string_view name) const {
  for (size_t i = 0; i < compiled_.size(); ++i) {
    if (std::regex_search(name.begin(), name.end(), compiled_[i])) return i;
  }
  return std::nullopt;
}

PartitionSpec PartitionRules::spec_for(std::string_view name, int ndim) const {
  if (ndim == 0) return {};
  auto i = match(name);
  if (!i) return {};
  const auto& [pattern, spec] = rules_[*i];
  MAGIX_CHECK(spec.dims.size() <= static_cast<size_t>(ndim),
              "parameter {} has {} dims but partition rule '{}' gives the spec {} with {} entries",
              name, ndim, pattern, spec.str(), spec.dims.size());
  return spec;
}

PartitionRules default_partition_rules(const std::string& family) {
  MAGIX_CHECK(family == "llama" || family == "mistral" || family == "gemma" || family == "qwen2" ||
                  family == "qwen3" || family == "gemma2" || family == "gemma3_text",
              "no default partition rules for model family '{}' (known: llama, mistral, gemma, "
              "qwen2, qwen3, gemma2, gemma3_text)",
              family);
  // HF layout [out, in]: column-parallel weights shard `out` over model, row-parallel ones
  // shard `in`; both shard the other dim over data (FSDP).
  return PartitionRules({
      {R"(embed_tokens\.weight$)", {"model", "data"}},
      {R"(lm_head\.weight$)", {"model", "data"}},
      {R"((q|k|v|gate|up)_proj\.weight$)", {"model", "data"}},
      {R"((o|down)_proj\.weight$)", {"data", "model"}},
      {R"((q|k|v|gate|up)_proj\.bias$)", {"model"}},
      {R"(norm\.weight$)", {}},  // also q_norm / k_norm (head_dim): every head uses them
  });
}

PartitionRules load_partition_rules(const std::filesystem::path& path) {
  std::ifstream in(path);
  MAGIX_CHECK(in, "cannot open partition rules file {}", path.string());
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  MAGIX_CHECK(!j.is_discarded(), "{}: invalid JSON", path.string());
  MAGIX_CHECK(j.is_array(), "{}: expected a list of [regex, spec] pairs", path.string());
  std::vector<std::pair<std::string, PartitionSpec>> rules;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    MAGIX_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_array(),
                "{}: entry {} must be [regex, [axis or null, ...]]", path.string(), i);
    PartitionSpec spec;
    for (const auto& a : e[1]) {
      MAGIX_CHECK(a.is_null() || a.is_string(),
                  "{}: entry {}: each spec entry must be \"data\", \"model\" or null",
                  path.string(), i);
      spec.dims.push_back(a.is_null() ? std::nullopt
                                      : std::optional<std::string>(a.get<std::string>()));
    }
    rules.emplace_back(e[0].get<std::string>(), std::move(spec));
  }
  try {
    return PartitionRules(std::move(rules));
  } catch (const Error& e) {
    MAGIX_FAIL("{}: {}", path.string(), e.what());
  }
}

ShardBox shard_box(std::string_view name, const Shape& global, const PartitionSpec& spec,
                   int data_size, int model_size, int data_rank, int model_rank) {
  ShardBox box{Shape(global.size(), 0), global};
  MAGIX_CHECK(spec.dims.size() <= global.size(), "parameter {} of shape {} cannot take spec {}",
              name, shape_str(global), spec.str());
  for (size_t i = 0; i < global.size(); ++i) {
    auto a = spec.axis(i);
    if (!a) continue;
    int parts = *a == "data" ? data_size : model_size;
    int rank = *a == "data" ? data_rank : model_rank;
    MAGIX_CHECK(global[i] % parts == 0,
                "parameter {} of shape {}: dim {} (size {}) does not divide by the '{}' axis "
                "(size {}) of spec {}",
                name, shape_str(global), i, global[i], *a, parts, spec.str());
    box.extent[i] = global[i] / parts;
    box.start[i] = box.extent[i] * rank;
  }
  return box;
}

ShardBox shard_box(std::string_view name, const Shape& global, const PartitionSpec& spec,
                   const Mesh& mesh) {
  return shard_box(name, global, spec, mesh.data_size(), mesh.model_size(), mesh.data_rank(),
                   mesh.model_rank());
}

}  // namespace magix
