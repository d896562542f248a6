// GGUF files as HF models: config, tokenizer and tensor names from llama.cpp's conventions.
#include "magix/gguf_model.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "gguf_meta.hpp"
#include "gguf_names.hpp"
#include "magix/error.hpp"
#include "safetensors_util.hpp"

namespace magix {

namespace fs = std::filesystem;
using gguf::meta;
using gguf::meta_float;
using gguf::meta_int;
using gguf::meta_opt;
using gguf::token_id;
using gguf::tokens;
using nlohmann::json;

namespace {

// Bumped whenever what gguf_model_folder writes changes, so old cache folders are not reused.
constexpr int kFolderFormat = 2;
constexpr const char* kSourceFile = "gguf_source.json";

std::string architecture(const GgufFile& f) {
  const json& a = meta(f, "general.architecture");
  MAGIX_CHECK(a.is_string(), "{}: general.architecture must be a string", f.path().string());
  const std::string arch = a.get<std::string>();
  const auto supported = gguf_supported_architectures();
  MAGIX_CHECK(std::find(supported.begin(), supported.end(), arch) != supported.end(),
              "{}: GGUF architecture '{}' is not supported (magix reads: {})", f.path().string(),
              arch, fmt::join(supported, ", "));
  return arch;
}

// HF name for a GGUF tensor name in architecture `arch`; empty when the name is not one magix
// knows.
std::string hf_name(const std::string& arch, const std::string& g) {
  for (const auto& [gg, hf] : gguf::kTopNames) {
    if (g == gg) return std::string(hf);
  }
  if (!g.starts_with("blk.")) return {};
  const size_t dot = g.find('.', 4);
  if (dot == std::string::npos || dot == 4) return {};
  const std::string idx = g.substr(4, dot - 4);
  if (!std::all_of(idx.begin(), idx.end(), ::isdigit) || idx.size() > 6) return {};
  const std::string_view hf = gguf::hf_layer_suffix(arch, std::string_view(g).substr(dot + 1));
  if (hf.empty()) return {};
  return "model.layers." + std::to_string(std::stoll(idx)) + "." + std::string(hf);
}

bool is_gemma(const std::string& arch) {
  return arch == "gemma" || arch == "gemma2" || arch == "gemma3";
}

// HF model_type and class of each architecture magix reads.
struct ArchInfo {
  const char* arch;
  const char* model_type;
  const char* hf_class;
};
constexpr std::array<ArchInfo, 7> kArchs = {{
    {"llama", "llama", "LlamaForCausalLM"},
    {"qwen2", "qwen2", "Qwen2ForCausalLM"},
    {"qwen3", "qwen3", "Qwen3ForCausalLM"},
    {"phi3", "phi3", "Phi3ForCausalLM"},
    {"gemma", "gemma", "GemmaForCausalLM"},
    {"gemma2", "gemma2", "Gemma2ForCausalLM"},
    {"gemma3", "gemma3_text", "Gemma3ForCausalLM"},
}};

const ArchInfo& arch_info(const std::string& arch) {
  for (const ArchInfo& a : kArchs) {
    if (arch == a.arch) return a;
  }
  MAGIX_FAIL("GGUF architecture '{}' has no entry", arch);  // (checked by architecture())
}

// rope_scaling from <arch>.rope.scaling.*: linear and YaRN (the types magix's config reads);
// others are refused by name. Null when the file has none.
json rope_scaling(const GgufFile& f, const std::string& arch) {
  const std::string p = arch + ".rope.scaling.";
  const json* st = meta_opt(f, p + "type");
  if (st == nullptr) return nullptr;
  const std::string type = gguf::meta_string(f, p + "type");
  if (type == "none") return nullptr;
  MAGIX_CHECK(arch != "phi3", "{}: GGUF rope scaling '{}' for phi3 (LongRoPE) is not supported",
              f.path().string(), type);
  MAGIX_CHECK(type == "linear" || type == "yarn",
              "{}: GGUF rope scaling '{}' is not supported (magix maps linear and yarn)",
              f.path().string(), type);
  json r = {{"rope_type", type}, {"factor", meta_float(f, p + "factor")}};
  if (type == "yarn") {
    if (meta_opt(f, p + "original_context_length")) {
      r["original_max_position_embeddings"] = meta_int(f, p + "original_context_length");
    }
    for (const auto& [key, name] :
         {std::pair{"yarn_beta_fast", "beta_fast"}, {"yarn_beta_slow", "beta_slow"}}) {
      if (meta_opt(f, p + key)) r[name] = meta_float(f, p + key);
    }
    for (const char* key : {"yarn_ext_factor", "yarn_attn_factor", "attn_factor"}) {
      if (const json* v = meta_opt(f, p + key)) {
        // llama.cpp's defaults (ext -1: computed; attn 1) are what HF's yarn does.
        const double dflt = std::string_view(key) == "yarn_ext_factor" ? -1.0 : 1.0;
        MAGIX_CHECK(v->is_number() && v->get<double>() == dflt,
                    "{}: GGUF {}{} = {} is not supported (magix maps the default only)",
                    f.path().string(), p, key, v->dump());
      }
    }
  }
  return r;
}

// Llama 3.x RoPE scaling from llama.cpp's rope_freqs.weight (the divisors of the inverse
// frequencies its converter computes with HF's llama3 rule) as HF's rope_scaling: factor is the
// largest divisor; original_max_position_embeddings is the file's original context length or
// Llama 3's 8192 (the rule depends on it only through L / low and L / high), and low_freq_factor
// and high_freq_factor are fitted to the blended divisors (simple fractions kept exact). The
// divisors are then recomputed with HF's rule: a file they do not match is refused.
json llama3_rope_scaling(const GgufFile& f, const std::string& arch, double base, int64_t dims) {
  const std::string where = f.path().string() + ": rope_freqs.weight";
  const Shape shape = f.find("rope_freqs.weight")->shape();  // checked before reading
  MAGIX_CHECK(shape.size() == 1 && shape[0] * 2 == dims,
              "{} has shape {}, expected [{}] (half the {} rotary dims)", where, shape_str(shape),
              dims / 2, dims);
  const Tensor t = f.read_f32("rope_freqs.weight");
  std::vector<double> v(t.span<float>().begin(), t.span<float>().end());
  for (const double x : v) {
    MAGIX_CHECK(std::isfinite(x) && x > 0, "{} holds {}: divisors must be finite and > 0", where,
                x);
  }
  const double factor = *std::max_element(v.begin(), v.end());
  if (factor <= 1.0) {
    MAGIX_CHECK(*std::min_element(v.begin(), v.end()) == 1.0,
                "{}: divisors under 1 do not follow the Llama 3 rule", where);
    return nullptr;  // all 1: no scaling
  }
  const std::string ctx_key = arch + ".rope.scaling.original_context_length";
  const double L = meta_opt(f, ctx_key) ? static_cast<double>(meta_int(f, ctx_key)) : 8192.0;
  // Blended entries: smooth s = (1/v - 1/factor) / (1 - 1/factor) = (L/wavelen - low) /
  // (high - low), a line in L/wavelen.
  constexpr double kTol = 1e-5;
  std::vector<std::pair<double, double>> blend;  // (s, L / wavelen)
  double max_one = 0, min_full = INFINITY;
  for (size_t i = 0; i < v.size(); ++i) {
    const double wavelen = 2 * M_PI * std::pow(base, 2.0 * static_cast<double>(i) / dims);
    const bool one = std::fabs(v[i] - 1) <= kTol, full = std::fabs(v[i] - factor) <= kTol * factor;
    if (one) max_one = std::max(max_one, wavelen);
    if (full) min_full = std::min(min_full, wavelen);
    if (!one && !full) blend.emplace_back((1 / v[i] - 1 / factor) / (1 - 1 / factor), L / wavelen);
  }
  double low, high;
  if (blend.size() >= 2) {
    // Least squares of L/wavelen = low + s (high - low).
    double ms = 0, mx = 0;
    for (const auto& [sv, x] : blend) ms += sv, mx += x;
    ms /= static_cast<double>(blend.size());
    mx /= static_cast<double>(blend.size());
    double sxy = 0, sxx = 0;
    for (const auto& [sv, x] : blend) sxy += (sv - ms) * (x - mx), sxx += (sv - ms) * (sv - ms);
    MAGIX_CHECK(sxx > 0, "{}: its blended divisors do not follow the Llama 3 rule", where);
    const double slope = sxy / sxx;
    low = mx - slope * ms;
    high = low + slope;
  } else {
    MAGIX_CHECK(blend.empty(),
                "{}: one blended divisor does not determine the Llama 3 rule's parameters", where);
    // No blended entry: thresholds between the last 1 and the first `factor` (geometric means).
    MAGIX_CHECK(max_one < min_full, "{}: its divisors do not follow the Llama 3 rule", where);
    const double mid = max_one > 0 && std::isfinite(min_full) ? std::sqrt(max_one * min_full)
                       : max_one > 0                          ? 2 * max_one
                                                              : min_full / 2;
    high = L / (mid / 1.001);
    low = L / (mid * 1.001);
  }
  MAGIX_CHECK(low > 0 && high > low,
              "{}: fitted low_freq_factor {} and high_freq_factor {} do not "
              "follow the Llama 3 rule",
              where, low, high);
  const auto snap = [](double x) {  // 1, 4, 0.5, ...: exact when within fitting noise
    const double r = std::round(x * 1024) / 1024;
    return std::fabs(x - r) <= 1e-4 * std::max(1.0, std::fabs(x)) ? r : x;
  };
  const auto matches = [&](double lo, double hi) {
    for (size_t i = 0; i < v.size(); ++i) {
      const double want =
          gguf::llama3_divisor(static_cast<int64_t>(i), dims, base, factor, lo, hi, L);
      if (std::fabs(want - v[i]) > 1e-4 * v[i]) return false;
    }
    return true;
  };
  if (matches(snap(low), snap(high))) {
    low = snap(low);
    high = snap(high);
  }
  MAGIX_CHECK(matches(low, high),
              "{}: its divisors do not follow the Llama 3 rule (fitted factor {}, "
              "low_freq_factor {}, high_freq_factor {}, original context {})",
              where, factor, low, high, L);
  return json{{"rope_type", "llama3"},
              {"factor", factor},
              {"low_freq_factor", low},
              {"high_freq_factor", high},
              {"original_max_position_embeddings", static_cast<int64_t>(L)}};
}

// Phi-3 LongRoPE as llama.cpp writes it: rope_factors_short/long.weight (head_dim / 2 divisors
// each), rope.scaling.attn_factor (the cos/sin scale llama.cpp computed) and
// rope.scaling.original_context_length -> HF's longrope rope_scaling. Null without the tensors.
json phi3_longrope(const GgufFile& f, const std::string& p, int64_t rotary_dim) {
  const GgufTensorInfo* shorts = f.find("rope_factors_short.weight");
  const GgufTensorInfo* longs = f.find("rope_factors_long.weight");
  if (shorts == nullptr && longs == nullptr) return nullptr;
  const std::string where = f.path().string();
  MAGIX_CHECK(shorts != nullptr && longs != nullptr,
              "{}: a phi3 GGUF with one of rope_factors_short/long.weight needs both", where);
  MAGIX_CHECK(meta_opt(f, p + "rope.scaling.original_context_length"),
              "{}: rope_factors_short/long.weight need {}rope.scaling.original_context_length",
              where, p);
  json r = {{"rope_type", "longrope"}};
  for (const auto& [name, key] : {std::pair{"rope_factors_short.weight", "short_factor"},
                                  std::pair{"rope_factors_long.weight", "long_factor"}}) {
    const Shape shape = f.find(name)->shape();  // checked before reading
    MAGIX_CHECK(shape.size() == 1 && shape[0] * 2 == rotary_dim,
                "{}: {} has shape {}, expected [{}] (half the {} rotated dims)", where, name,
                shape_str(shape), rotary_dim / 2, rotary_dim);
    const Tensor t = f.read_f32(name);
    json list = json::array();
    for (const float v : t.span<float>()) {
      MAGIX_CHECK(std::isfinite(v) && v > 0, "{}: {} holds {}: factors must be finite and > 0",
                  where, name, v);
      list.push_back(static_cast<double>(v));
    }
    r[key] = std::move(list);
  }
  if (meta_opt(f, p + "rope.scaling.attn_factor")) {
    r["attention_factor"] = meta_float(f, p + "rope.scaling.attn_factor");
  }
  return r;
}

fs::path cache_root() {
  if (const char* c = std::getenv("MAGIX_CACHE"); c && *c) return fs::path(c) / "gguf";
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "magix" / "gguf";
  const char* home = std::getenv("HOME");
  MAGIX_CHECK(home && *home,
              "cannot place magix's cache for GGUF files: MAGIX_CACHE, "
              "XDG_CACHE_HOME and HOME are all unset");
  return fs::path(home) / ".cache" / "magix" / "gguf";
}

void write_json_file(const fs::path& path, const json& j) {
  std::string text;
  try {
    text = j.dump(2) + "\n";
  } catch (const json::exception& e) {
    MAGIX_FAIL("cannot write {}: {} (a GGUF string that is not valid UTF-8?)", path.string(),
               e.what());
  }
  io::write_file_atomically(
      path, [&](int fd, const fs::path& tmp) { io::write_all(fd, text.data(), text.size(), tmp); });
}

}  // namespace

std::vector<std::string> gguf_supported_architectures() {
  std::vector<std::string> out;
  for (const ArchInfo& a : kArchs) out.emplace_back(a.arch);
  return out;
}

json gguf_hf_config(const GgufFile& f) {
  const std::string arch = architecture(f);
  const ArchInfo& info = arch_info(arch);
  const std::string p = arch + ".";
  const int64_t hidden = meta_int(f, p + "embedding_length");
  const int64_t heads = meta_int(f, p + "attention.head_count");
  MAGIX_CHECK(heads > 0, "{}: {}attention.head_count is 0", f.path().string(), p);
  const int64_t kv = meta_opt(f, p + "attention.head_count_kv")
                         ? meta_int(f, p + "attention.head_count_kv")
                         : heads;
  const int64_t layers = meta_int(f, p + "block_count");
  const int64_t vocab = static_cast<int64_t>(tokens(f).size());
  const bool tied = f.find("output.weight") == nullptr;
  json c = {
      {"architectures", json::array({info.hf_class})},
      {"model_type", info.model_type},
      {"hidden_size", hidden},
      {"intermediate_size", meta_int(f, p + "feed_forward_length")},
      {"num_hidden_layers", layers},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv},
      {"max_position_embeddings", meta_int(f, p + "context_length")},
      {"rms_norm_eps", meta_float(f, p + "attention.layer_norm_rms_epsilon")},
      {"vocab_size", vocab},
      {"tie_word_embeddings", tied},
      {"torch_dtype", "float32"},
  };
  // (llama.cpp's default base when the key is absent: 10000, for every architecture)
  c["rope_theta"] =
      meta_opt(f, p + "rope.freq_base") ? meta_float(f, p + "rope.freq_base") : 10000.0;
  // Gemma's activation is the tanh GELU (the HF default of those configs); the others' SiLU.
  if (!is_gemma(arch)) c["hidden_act"] = "silu";
  int64_t head_dim = hidden / heads;
  if (meta_opt(f, p + "attention.key_length")) {
    head_dim = meta_int(f, p + "attention.key_length");
    c["head_dim"] = head_dim;
  } else if (meta_opt(f, p + "rope.dimension_count") && arch == "llama") {
    head_dim = meta_int(f, p + "rope.dimension_count");
    c["head_dim"] = head_dim;
  } else if (is_gemma(arch) || arch == "qwen3") {
    c["head_dim"] = head_dim;  // (their HF configs default to 256 / 128, not hidden / heads)
  }
  if (arch == "llama") {
    c["attention_bias"] = f.find("blk.0.attn_q.bias") != nullptr;
    c["mlp_bias"] = false;
  }
  if (arch == "phi3") {
    const int64_t rot = meta_opt(f, p + "rope.dimension_count")
                            ? meta_int(f, p + "rope.dimension_count")
                            : head_dim;
    if (rot != head_dim) {
      // transformers rotates int(head_dim · factor) dims: the factor is nudged up where the
      // quotient's rounding would truncate to one dim fewer.
      double factor = static_cast<double>(rot) / static_cast<double>(head_dim);
      if (static_cast<int64_t>(static_cast<double>(head_dim) * factor) < rot) {
        factor = std::nextafter(factor, 2.0);
      }
      c["partial_rotary_factor"] = factor;
    }
    if (json rs = phi3_longrope(f, p, rot); !rs.is_null()) c["rope_scaling"] = rs;
    if (meta_opt(f, p + "rope.scaling.original_context_length")) {
      c["original_max_position_embeddings"] =
          meta_int(f, p + "rope.scaling.original_context_length");
    }
  }
  if (arch == "gemma2" || arch == "gemma3" || arch == "phi3") {
    if (meta_opt(f, p + "attention.sliding_window")) {
      c["sliding_window"] = meta_int(f, p + "attention.sliding_window");
    }
  }
  if (arch == "gemma2" || arch == "gemma3") {
    // llama.cpp scales queries by 1/sqrt(head_dim), by 1/sqrt(hidden / heads) for the 27B
    // models (46 layers for Gemma 2, 62 for Gemma 3); HF's query_pre_attn_scalar says which.
    const bool big = layers == (arch == "gemma2" ? 46 : 62);
    c["query_pre_attn_scalar"] = big ? hidden / heads : head_dim;
    for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
      if (meta_opt(f, p + key)) c[key] = meta_float(f, p + key);
    }
  }
  if (arch == "gemma3") c["rope_local_base_freq"] = 10000.0;  // (llama.cpp's, HF's default)
  if (json rs = rope_scaling(f, arch); !rs.is_null()) c["rope_scaling"] = rs;
  if (f.find("rope_freqs.weight") != nullptr) {
    MAGIX_CHECK(arch == "llama", "{}: rope_freqs.weight in a {} GGUF is not supported",
                f.path().string(), arch);
    MAGIX_CHECK(!c.contains("rope_scaling"), "{}: rope_freqs.weight beside {}rope.scaling.type",
                f.path().string(), p);
    if (json rs = llama3_rope_scaling(f, arch, c["rope_theta"].get<double>(), head_dim);
        !rs.is_null()) {
      c["rope_scaling"] = rs;
    }
  }
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                  {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                  {"tokenizer.ggml.padding_token_id", "pad_token_id"}}) {
    if (auto id = token_id(f, key, vocab)) c[name] = *id;
  }
  return c;
}

