// config.json -> ModelConfig, following transformers 5.23's config classes field by field
// (LlamaConfig, MistralConfig, GemmaConfig, Qwen2Config, Qwen3Config, Gemma2Config,
// Gemma3TextConfig, Phi3Config and RotaryEmbeddingConfigMixin).
#include "magix/model_config.hpp"

#include <cmath>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"

namespace magix {
namespace {

using nlohmann::json;

// A field that is absent or null counts as "not given".
bool given(const json& j, const char* key) {
  return j.contains(key) && !j.at(key).is_null();
}

ModelFamily parse_family(const json& j, const std::string& source) {
  MAGIX_CHECK(j.contains("model_type"),
              "{}: field 'model_type' is missing (expected llama, mistral, gemma, qwen2, qwen3, "
              "gemma2, gemma3_text or phi3)",
              source);
  const std::string type = json_get<std::string>(j, "model_type", source);
  if (type == "llama") return ModelFamily::kLlama;
  if (type == "mistral") return ModelFamily::kMistral;
  if (type == "gemma") return ModelFamily::kGemma;
  if (type == "qwen2") return ModelFamily::kQwen2;
  if (type == "qwen3") return ModelFamily::kQwen3;
  if (type == "gemma2") return ModelFamily::kGemma2;
  if (type == "gemma3_text") return ModelFamily::kGemma3Text;
  if (type == "phi3") return ModelFamily::kPhi3;
  MAGIX_FAIL(
      "{}: model_type '{}' is not supported (supported: llama, mistral, gemma, qwen2, qwen3, "
      "gemma2, gemma3_text, phi3)",
      source, type);
}

// The Gemma family proper: (1 + w) norms, sqrt(hidden) embedding scale, GeGLU defaults.
bool gemma_like(ModelFamily f) {
  return f == ModelFamily::kGemma || f == ModelFamily::kGemma2 || f == ModelFamily::kGemma3Text;
}

// Gemma 2 / 3 layer_types, defaulting as Gemma2Config / Gemma3TextConfig do: layer i slides
// unless (i + 1) is a multiple of `pattern` (gemma2: 2, gemma3_text: sliding_window_pattern,
// default 6).
std::vector<char> gemma_sliding_layers(const json& j, int64_t layers, int64_t pattern,
                                       const std::string& source) {
  std::vector<char> sliding(static_cast<size_t>(layers), 0);
  if (given(j, "layer_types")) {
    const json& types = j.at("layer_types");
    MAGIX_CHECK(types.is_array() && static_cast<int64_t>(types.size()) == layers,
                "{}: layer_types must list {} layer types", source, layers);
    for (size_t i = 0; i < types.size(); ++i) {
      std::string t = types[i].is_string() ? types[i].get<std::string>() : types[i].dump();
      MAGIX_CHECK(t == "full_attention" || t == "sliding_attention",
                  "{}: layer_types[{}] '{}' is not supported", source, i, t);
      sliding[i] = t == "sliding_attention";
    }
    return sliding;
  }
  MAGIX_CHECK(pattern > 0, "{}: sliding_window_pattern must be positive, got {}", source, pattern);
  for (int64_t i = 0; i < layers; ++i) sliding[static_cast<size_t>(i)] = (i + 1) % pattern != 0;
  return sliding;
}

// transformers' YaRN attention factor (get_mscale): 0.1 * mscale * ln(scale) + 1 above scale 1.
double yarn_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// yarn and longrope: original_max_position_embeddings (a top-level one wins over the dict's, as
// for llama3; `fallback` when neither is given) and factor (default max_position_embeddings /
// original), stored in c.rope_scaling; returns the factor in double.
double read_original_and_factor(const json& j, const json& rope, ModelConfig& c, int64_t fallback,
                                const std::string& where, const std::string& source) {
  auto& s = c.rope_scaling;
  s.original_max_position = json_value<int64_t>(
      j, "original_max_position_embeddings",
      json_value<int64_t>(rope, "original_max_position_embeddings", fallback, where), source);
  MAGIX_CHECK(s.original_max_position > 0, "{}: original_max_position_embeddings must be > 0",
              where);
  const double factor = json_value<double>(
      rope, "factor",
      static_cast<double>(c.max_position_embeddings) / static_cast<double>(s.original_max_position),
      where);
  MAGIX_CHECK(std::isfinite(factor) && factor > 0, "{}: factor must be a positive finite number",
              where);
  s.factor = static_cast<float>(factor);
  return factor;
}

// rope_type "yarn" as _compute_yarn_parameters reads it: factor (null: max_position_embeddings /
// original_max_position_embeddings), beta_fast / beta_slow (absent, null or 0: 32 / 1), truncate,
// and attention_factor, else mscale / mscale_all_dim (both non-zero), else ln(factor).
void parse_yarn(const json& j, const json& rope, ModelConfig& c, const std::string& where,
                const std::string& source) {
  auto& s = c.rope_scaling;
  s.kind = RopeScaling::Kind::kYarn;
  MAGIX_CHECK(rope.contains("factor"), "{}: yarn rope needs 'factor'", where);
  const double factor =
      read_original_and_factor(j, rope, c, c.max_position_embeddings, where, source);
  s.beta_fast = json_value<double>(rope, "beta_fast", 0, where);
  s.beta_slow = json_value<double>(rope, "beta_slow", 0, where);
  if (s.beta_fast == 0) s.beta_fast = 32;
  if (s.beta_slow == 0) s.beta_slow = 1;
  MAGIX_CHECK(std::isfinite(s.beta_fast) && std::isfinite(s.beta_slow) && s.beta_fast > 0 &&
                  s.beta_slow > 0,
              "{}: beta_fast and beta_slow must be positive finite numbers", where);
  s.truncate = json_value<bool>(rope, "truncate", true, where);
  double attention = 0;
  if (given(rope, "attention_factor")) {
    attention = json_value<double>(rope, "attention_factor", 1.0, where);
  } else {
    const double mscale = json_value<double>(rope, "mscale", 0, where);
    const double mscale_all_dim = json_value<double>(rope, "mscale_all_dim", 0, where);
    attention = mscale != 0 && mscale_all_dim != 0
                    ? yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                    : yarn_mscale(factor, 1.0);
  }
  MAGIX_CHECK(std::isfinite(attention) && attention > 0,
              "{}: attention_factor must be a positive finite number, got {}", where, attention);
  s.attention_scaling = static_cast<float>(attention);
}

// _compute_longrope_parameters: short_factor and long_factor (D/2 divisors each), the original
// context (a top-level original_max_position_embeddings wins over the dict's; required), factor
// (default max_position_embeddings / original) and attention_factor (default
// sqrt(1 + ln factor / ln original) when factor > 1, else 1).
void parse_longrope(const json& j, const json& rope, ModelConfig& c, const std::string& where,
                    const std::string& source) {
  auto& s = c.rope_scaling;
  s.kind = RopeScaling::Kind::kLongRope;
  const int64_t half = c.rope_dim() / 2;
  for (const auto& [key, out] :
       {std::pair{"short_factor", &s.short_factor}, std::pair{"long_factor", &s.long_factor}}) {
    MAGIX_CHECK(given(rope, key), "{}: longrope needs '{}'", where, key);
    const json& list = json_array_at(rope, key, where);
    MAGIX_CHECK(std::ssize(list) == half,
                "{}: {} has {} entries, expected {} (half the {} rotated dims)", where, key,
                list.size(), half, c.rope_dim());
    out->clear();
    for (const json& v : list) {
      const double x = json_as<double>(v, fmt::format("{}: {}", where, key));
      MAGIX_CHECK(std::isfinite(x) && x > 0,
                  "{}: {} entries must be positive finite numbers, got {}", where, key, x);
      out->push_back(static_cast<float>(x));
    }
  }
  const double factor = read_original_and_factor(j, rope, c, 0, where, source);  // 0: required
  double attention =
      factor <= 1.0 ? 1.0
                    : std::sqrt(1 + std::log(factor) /
                                        std::log(static_cast<double>(s.original_max_position)));
  if (given(rope, "attention_factor")) {
    attention = json_value<double>(rope, "attention_factor", 1.0, where);
  }
  MAGIX_CHECK(std::isfinite(attention) && attention > 0,
              "{}: attention_factor must be a positive finite number, got {}", where, attention);
  s.attention_scaling = static_cast<float>(attention);
}

// rope_scaling (older layout) takes precedence over rope_parameters, as in transformers;
// rope_theta comes from the dict, else the top level, else 10000.
void parse_rope(const json& j, ModelConfig& c, const std::string& source) {
  json rope = json::object();
  const char* field = "rope_parameters";
  if (given(j, "rope_scaling")) {
    rope = j.at("rope_scaling");
    field = "rope_scaling";
  } else if (given(j, "rope_parameters")) {
    rope = j.at("rope_parameters");
  }
  json_expect_object(rope, json_key_name(source, field));
  c.rope_theta = static_cast<float>(json_value<double>(
      rope, "rope_theta", json_value<double>(j, "rope_theta", 10000.0, source), source));
  MAGIX_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0,
              "{}: rope_theta must be a positive finite number, got {}", source, c.rope_theta);
  // partial_rotary_factor (the dict's, else the top level's): transformers' phi3 rotates the first
  // int(head_dim · factor) dims of each head (Phi-4-mini: 0.75); its other families rotate whole
  // heads whatever the factor says, so magix refuses a factor there rather than guess.
  const double partial =
      json_value<double>(rope, "partial_rotary_factor",
                         json_value<double>(j, "partial_rotary_factor", 1.0, source), source);
  MAGIX_CHECK(std::isfinite(partial) && partial > 0 && partial <= 1,
              "{}: partial_rotary_factor must be in (0, 1], got {}", source, partial);
  c.rotary_dim = c.head_dim;
  if (partial != 1.0) {
    MAGIX_CHECK(c.family == ModelFamily::kPhi3,
                "{}: partial_rotary_factor {} is supported for phi3 only ({} rotates whole heads)",
                source, partial, family_name(c.family));
    c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial);
    MAGIX_CHECK(c.rotary_dim > 0 && c.rotary_dim % 2 == 0,
                "{}: partial_rotary_factor {} of head_dim {} rotates {} dims: must be even and > 0",
                source, partial, c.head_dim, c.rotary_dim);
  }
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (!given(rope, key)) continue;
    type = json_get<std::string>(rope, key, json_key_name(source, field));
    break;
  }
  const std::string where = fmt::format("{}: {}", source, field);
  if (c.family == ModelFamily::kPhi3) {
    // Phi3Config reads "su" and "yarn" as "longrope" and accepts only default and longrope.
    if (type == "su" || type == "yarn") type = "longrope";
    MAGIX_CHECK(type == "default" || type == "longrope",
                "{}: rope type '{}' is not valid for phi3 (transformers accepts default and "
                "longrope)",
                where, type);
  }
  if (type == "default") {
    c.rope_scaling.kind = RopeScaling::Kind::kNone;
  } else if (type == "linear") {
    c.rope_scaling.kind = RopeScaling::Kind::kLinear;
    MAGIX_CHECK(given(rope, "factor"), "{}: linear rope needs 'factor'", where);
    c.rope_scaling.factor = static_cast<float>(json_value<double>(rope, "factor", 1.0, where));
    MAGIX_CHECK(std::isfinite(c.rope_scaling.factor) && c.rope_scaling.factor > 0,
                "{}: factor must be a positive finite number", where);
  } else if (type == "llama3") {
    auto& s = c.rope_scaling;
    s.kind = RopeScaling::Kind::kLlama3;
    for (const char* key : {"factor", "low_freq_factor", "high_freq_factor"}) {
      MAGIX_CHECK(given(rope, key), "{}: llama3 rope needs '{}'", where, key);
    }
    s.factor = static_cast<float>(json_value<double>(rope, "factor", 1.0, where));
    s.low_freq_factor = static_cast<float>(json_value<double>(rope, "low_freq_factor", 1.0, where));
    s.high_freq_factor =
        static_cast<float>(json_value<double>(rope, "high_freq_factor", 4.0, where));
    for (float v : {s.factor, s.low_freq_factor, s.high_freq_factor}) {
      MAGIX_CHECK(std::isfinite(v) && v > 0,
                  "{}: factor, low_freq_factor and high_freq_factor must be positive finite "
                  "numbers",
                  where);
    }
    MAGIX_CHECK(s.high_freq_factor != s.low_freq_factor,
                "{}: high_freq_factor must differ from low_freq_factor", where);
    // transformers prefers a top-level original_max_position_embeddings, else the dict's, else
    // max_position_embeddings.
    s.original_max_position =
        json_value<int64_t>(j, "original_max_position_embeddings",
                            json_value<int64_t>(rope, "original_max_position_embeddings",
                                                c.max_position_embeddings, where),
                            source);
  } else if (type == "yarn") {
    parse_yarn(j, rope, c, where, source);
  } else if (type == "longrope") {
    parse_longrope(j, rope, c, where, source);
  } else {
    MAGIX_FAIL(
        "{}: rope type '{}' is not supported (supported: default, linear, llama3, yarn, longrope)",
        where, type);
  }
}

