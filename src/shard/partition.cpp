#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/mesh.hpp"
#include "magix/sharding.hpp"

namespace magix {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// The value of a part size expression: a product of positive integers and config fields.
// `fields` null: only checks the syntax and the field names (the value returned is then 1).
int64_t eval_part_size(const SpecPart& part, const std::string& where,
                       const std::map<std::string, int64_t, std::less<>>* fields) {
  MAGIX_CHECK(!trim(part.size).empty(), "{}: part '{}' has an empty size", where, part.name);
  int64_t value = 1;
  std::string_view rest = part.size;
  while (true) {
    const size_t star = rest.find('*');
    const std::string_view term = trim(rest.substr(0, star));
    int64_t v = 0;
    if (!term.empty() && std::all_of(term.begin(), term.end(), [](char c) {
          return c >= '0' && c <= '9';
        })) {
      for (char c : term) {
        MAGIX_CHECK(!__builtin_mul_overflow(v, 10, &v) && !__builtin_add_overflow(v, c - '0', &v),
                    "{}: part '{}': the number '{}' is too large", where, part.name, term);
      }
    } else {
      MAGIX_CHECK(std::find(kPartSizeFields.begin(), kPartSizeFields.end(), term) !=
                      kPartSizeFields.end(),
                  "{}: part '{}': size '{}' names '{}', which is neither an integer nor one of "
                  "the config fields {}",
                  where, part.name, part.size, term, fmt::join(kPartSizeFields, ", "));
      if (fields) {
        auto f = fields->find(term);
        MAGIX_CHECK(f != fields->end(), "{}: part '{}': config field '{}' has no value", where,
                    part.name, term);
        v = f->second;
      } else {
        v = 1;
      }
    }
    MAGIX_CHECK(!__builtin_mul_overflow(value, v, &value), "{}: part '{}': size '{}' overflows",
                where, part.name, part.size);
    if (star == std::string_view::npos) break;
    rest = rest.substr(star + 1);
  }
  return value;
}

void check_parts(const std::vector<SpecPart>& parts, const std::string& where) {
  if (parts.empty()) return;
  MAGIX_CHECK(parts.size() >= 2, "{}: a fused tensor needs at least two parts, got {}", where,
              parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    MAGIX_CHECK(!parts[i].name.empty(), "{}: part {} has no name", where, i);
    for (size_t j = 0; j < i; ++j) {
      MAGIX_CHECK(parts[j].name != parts[i].name, "{}: part '{}' is named twice", where,
                  parts[i].name);
    }
    eval_part_size(parts[i], where, nullptr);
  }
}

void check_spec(const PartitionSpec& spec, const std::string& where) {
  check_parts(spec.parts, where);
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
  std::string out = fmt::format("({})", fmt::join(parts, ", "));
  if (!this->parts.empty()) {
    std::vector<std::string> named;
    for (const SpecPart& p : this->parts) named.push_back(p.name + ": " + p.size);
    out += fmt::format(" parts [{}]", fmt::join(named, ", "));
  }
  return out;
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
                  family == "qwen3" || family == "gemma2" || family == "gemma3_text" ||
                  family == "phi3",
              "no default partition rules for model family '{}' (known: llama, mistral, gemma, "
              "qwen2, qwen3, gemma2, gemma3_text, phi3)",
              family);
  const std::vector<SpecPart> qkv = {{"q", "num_attention_heads*head_dim"},
                                     {"k", "num_key_value_heads*head_dim"},
                                     {"v", "num_key_value_heads*head_dim"}};
  const std::vector<SpecPart> gate_up = {{"gate", "intermediate_size"},
                                         {"up", "intermediate_size"}};
  // HF layout [out, in]: column-parallel weights shard `out` over model, row-parallel ones
  // shard `in`; both shard the other dim over data (FSDP).
  return PartitionRules({
      {R"(embed_tokens\.weight$)", {"model", "data"}},
      {R"(lm_head\.weight$)", {"model", "data"}},
      // Before the unfused rule, whose regex also finds "v_proj" in "qkv_proj".
      {R"(qkv_proj\.weight$)", {{"model", "data"}, qkv}},
      {R"(gate_up_proj\.weight$)", {{"model", "data"}, gate_up}},
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
    MAGIX_CHECK(e.is_array() && (e.size() == 2 || e.size() == 3) && e[0].is_string() &&
                    e[1].is_array(),
                "{}: entry {} must be [regex, [axis or null, ...]] or [regex, [axis or null, "
                "...], [[part, size], ...]]",
                path.string(), i);
    PartitionSpec spec;
    if (e.size() == 3) {
      MAGIX_CHECK(e[2].is_array(),
                  "{}: entry {}: the third element must be a list of [part name, size] pairs",
                  path.string(), i);
      for (const auto& part : e[2]) {
        MAGIX_CHECK(part.is_array() && part.size() == 2 && part[0].is_string() &&
                        (part[1].is_string() || part[1].is_number_unsigned()),
                    "{}: entry {}: each part must be [name, size] with size an integer or an "
                    "expression such as \"num_key_value_heads*head_dim\", got {}",
                    path.string(), i, part.dump());
        spec.parts.push_back({part[0].get<std::string>(), part[1].is_string()
                                                              ? part[1].get<std::string>()
                                                              : part[1].dump()});
      }
    }
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

namespace magix {

std::vector<int64_t> resolve_parts(std::string_view name, const Shape& global,
                                   const PartitionSpec& spec,
                                   const std::map<std::string, int64_t, std::less<>>& fields) {
  std::vector<int64_t> rows;
  if (spec.parts.empty()) return rows;
  const std::string where = fmt::format("parameter {} (spec {})", name, spec.str());
  check_parts(spec.parts, where);
  MAGIX_CHECK(!global.empty(), "{}: a scalar cannot have parts", where);
  int64_t sum = 0;
  for (const SpecPart& p : spec.parts) {
    const int64_t n = eval_part_size(p, where, &fields);
    MAGIX_CHECK(n > 0, "{}: part '{}' has {} rows; sizes must be positive", where, p.name, n);
    MAGIX_CHECK(!__builtin_add_overflow(sum, n, &sum), "{}: part sizes overflow", where);
    rows.push_back(n);
  }
  MAGIX_CHECK(sum == global[0],
              "{}: the parts' sizes sum to {} rows, but dim 0 of the tensor {} has {}; each "
              "part's size must be its rows in the fused tensor",
              where, sum, shape_str(global), global[0]);
  return rows;
}

std::vector<ShardBox> shard_pieces(std::string_view name, const Shape& global,
                                   const PartitionSpec& spec,
                                   const std::vector<int64_t>& part_rows, int data_size,
                                   int model_size, int data_rank, int model_rank) {
  if (part_rows.empty() || global.empty()) {
    return {shard_box(name, global, spec, data_size, model_size, data_rank, model_rank)};
  }
  // The other dims as shard_box gives them (dim 0 left whole), then dim 0 part by part.
  PartitionSpec rest = spec;
  rest.parts.clear();
  if (!rest.dims.empty()) rest.dims[0] = std::nullopt;
  const ShardBox base =
      shard_box(name, global, rest, data_size, model_size, data_rank, model_rank);
  const auto axis = spec.axis(0);
  const int n = !axis ? 1 : *axis == "data" ? data_size : model_size;
  const int rank = !axis ? 0 : *axis == "data" ? data_rank : model_rank;
  std::vector<ShardBox> out;
  int64_t offset = 0;
  for (size_t i = 0; i < part_rows.size(); ++i) {
    MAGIX_CHECK(part_rows[i] % n == 0,
                "parameter {} of shape {}: part '{}' ({} rows) does not divide by the '{}' axis "
                "(size {}) of spec {}",
                name, shape_str(global), i < spec.parts.size() ? spec.parts[i].name : "?",
                part_rows[i], axis.value_or("?"), n, spec.str());
    ShardBox box = base;
    box.extent[0] = part_rows[i] / n;
    box.start[0] = offset + box.extent[0] * rank;
    offset += part_rows[i];
    if (!out.empty() && out.back().start[0] + out.back().extent[0] == box.start[0]) {
      out.back().extent[0] += box.extent[0];  // adjacent rows: one box
    } else {
      out.push_back(std::move(box));
    }
  }
  return out;
}

std::vector<ShardBox> shard_pieces(std::string_view name, const Shape& global,
                                   const PartitionSpec& spec,
                                   const std::vector<int64_t>& part_rows, const Mesh& mesh) {
  return shard_pieces(name, global, spec, part_rows, mesh.data_size(), mesh.model_size(),
                      mesh.data_rank(), mesh.model_rank());
}

}  // namespace magix