json gguf_generation_config(const GgufFile& f) {
  const json config = gguf_hf_config(f);
  json g = json::object();
  for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (config.contains(k)) g[k] = config[k];
  }
  return g;
}

GgufWeights::GgufWeights(const fs::path& gguf) : file_(gguf) {
  arch_ = architecture(file_);
  const json config = gguf_hf_config(file_);
  n_heads_ = config.at("num_attention_heads").get<int64_t>();
  n_kv_heads_ = config.at("num_key_value_heads").get<int64_t>();
  for (const GgufTensorInfo& t : file_.tensors()) {
    if (t.name == "rope_freqs.weight" || t.name == "rope_factors_long.weight" ||
        t.name == "rope_factors_short.weight") {
      continue;  // the config's rope_scaling (gguf_hf_config)
    }
    std::string hf = hf_name(arch_, t.name);
    if (hf.empty()) hf = t.name;  // unknown: listed under its GGUF name as unexpected
    SafetensorsEntry e{hf, DType::kF32, t.shape(), t.offset, t.nbytes};
    MAGIX_CHECK(!by_hf_.contains(hf), "{}: two GGUF tensors map to '{}'", gguf.string(), hf);
    by_hf_.emplace(hf, std::pair{t.name, e});
  }
}

std::vector<std::string> GgufWeights::names() const {
  std::vector<std::string> out;
  for (const auto& [k, _] : by_hf_) out.push_back(k);
  return out;
}