// Gemma3TextConfig: rope_parameters keyed by layer type ({"full_attention": {...},
// "sliding_attention": {...}}), or the older layout: rope_theta (default 1e6) and rope_scaling for
// the full layers, rope_local_base_freq (default 1e4) for the sliding ones. Each dict is read as
// parse_rope reads a family's one.
void parse_gemma3_rope(const json& j, ModelConfig& c, const std::string& source) {
  json full = json::object(), local = json::object();
  if (given(j, "rope_parameters")) {
    const json& rp = j.at("rope_parameters");
    MAGIX_CHECK(
        rp.is_object() && (rp.contains("full_attention") || rp.contains("sliding_attention")),
        "{}: gemma3_text rope_parameters must be keyed by layer type (full_attention, "
        "sliding_attention), got {}",
        source, rp.dump());
    if (given(rp, "full_attention")) full = rp.at("full_attention");
    if (given(rp, "sliding_attention")) local = rp.at("sliding_attention");
  }
  MAGIX_CHECK(full.is_object() && local.is_object(),
              "{}: rope_parameters.full_attention and .sliding_attention must be objects", source);
  if (given(j, "rope_scaling")) {
    full.update(json_object_at(j, "rope_scaling", source));
  }
  if (!given(full, "rope_theta"))
    full["rope_theta"] = json_value<double>(j, "rope_theta", 1e6, source);
  if (!given(local, "rope_theta")) {
    local["rope_theta"] = json_value<double>(j, "rope_local_base_freq", 1e4, source);
  }
  auto parse_one = [&](json dict, const char* type) {
    json one = {{"rope_parameters", std::move(dict)}};
    for (const char* key : {"original_max_position_embeddings", "partial_rotary_factor"}) {
      if (j.contains(key)) one[key] = j.at(key);
    }
    ModelConfig t;
    t.max_position_embeddings = c.max_position_embeddings;
    parse_rope(one, t, fmt::format("{} (rope of the {} layers)", source, type));
    return t;
  };
  const ModelConfig global = parse_one(full, "full_attention");
  c.rope_theta = global.rope_theta;
  c.rope_scaling = global.rope_scaling;
  const ModelConfig sliding = parse_one(local, "sliding_attention");
  c.rope_local_theta = sliding.rope_theta;
  c.rope_local_scaling = sliding.rope_scaling;
}

