// Typed, checked reads of GGUF metadata, shared by the model (gguf_model.cpp) and tokenizer
// (gguf_tokenizer.cpp) mappings. Every error names the file and the key.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/gguf.hpp"

namespace magix::gguf {

inline const nlohmann::json* meta_opt(const GgufFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  return it == f.metadata().end() ? nullptr : &*it;
}

inline const nlohmann::json& meta(const GgufFile& f, const std::string& key) {
  const nlohmann::json* v = meta_opt(f, key);
  MAGIX_CHECK(v != nullptr, "{}: GGUF metadata key '{}' is missing", f.path().string(), key);
  return *v;
}

// A non-negative integer up to 2^40.
inline int64_t meta_int(const GgufFile& f, const std::string& key) {
  const nlohmann::json& v = meta(f, key);
  MAGIX_CHECK(v.is_number_integer() || v.is_number_unsigned(),
              "{}: GGUF metadata '{}' must be an integer", f.path().string(), key);
  const int64_t x = v.get<int64_t>();
  MAGIX_CHECK(x >= 0 && x <= (int64_t{1} << 40), "{}: GGUF metadata '{}' = {} is out of range",
              f.path().string(), key, x);
  return x;
}

inline double meta_float(const GgufFile& f, const std::string& key) {
  const nlohmann::json& v = meta(f, key);
  MAGIX_CHECK(v.is_number(), "{}: GGUF metadata '{}' must be a number", f.path().string(), key);
  return v.get<double>();
}

inline bool meta_bool(const GgufFile& f, const std::string& key, bool dflt) {
  const nlohmann::json* v = meta_opt(f, key);
  if (v == nullptr) return dflt;
  MAGIX_CHECK(v->is_boolean(), "{}: GGUF metadata '{}' must be a bool", f.path().string(), key);
  return v->get<bool>();
}

inline std::string meta_string(const GgufFile& f, const std::string& key) {
  const nlohmann::json& v = meta(f, key);
  MAGIX_CHECK(v.is_string(), "{}: GGUF metadata '{}' must be a string", f.path().string(), key);
  return v.get<std::string>();
}

// A token id in [0, vocab), or nullopt when the key is absent.
inline std::optional<int64_t> token_id(const GgufFile& f, const std::string& key, int64_t vocab) {
  const nlohmann::json* v = meta_opt(f, key);
  if (v == nullptr) return std::nullopt;
  MAGIX_CHECK(v->is_number_integer() || v->is_number_unsigned(),
              "{}: GGUF metadata '{}' must be an integer", f.path().string(), key);
  const int64_t id = v->get<int64_t>();
  MAGIX_CHECK(id >= 0 && id < vocab, "{}: GGUF metadata '{}' = {} is not a token id (vocab {})",
              f.path().string(), key, id, vocab);
  return id;
}

inline const nlohmann::json& tokens(const GgufFile& f) {
  const nlohmann::json& t = meta(f, "tokenizer.ggml.tokens");
  MAGIX_CHECK(t.is_array() && !t.empty() &&
                  f.metadata_types().at("tokenizer.ggml.tokens") == "array[string]",
              "{}: tokenizer.ggml.tokens must be a non-empty array of strings", f.path().string());
  return t;
}

// HF's llama3 RoPE rule for the divisor of inverse frequency i (llama.cpp's rope_freqs.weight)
// (dims rotary dims, base theta): 1 for wavelengths under L / high, `factor` over L / low, a smooth
// blend between.
inline double llama3_divisor(int64_t i, int64_t dims, double base, double factor, double low,
                             double high, double L) {
  const double wavelen = 2 * M_PI * std::pow(base, 2.0 * static_cast<double>(i) / dims);
  if (wavelen < L / high) return 1.0;
  if (wavelen > L / low) return factor;
  const double smooth = (L / wavelen - low) / (high - low);
  return 1.0 / ((1 - smooth) / factor + smooth);
}

}  // namespace magix::gguf