bool GgufWeights::contains(std::string_view hf) const {
  return by_hf_.find(hf) != by_hf_.end();
}

const SafetensorsEntry& GgufWeights::entry(std::string_view hf) const {
  auto it = by_hf_.find(hf);
  MAGIX_CHECK(it != by_hf_.end(), "{}: no tensor for '{}'", file_.path().string(), hf);
  return it->second.second;
}

Tensor GgufWeights::read_f32(std::string_view hf) const {
  auto it = by_hf_.find(hf);
  MAGIX_CHECK(it != by_hf_.end(), "{}: no tensor for '{}'", file_.path().string(), hf);
  Tensor t = file_.read_f32(it->second.first);
  // llama.cpp's Gemma converters store RMSNorm weights as 1 + w (HF's Gemma norms scale by 1 + w).
  if (is_gemma(arch_) && hf.ends_with("norm.weight")) {
    float* d = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) d[i] -= 1.0f;
    return t;
  }
  // llama.cpp's converter interleaves the two rotary halves of each q/k head for the llama
  // architecture; undo it: HF row h*hd + j*hd/2 + r is GGUF row h*hd + 2r + j.
  const bool q = hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.q_proj.bias");
  const bool k = hf.ends_with("self_attn.k_proj.weight") || hf.ends_with("self_attn.k_proj.bias");
  if (arch_ == "llama" && (q || k)) {
    const int64_t heads = q ? n_heads_ : n_kv_heads_;
    const int64_t rows = t.shape()[0];
    MAGIX_CHECK(rows % (2 * heads) == 0, "{}: '{}' has {} rows, not a multiple of 2 x {} heads",
                file_.path().string(), it->second.first, rows, heads);
    return gguf::permute_qk_rows(t, heads, /*to_gguf=*/false);
  }
  return t;
}