Activation parse_activation(const json& j, ModelFamily family, const std::string& source) {
  std::string act = gemma_like(family) ? "gelu_pytorch_tanh" : "silu";
  // Gemma2Config and Gemma3TextConfig name the field hidden_activation.
  const char* key = family == ModelFamily::kGemma2 || family == ModelFamily::kGemma3Text
                        ? "hidden_activation"
                        : "hidden_act";
  if (given(j, key)) {
    act = json_get<std::string>(j, key, source);
  }
  // Gemma's legacy "gelu" means the tanh approximation (GemmaConfig.__post_init__); Gemma's
  // hidden_activation field is not read by transformers 5.23 and is ignored here too.
  if (family == ModelFamily::kGemma && act == "gelu") act = "gelu_pytorch_tanh";
  if (act == "silu" || act == "swish") return Activation::kSilu;
  if (act == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  MAGIX_FAIL("{}: {} '{}' is not supported (supported: silu, gelu_pytorch_tanh)", source, key, act);
}

void parse_sliding_window(const json& j, ModelConfig& c, const std::string& source) {
  c.sliding_window.assign(static_cast<size_t>(c.num_layers), 0);
  auto window_value = [&](int64_t fallback) {
    int64_t w = json_value<int64_t>(j, "sliding_window", fallback, source);
    MAGIX_CHECK(w >= 0, "{}: sliding_window must be >= 0, got {}", source, w);
    return w;
  };
  if (c.family == ModelFamily::kMistral) {
    // MistralConfig: sliding_window defaults to 4096 when absent; null disables it.
    int64_t w = j.contains("sliding_window") ? window_value(0) : 4096;
    c.sliding_window.assign(c.sliding_window.size(), w);
  } else if (c.family == ModelFamily::kGemma2 || c.family == ModelFamily::kGemma3Text) {
    // Gemma2Config / Gemma3TextConfig: sliding_window (default 4096; null: none) on the
    // "sliding_attention" layers of layer_types.
    const int64_t pattern = c.family == ModelFamily::kGemma2
                                ? 2
                                : json_value<int64_t>(j, "sliding_window_pattern", 6, source);
    const std::vector<char> sliding = gemma_sliding_layers(j, c.num_layers, pattern, source);
    const int64_t w = j.contains("sliding_window") ? window_value(0) : 4096;
    for (size_t i = 0; i < sliding.size(); ++i) c.sliding_window[i] = sliding[i] ? w : 0;
    if (c.family == ModelFamily::kGemma3Text) c.local_rope = sliding;
  } else if (c.family == ModelFamily::kQwen2 || c.family == ModelFamily::kQwen3) {
    // Qwen2Config / Qwen3Config: the window applies only with use_sliding_window, on the layers
    // that layer_types marks "sliding_attention" (default: layers >= max_window_layers).
    if (!json_value<bool>(j, "use_sliding_window", false, source)) return;
    int64_t w = j.contains("sliding_window") ? window_value(0) : 4096;
    if (w == 0) return;
    if (given(j, "layer_types")) {
      const json& types = j.at("layer_types");
      MAGIX_CHECK(types.is_array() && static_cast<int64_t>(types.size()) == c.num_layers,
                  "{}: layer_types must list {} layer types", source, c.num_layers);
      for (size_t i = 0; i < types.size(); ++i) {
        std::string t = types[i].is_string() ? types[i].get<std::string>() : types[i].dump();
        MAGIX_CHECK(t == "full_attention" || t == "sliding_attention",
                    "{}: layer_types[{}] '{}' is not supported", source, i, t);
        if (t == "sliding_attention") c.sliding_window[i] = w;
      }
    } else {
      int64_t first = json_value<int64_t>(j, "max_window_layers", 28, source);
      for (int64_t i = std::max<int64_t>(first, 0); i < c.num_layers; ++i) {
        c.sliding_window[static_cast<size_t>(i)] = w;
      }
    }
  }
  if (c.family == ModelFamily::kPhi3) {
    // Phi3Config: sliding_window defaults to null (none); a value applies to every layer.
    c.sliding_window.assign(c.sliding_window.size(), window_value(0));
  }
  // llama and gemma have no sliding window in transformers 5.23.
}

std::optional<int64_t> optional_id(const json& j, const char* key, std::optional<int64_t> dflt,
                                   const std::string& source) {
  if (!j.contains(key)) return dflt;
  if (j.at(key).is_null()) return std::nullopt;
  return json_get<int64_t>(j, key, source);
}

}  // namespace

