// config.json -> ModelConfig, following transformers 5.23's config classes field by field
// (LlamaConfig, MistralConfig, GemmaConfig, Qwen2Config, Phi3Config and
// RotaryEmbeddingConfigMixin).
#include "magix/model_config.hpp"

#include <cmath>
#include <fstream>

#include "magix/error.hpp"

namespace magix {
namespace {

using nlohmann::json;

// A field that is absent or null counts as "not given".
bool given(const json& j, const char* key) {
  return j.contains(key) && !j.at(key).is_null();
}

int64_t get_int(const json& j, const char* key, const std::string& source) {
  MAGIX_CHECK(given(j, key), "{}: required field '{}' is missing", source, key);
  const json& v = j.at(key);
  MAGIX_CHECK(v.is_number_integer(), "{}: field '{}' must be an integer, got {}", source, key,
              v.dump());
  return v.get<int64_t>();
}

int64_t get_int_or(const json& j, const char* key, int64_t fallback, const std::string& source) {
  return given(j, key) ? get_int(j, key, source) : fallback;
}

double get_number_or(const json& j, const char* key, double fallback, const std::string& source) {
  if (!given(j, key)) return fallback;
  const json& v = j.at(key);
  MAGIX_CHECK(v.is_number(), "{}: field '{}' must be a number, got {}", source, key, v.dump());
  return v.get<double>();
}

bool get_bool_or(const json& j, const char* key, bool fallback, const std::string& source) {
  if (!given(j, key)) return fallback;
  const json& v = j.at(key);
  MAGIX_CHECK(v.is_boolean(), "{}: field '{}' must be true or false, got {}", source, key,
              v.dump());
  return v.get<bool>();
}

ModelFamily parse_family(const json& j, const std::string& source) {
  MAGIX_CHECK(given(j, "model_type") && j.at("model_type").is_string(),
              "{}: field 'model_type' is missing (expected llama, mistral, gemma, qwen2 or phi3)",
              source);
  const std::string type = j.at("model_type").get<std::string>();
  if (type == "llama") return ModelFamily::kLlama;
  if (type == "mistral") return ModelFamily::kMistral;
  if (type == "gemma") return ModelFamily::kGemma;
  if (type == "qwen2") return ModelFamily::kQwen2;
  if (type == "phi3") return ModelFamily::kPhi3;
  MAGIX_FAIL("{}: model_type '{}' is not supported (supported: llama, mistral, gemma, qwen2, phi3)",
             source, type);
}

// transformers' YaRN attention factor (get_mscale): 0.1 * mscale * ln(scale) + 1 above scale 1.
double yarn_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// rope_type "yarn" as _compute_yarn_parameters reads it: factor (null: max_position_embeddings /
// original_max_position_embeddings), beta_fast / beta_slow (absent, null or 0: 32 / 1), truncate,
// and attention_factor, else mscale / mscale_all_dim (both non-zero), else ln(factor).
void parse_yarn(const json& j, const json& rope, ModelConfig& c, const std::string& where,
                const std::string& source) {
  auto& s = c.rope_scaling;
  s.kind = RopeScaling::Kind::kYarn;
  MAGIX_CHECK(rope.contains("factor"), "{}: yarn rope needs 'factor'", where);
  // As for llama3: a top-level original_max_position_embeddings wins over the dict's.
  s.original_max_position = get_int_or(
      j, "original_max_position_embeddings",
      get_int_or(rope, "original_max_position_embeddings", c.max_position_embeddings, where),
      source);
  MAGIX_CHECK(s.original_max_position > 0, "{}: original_max_position_embeddings must be > 0",
              where);
  const double factor = get_number_or(
      rope, "factor",
      static_cast<double>(c.max_position_embeddings) / static_cast<double>(s.original_max_position),
      where);
  MAGIX_CHECK(std::isfinite(factor) && factor > 0, "{}: factor must be a positive finite number",
              where);
  s.factor = static_cast<float>(factor);
  s.beta_fast = get_number_or(rope, "beta_fast", 0, where);
  s.beta_slow = get_number_or(rope, "beta_slow", 0, where);
  if (s.beta_fast == 0) s.beta_fast = 32;
  if (s.beta_slow == 0) s.beta_slow = 1;
  MAGIX_CHECK(std::isfinite(s.beta_fast) && std::isfinite(s.beta_slow) && s.beta_fast > 0 &&
                  s.beta_slow > 0,
              "{}: beta_fast and beta_slow must be positive finite numbers", where);
  s.truncate = get_bool_or(rope, "truncate", true, where);
  double attention = 0;
  if (given(rope, "attention_factor")) {
    attention = get_number_or(rope, "attention_factor", 1.0, where);
  } else {
    const double mscale = get_number_or(rope, "mscale", 0, where);
    const double mscale_all_dim = get_number_or(rope, "mscale_all_dim", 0, where);
    attention = mscale != 0 && mscale_all_dim != 0
                    ? yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                    : yarn_mscale(factor, 1.0);
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
  MAGIX_CHECK(rope.is_object(), "{}: field '{}' must be an object, got {}", source, field,
              rope.dump());
  c.rope_theta = static_cast<float>(
      get_number_or(rope, "rope_theta", get_number_or(j, "rope_theta", 10000.0, source), source));
  MAGIX_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0,
              "{}: rope_theta must be a positive finite number, got {}", source, c.rope_theta);
  double partial = get_number_or(rope, "partial_rotary_factor",
                                 get_number_or(j, "partial_rotary_factor", 1.0, source), source);
  MAGIX_CHECK(partial == 1.0, "{}: partial_rotary_factor {} is not supported (only 1.0)", source,
              partial);
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (!given(rope, key)) continue;
    MAGIX_CHECK(rope.at(key).is_string(), "{}: {}.{} must be a string, got {}", source, field, key,
                rope.at(key).dump());
    type = rope.at(key).get<std::string>();
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
    MAGIX_CHECK(type != "longrope",
                "{}: phi3's longrope scaling (short_factor / long_factor) is not supported; "
                "models without rope scaling (e.g. Phi-3-mini-4k) are",
                where);
  }
  if (type == "default") {
    c.rope_scaling.kind = RopeScaling::Kind::kNone;
  } else if (type == "linear") {
    c.rope_scaling.kind = RopeScaling::Kind::kLinear;
    MAGIX_CHECK(given(rope, "factor"), "{}: linear rope needs 'factor'", where);
    c.rope_scaling.factor = static_cast<float>(get_number_or(rope, "factor", 1.0, where));
    MAGIX_CHECK(std::isfinite(c.rope_scaling.factor) && c.rope_scaling.factor > 0,
                "{}: factor must be a positive finite number", where);
  } else if (type == "llama3") {
    auto& s = c.rope_scaling;
    s.kind = RopeScaling::Kind::kLlama3;
    for (const char* key : {"factor", "low_freq_factor", "high_freq_factor"}) {
      MAGIX_CHECK(given(rope, key), "{}: llama3 rope needs '{}'", where, key);
    }
    s.factor = static_cast<float>(get_number_or(rope, "factor", 1.0, where));
    s.low_freq_factor = static_cast<float>(get_number_or(rope, "low_freq_factor", 1.0, where));
    s.high_freq_factor = static_cast<float>(get_number_or(rope, "high_freq_factor", 4.0, where));
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
    s.original_max_position = get_int_or(
        j, "original_max_position_embeddings",
        get_int_or(rope, "original_max_position_embeddings", c.max_position_embeddings, where),
        source);
  } else if (type == "yarn") {
    parse_yarn(j, rope, c, where, source);
  } else {
    MAGIX_FAIL("{}: rope type '{}' is not supported (supported: default, linear, llama3, yarn)",
               where, type);
  }
}

Activation parse_activation(const json& j, ModelFamily family, const std::string& source) {
  std::string act = family == ModelFamily::kGemma ? "gelu_pytorch_tanh" : "silu";
  if (given(j, "hidden_act")) {
    MAGIX_CHECK(j.at("hidden_act").is_string(), "{}: field 'hidden_act' must be a string", source);
    act = j.at("hidden_act").get<std::string>();
  }
  // Gemma's legacy "gelu" means the tanh approximation (GemmaConfig.__post_init__); Gemma's
  // hidden_activation field is not read by transformers 5.23 and is ignored here too.
  if (family == ModelFamily::kGemma && act == "gelu") act = "gelu_pytorch_tanh";
  if (act == "silu" || act == "swish") return Activation::kSilu;
  if (act == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  MAGIX_FAIL("{}: hidden_act '{}' is not supported (supported: silu, gelu_pytorch_tanh)", source,
             act);
}

void parse_sliding_window(const json& j, ModelConfig& c, const std::string& source) {
  c.sliding_window.assign(static_cast<size_t>(c.num_layers), 0);
  auto window_value = [&](int64_t fallback) {
    int64_t w = get_int_or(j, "sliding_window", fallback, source);
    MAGIX_CHECK(w >= 0, "{}: sliding_window must be >= 0, got {}", source, w);
    return w;
  };
  if (c.family == ModelFamily::kMistral) {
    // MistralConfig: sliding_window defaults to 4096 when absent; null disables it.
    int64_t w = j.contains("sliding_window") ? window_value(0) : 4096;
    c.sliding_window.assign(c.sliding_window.size(), w);
  } else if (c.family == ModelFamily::kQwen2) {
    // Qwen2Config: the window applies only with use_sliding_window, on the layers that
    // layer_types marks "sliding_attention" (default: layers >= max_window_layers).
    if (!get_bool_or(j, "use_sliding_window", false, source)) return;
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
      int64_t first = get_int_or(j, "max_window_layers", 28, source);
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
  return get_int(j, key, source);
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
    case ModelFamily::kPhi3:
      return "phi3";
  }
  return "?";
}

ModelConfig parse_model_config(const json& j, const std::string& source) {
  MAGIX_CHECK(j.is_object(), "{}: a model config must be a JSON object", source);
  ModelConfig c;
  c.raw = j;
  c.family = parse_family(j, source);
  const ModelFamily f = c.family;
  c.vocab_size = get_int(j, "vocab_size", source);
  c.hidden_size = get_int(j, "hidden_size", source);
  c.intermediate_size = get_int(j, "intermediate_size", source);
  c.num_layers = get_int(j, "num_hidden_layers", source);
  c.num_heads = get_int(j, "num_attention_heads", source);
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_layers},
                        {"num_attention_heads", c.num_heads}}) {
    MAGIX_CHECK(v > 0, "{}: field '{}' must be positive, got {}", source, key, v);
  }
  MAGIX_CHECK(c.vocab_size <= INT32_MAX, "{}: vocab_size {} is too large", source, c.vocab_size);
  // Family defaults of transformers when the key is absent; null means "num_attention_heads".
  int64_t kv_default = f == ModelFamily::kMistral ? 8
                       : f == ModelFamily::kGemma ? 16
                       : f == ModelFamily::kQwen2 ? 32
                                                  : c.num_heads;
  c.num_kv_heads = j.contains("num_key_value_heads")
                       ? get_int_or(j, "num_key_value_heads", c.num_heads, source)
                       : kv_default;
  MAGIX_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
              "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
              c.num_heads, c.num_kv_heads);
  int64_t head_dim_default = c.hidden_size / c.num_heads;
  if (f == ModelFamily::kGemma && !j.contains("head_dim")) head_dim_default = 256;
  c.head_dim = get_int_or(j, "head_dim", head_dim_default, source);
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
      get_number_or(j, "rms_norm_eps", f == ModelFamily::kPhi3 ? 1e-5 : 1e-6, source));
  MAGIX_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0,
              "{}: rms_norm_eps must be a positive finite number, got {}", source,
              j.value("rms_norm_eps", nlohmann::json()).dump());
  const int64_t max_pos_default = f == ModelFamily::kLlama     ? 2048
                                  : f == ModelFamily::kMistral ? 4096 * 32
                                  : f == ModelFamily::kGemma   ? 8192
                                  : f == ModelFamily::kPhi3    ? 4096
                                                               : 32768;
  c.max_position_embeddings = get_int_or(j, "max_position_embeddings", max_pos_default, source);
  MAGIX_CHECK(c.max_position_embeddings > 0, "{}: max_position_embeddings must be positive, got {}",
              source, c.max_position_embeddings);
  c.initializer_range = get_number_or(j, "initializer_range", 0.02, source);
  MAGIX_CHECK(std::isfinite(c.initializer_range) && c.initializer_range >= 0,
              "{}: initializer_range must be a finite number >= 0, got {}", source,
              c.initializer_range);
  parse_rope(j, c, source);
  c.activation = parse_activation(j, f, source);

  const bool attention_bias = get_bool_or(j, "attention_bias", false, source);
  c.attention_bias = f == ModelFamily::kQwen2 ||
                     ((f == ModelFamily::kLlama || f == ModelFamily::kGemma) && attention_bias);
  c.o_proj_bias = (f == ModelFamily::kLlama || f == ModelFamily::kGemma) && attention_bias;
  c.mlp_bias = f == ModelFamily::kLlama && get_bool_or(j, "mlp_bias", false, source);
  c.tie_word_embeddings = get_bool_or(j, "tie_word_embeddings", f == ModelFamily::kGemma, source);

  double dropout = get_number_or(j, "attention_dropout", 0.0, source);
  MAGIX_CHECK(dropout == 0.0,
              "{}: attention_dropout {} is not supported (training dropout is not implemented; "
              "set it to 0.0)",
              source, dropout);
  if (f == ModelFamily::kGemma) {
    MAGIX_CHECK(!get_bool_or(j, "use_bidirectional_attention", false, source),
                "{}: use_bidirectional_attention true is not supported (causal attention only)",
                source);
  }
  if (f == ModelFamily::kPhi3) {
    for (const char* key : {"resid_pdrop", "embd_pdrop"}) {
      const double p = get_number_or(j, key, 0.0, source);
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

  c.pad_token_id = optional_id(j, "pad_token_id",
                               f == ModelFamily::kGemma  ? std::optional<int64_t>(0)
                               : f == ModelFamily::kPhi3 ? std::optional<int64_t>(32000)
                                                         : std::nullopt,
                               source);
  std::optional<int64_t> bos_default = f == ModelFamily::kGemma   ? std::optional<int64_t>(2)
                                       : f == ModelFamily::kQwen2 ? std::nullopt
                                                                  : std::optional<int64_t>(1);
  c.bos_token_id = optional_id(j, "bos_token_id", bos_default, source);
  if (j.contains("eos_token_id") && j.at("eos_token_id").is_array()) {
    for (const json& e : j.at("eos_token_id")) {
      MAGIX_CHECK(e.is_number_integer(), "{}: eos_token_id entries must be integers", source);
      c.eos_token_ids.push_back(e.get<int64_t>());
    }
  } else {
    std::optional<int64_t> eos_default = f == ModelFamily::kGemma   ? std::optional<int64_t>(1)
                                         : f == ModelFamily::kQwen2 ? std::nullopt
                                         : f == ModelFamily::kPhi3  ? std::optional<int64_t>(32000)
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
  c.embed_scale = f == ModelFamily::kGemma
                      ? static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)))
                      : 1.0f;
  c.norm_offset = f == ModelFamily::kGemma ? 1.0f : 0.0f;
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  MAGIX_CHECK(in.good(), "cannot open model config '{}'", path.string());
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  MAGIX_CHECK(!j.is_discarded(), "'{}' is not valid JSON", path.string());
  return parse_model_config(j, path.string());
}

}  // namespace magix