Tensor GgufWeights::read_box_f32(std::string_view hf, const Shape& start,
                                 const Shape& extent) const {
  const Tensor full = read_f32(hf);
  const Shape& s = full.shape();
  MAGIX_CHECK(start.size() == s.size() && extent.size() == s.size(),
              "{}: box of rank {} for '{}' of rank {}", file_.path().string(), start.size(), hf,
              s.size());
  for (size_t d = 0; d < s.size(); ++d) {
    MAGIX_CHECK(start[d] >= 0 && extent[d] >= 0 && start[d] + extent[d] <= s[d],
                "{}: box outside '{}'", file_.path().string(), hf);
  }
  Tensor out(extent, DType::kF32);
  // Rows of the last dim: iterate over every index of the leading dims.
  const int64_t last = static_cast<int64_t>(s.size()) - 1;
  const int64_t run = extent[last];
  const int64_t outer = run == 0 ? 0 : out.numel() / run;
  std::vector<int64_t> stride(s.size(), 1);
  for (int64_t d = last - 1; d >= 0; --d) stride[d] = stride[d + 1] * s[d + 1];
  const float* src = full.data<float>();
  float* dst = out.data<float>();
  std::vector<int64_t> idx(s.size(), 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t off = start[last];
    for (int64_t d = 0; d < last; ++d) off += (start[d] + idx[d]) * stride[d];
    std::copy_n(src + off, run, dst + o * run);
    for (int64_t d = last - 1; d >= 0; --d) {
      if (++idx[d] < extent[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

fs::path gguf_model_folder(const fs::path& gguf) {
  std::error_code ec;
  const fs::path canon = fs::canonical(gguf, ec);
  MAGIX_CHECK(!ec, "cannot resolve {}: {}", gguf.string(), ec.message());
  struct stat st {};
  MAGIX_CHECK(::stat(canon.c_str(), &st) == 0, "cannot stat {}", canon.string());
  const std::string identity =
      fmt::format("{}\n{}\n{}.{}\n{}", canon.string(), static_cast<uint64_t>(st.st_size),
                  static_cast<int64_t>(st.st_mtim.tv_sec), static_cast<int64_t>(st.st_mtim.tv_nsec),
                  kFolderFormat);
  const uint64_t h = XXH3_64bits(identity.data(), identity.size());
  const fs::path root = cache_root();
  const fs::path dir = root / fmt::format("{}-{:016x}", canon.stem().string().substr(0, 80), h);
  if (fs::is_regular_file(dir / kSourceFile)) return dir;

  // Everything is derived and validated before anything is written.
  const GgufWeights weights(canon);  // opens the file; checks the architecture and the names
  const GgufFile& f = weights.file();
  const json config = gguf_hf_config(f);
  const json tok = gguf_tokenizer_json(f);
  const json tok_config = gguf_tokenizer_config(f);
  const json gen = gguf_generation_config(f);
  fs::create_directories(root, ec);
  MAGIX_CHECK(!ec, "cannot create magix's GGUF cache {}: {}", root.string(), ec.message());
  const fs::path tmp = root / fmt::format(".tmp-{:016x}-{}", h, ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  MAGIX_CHECK(!ec, "cannot create {}: {}", tmp.string(), ec.message());
  try {
    write_json_file(tmp / "config.json", config);
    write_json_file(tmp / "tokenizer.json", tok);
    write_json_file(tmp / "tokenizer_config.json", tok_config);
    write_json_file(tmp / "generation_config.json", gen);
    write_json_file(tmp / kSourceFile, {{"gguf", canon.string()},
                                        {"size", static_cast<uint64_t>(st.st_size)},
                                        {"format", kFolderFormat}});
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::rename(tmp, dir, ec);
  if (ec) {  // another process (another rank) made it first
    fs::remove_all(tmp, ec);
    MAGIX_CHECK(fs::is_regular_file(dir / kSourceFile), "cannot create {}", dir.string());
  }
  io::fsync_dir(root);
  return dir;
}

fs::path gguf_source_of(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / kSourceFile, ec)) return {};
  const fs::path root = fs::weakly_canonical(cache_root(), ec);
  const fs::path canon = fs::weakly_canonical(dir, ec);
  if (canon.parent_path() != root) return {};
  std::ifstream in(dir / kSourceFile);
  json j = json::parse(in, nullptr, false);
  MAGIX_CHECK(j.is_object() && j.contains("gguf") && j["gguf"].is_string() && j.contains("size") &&
                  j["size"].is_number_unsigned(),
              "{}: damaged; delete the folder and load the GGUF file again",
              (dir / kSourceFile).string());
  const fs::path src = j["gguf"].get<std::string>();
  MAGIX_CHECK(fs::is_regular_file(src, ec) && fs::file_size(src, ec) == j["size"].get<uint64_t>(),
              "{}: the GGUF file {} it stands for is gone or changed; load the GGUF file again",
              dir.string(), src.string());
  return src;
}

}  // namespace magix