std::string_view family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama:
      return "llama";
    case ModelFamily::kMistral:
      return "mistral";
    case ModelFamily::kGemma:
      return "gemma";
    case ModelFamily::kQwen2:
      return "qwen2";
    case ModelFamily::kQwen3:
      return "qwen3";
    case ModelFamily::kGemma2:
      return "gemma2";
    case ModelFamily::kGemma3Text:
      return "gemma3_text";
    case ModelFamily::kPhi3:
      return "phi3";
  }
  return "?";
}

ModelConfig parse_model_config(const json& j, const std::string& source) {
  MAGIX_CHECK(j.is_object(), "{}: a model config must be a JSON object, found {}", source,
              json_found(j));
  ModelConfig c;
  c.raw = j;
  c.family = parse_family(j, source);
  const ModelFamily f = c.family;
  c.vocab_size = json_get<int64_t>(j, "vocab_size", source);
  c.hidden_size = json_get<int64_t>(j, "hidden_size", source);
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size", source);
  c.num_layers = json_get<int64_t>(j, "num_hidden_layers", source);
  c.num_heads = json_get<int64_t>(j, "num_attention_heads", source);
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_layers},
                        {"num_attention_heads", c.num_heads}}) {
    MAGIX_CHECK(v > 0, "{}: field '{}' must be positive, got {}", source, key, v);
  }
  MAGIX_CHECK(c.vocab_size <= INT32_MAX, "{}: vocab_size {} is too large", source, c.vocab_size);
  // Family defaults of transformers when the key is absent; null means "num_attention_heads".
  const bool gemma23 = f == ModelFamily::kGemma2 || f == ModelFamily::kGemma3Text;
  int64_t kv_default = f == ModelFamily::kMistral                             ? 8
                       : f == ModelFamily::kGemma                             ? 16
                       : f == ModelFamily::kQwen2 || f == ModelFamily::kQwen3 ? 32
                       : gemma23                                              ? 4
                                                                              : c.num_heads;
  c.num_kv_heads = j.contains("num_key_value_heads")
                       ? json_value<int64_t>(j, "num_key_value_heads", c.num_heads, source)
                       : kv_default;
  MAGIX_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
              "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
              c.num_heads, c.num_kv_heads);
  int64_t head_dim_default = c.hidden_size / c.num_heads;
  if (gemma_like(f) && !j.contains("head_dim")) head_dim_default = 256;
  if (f == ModelFamily::kQwen3 && !j.contains("head_dim")) head_dim_default = 128;
  c.head_dim = json_value<int64_t>(j, "head_dim", head_dim_default, source);
  MAGIX_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0,
              "{}: head_dim must be positive and even, "
              "got {}",
              source, c.head_dim);
  if (f == ModelFamily::kLlama) {
    MAGIX_CHECK(c.hidden_size % c.num_heads == 0,
                "{}: hidden_size ({}) must be a multiple of num_attention_heads ({})", source,
                c.hidden_size, c.num_heads);
  }
  c.rms_norm_eps = static_cast<float>(
      json_value<double>(j, "rms_norm_eps", f == ModelFamily::kPhi3 ? 1e-5 : 1e-6, source));
  MAGIX_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0,
              "{}: rms_norm_eps must be a positive finite number, got {}", source, c.rms_norm_eps);
  const int64_t max_pos_default = f == ModelFamily::kLlama     ? 2048
                                  : f == ModelFamily::kMistral ? 4096 * 32
                                  : f == ModelFamily::kGemma || f == ModelFamily::kGemma2 ? 8192
                                  : f == ModelFamily::kGemma3Text                         ? 131072
                                  : f == ModelFamily::kPhi3                               ? 4096
                                                                                          : 32768;
  c.max_position_embeddings =
      json_value<int64_t>(j, "max_position_embeddings", max_pos_default, source);
  MAGIX_CHECK(c.max_position_embeddings > 0, "{}: max_position_embeddings must be positive, got {}",
              source, c.max_position_embeddings);
  c.initializer_range = json_value<double>(j, "initializer_range", 0.02, source);
  MAGIX_CHECK(std::isfinite(c.initializer_range) && c.initializer_range >= 0,
              "{}: initializer_range must be a finite number >= 0, got {}", source,
              c.initializer_range);
  if (f == ModelFamily::kGemma3Text) {
    parse_gemma3_rope(j, c, source);
  } else {
    parse_rope(j, c, source);
  }
  c.activation = parse_activation(j, f, source);

  const bool attention_bias = json_value<bool>(j, "attention_bias", false, source);
  // Gemma 2 / 3 put their post-attention norm between o_proj and the residual; magix adds
  // o_proj's bias after the row-parallel all-reduce, beside the residual, so it has no place
  // for one there (no released Gemma 2 / 3 checkpoint has attention biases).
  MAGIX_CHECK(!(gemma23 && attention_bias),
              "{}: attention_bias true is not supported for {} (set it to false)", source,
              family_name(f));
  c.attention_bias =
      f == ModelFamily::kQwen2 ||
      ((f == ModelFamily::kLlama || f == ModelFamily::kGemma || f == ModelFamily::kQwen3) &&
       attention_bias);
  c.o_proj_bias =
      (f == ModelFamily::kLlama || f == ModelFamily::kGemma || f == ModelFamily::kQwen3) &&
      attention_bias;
  c.mlp_bias = f == ModelFamily::kLlama && json_value<bool>(j, "mlp_bias", false, source);
  c.tie_word_embeddings = json_value<bool>(j, "tie_word_embeddings", gemma_like(f), source);
  c.qk_norm = f == ModelFamily::kQwen3 || f == ModelFamily::kGemma3Text;
  c.sandwich_norms = gemma23;
  if (gemma23) {
    c.query_pre_attn_scalar = json_value<double>(j, "query_pre_attn_scalar", 256, source);
    MAGIX_CHECK(std::isfinite(c.query_pre_attn_scalar) && c.query_pre_attn_scalar > 0,
                "{}: query_pre_attn_scalar must be a positive finite number, got {}", source,
                c.query_pre_attn_scalar);
    // Gemma2Config defaults: attention 50, final 30; Gemma3TextConfig: none. transformers 5.23's
    // Gemma3Attention does not pass attn_logit_softcapping to its attention, so gemma3_text
    // ignores it as transformers does.
    const auto softcap = [&](const char* key, double fallback) {
      const double v = j.contains(key) ? json_value<double>(j, key, 0, source) : fallback;
      MAGIX_CHECK(std::isfinite(v) && v >= 0, "{}: {} must be a positive finite number or null",
                  source, key);
      return static_cast<float>(v);
    };
    const bool g2 = f == ModelFamily::kGemma2;
    if (g2) c.attn_softcap = softcap("attn_logit_softcapping", 50.0);
    c.final_softcap = softcap("final_logit_softcapping", g2 ? 30.0 : 0.0);
  }

  double dropout = json_value<double>(j, "attention_dropout", 0.0, source);
  MAGIX_CHECK(dropout == 0.0,
              "{}: attention_dropout {} is not supported (training dropout is not implemented; "
              "set it to 0.0)",
              source, dropout);
  if (gemma_like(f)) {
    MAGIX_CHECK(!json_value<bool>(j, "use_bidirectional_attention", false, source),
                "{}: use_bidirectional_attention true is not supported (causal attention only)",
                source);
  }
  if (f == ModelFamily::kPhi3) {
    for (const char* key : {"resid_pdrop", "embd_pdrop"}) {
      const double p = json_value<double>(j, key, 0.0, source);
      MAGIX_CHECK(p == 0.0,
                  "{}: {} {} is not supported (training dropout is not implemented; set it to "
                  "0.0)",
                  source, key, p);
    }
  }
  if (f == ModelFamily::kLlama && given(j, "pretraining_tp")) {
    // transformers 5.23 no longer reads pretraining_tp in the forward pass; nothing to do.
  }
  parse_sliding_window(j, c, source);

  const bool qwen = f == ModelFamily::kQwen2 || f == ModelFamily::kQwen3;
  c.pad_token_id = optional_id(j, "pad_token_id",
                               gemma_like(f)             ? std::optional<int64_t>(0)
                               : f == ModelFamily::kPhi3 ? std::optional<int64_t>(32000)
                                                         : std::nullopt,
                               source);
  std::optional<int64_t> bos_default = gemma_like(f) ? std::optional<int64_t>(2)
                                       : qwen        ? std::nullopt
                                                     : std::optional<int64_t>(1);
  c.bos_token_id = optional_id(j, "bos_token_id", bos_default, source);
  if (j.contains("eos_token_id") && j.at("eos_token_id").is_array()) {
    c.eos_token_ids = json_get<std::vector<int64_t>>(j, "eos_token_id", source);
  } else {
    std::optional<int64_t> eos_default = gemma_like(f)             ? std::optional<int64_t>(1)
                                         : qwen                    ? std::nullopt
                                         : f == ModelFamily::kPhi3 ? std::optional<int64_t>(32000)
                                                                   : std::optional<int64_t>(2);
    if (auto eos = optional_id(j, "eos_token_id", eos_default, source)) {
      c.eos_token_ids.push_back(*eos);
    }
  }
  const auto check_id = [&](const char* key, int64_t id) {
    MAGIX_CHECK(id >= 0 && id < c.vocab_size, "{}: {} {} is outside the vocabulary [0, {})", source,
                key, id, c.vocab_size);
  };
  if (c.pad_token_id) check_id("pad_token_id", *c.pad_token_id);
  if (c.bos_token_id) check_id("bos_token_id", *c.bos_token_id);
  for (int64_t id : c.eos_token_ids) check_id("eos_token_id", id);
  // GemmaTextScaledWordEmbedding keeps sqrt(hidden_size) as an fp32 tensor.
  c.embed_scale =
      gemma_like(f) ? static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size))) : 1.0f;
  c.norm_offset = gemma_like(f) ? 1.0f : 0.0f;
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& path) {
  // Real config.json files are 1-10 KB (a multimodal one some tens of KB).
  constexpr int64_t kMaxConfigBytes = 4 << 20;
  const std::string text = read_text_file_bounded(path, kMaxConfigBytes, "model config");
  return parse_model_config(parse_json(text, path.string()), path.string());
}

}  // namespace magix
