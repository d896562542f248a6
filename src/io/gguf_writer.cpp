// Writing a model as one GGUF file in llama.cpp's conventions (names, q/k row order, metadata,
// byte-level BPE tokenizer), for llama.cpp, Ollama and LM Studio.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <variant>

#include "gguf_meta.hpp"
#include "gguf_names.hpp"
#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"
#include "magix/gguf_export.hpp"
#include "magix/json_parse.hpp"
#include "magix/tokenizer.hpp"
#include "magix/tokenizer_config.hpp"
#include "safetensors_util.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Metadata values by GGUF type.
struct KV {
  std::string key;
  uint32_t type;      // GGUF value type
  json value;         // scalar, string or array
  uint32_t elem = 0;  // for arrays
};

constexpr uint32_t kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9;

class Bytes {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b_.insert(b_.end(), p, p + sizeof v);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
  }
  void value(uint32_t type, const json& v) {
    switch (type) {
      case kU32:
        put<uint32_t>(v.get<uint32_t>());
        break;
      case kI32:
        put<int32_t>(v.get<int32_t>());
        break;
      case kF32:
        put<float>(v.get<float>());
        break;
      case kBool:
        put<uint8_t>(v.get<bool>() ? 1 : 0);
        break;
      case kString:
        str(v.get<std::string>());
        break;
      default:
        MAGIX_FAIL("GGUF writer: value type {}", type);
    }
  }
  std::vector<uint8_t>& data() { return b_; }

 private:
  std::vector<uint8_t> b_;
};

std::string gguf_tensor_name(const std::string& arch, const std::string& hf) {
  for (const auto& [gg, h] : gguf::kTopNames) {
    if (hf == h) return std::string(gg);
  }
  const std::string prefix = "model.layers.";
  if (hf.starts_with(prefix)) {
    const size_t dot = hf.find('.', prefix.size());
    if (dot != std::string::npos) {
      const std::string_view gg =
          gguf::gguf_layer_suffix(arch, std::string_view(hf).substr(dot + 1));
      if (!gg.empty()) {
        return "blk." + hf.substr(prefix.size(), dot - prefix.size()) + "." + std::string(gg);
      }
    }
  }
  MAGIX_FAIL("GGUF export: parameter '{}' has no GGUF name in magix", hf);
}

// The token a tokenizer_config entry names: a string or {"content": ...}.
std::optional<std::string> token_string(const json& cfg, const char* key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

const json* template_processing(const json& post) {
  if (!post.is_object()) return nullptr;
  if (post.value("type", "") == "TemplateProcessing") return &post;
  if (post.value("type", "") == "Sequence" && post.contains("processors")) {
    for (const json& p : post["processors"]) {
      if (const json* t = template_processing(p)) return t;
    }
  }
  return nullptr;
}

// tokenizer.ggml.add_space_prefix of a SentencePiece-style tokenizer.json (BPE with byte
// fallback), checked against the pipeline a reader rebuilds for `arch` (docs/gguf.md): Gemma's
// spaces-as-"▁" normalizer with a split after each space for the gemma architectures; else a
// Metaspace pre-tokenizer or a [Prepend "▁",] Replace " " -> "▁" normalizer.
bool spm_space_prefix(const json& t, const std::string& arch, const std::string& src) {
  const json none;
  const json& norm = t.contains("normalizer") ? t["normalizer"] : none;
  const json& pre = t.contains("pre_tokenizer") ? t["pre_tokenizer"] : none;
  const auto type = [](const json& j) { return j.is_object() ? j.value("type", "?") : "none"; };
  const auto replaces_spaces = [](const json& j) {
    return j.is_object() && j.value("type", "") == "Replace" && j.contains("pattern") &&
           j["pattern"].value("String", "") == " " && j.value("content", "") == "\u2581";
  };
  const bool gemma = arch == "gemma" || arch == "gemma2" || arch == "gemma3";
  if (gemma) {
    MAGIX_CHECK(replaces_spaces(norm) && type(pre) == "Split",
                "{}: GGUF export of a {} model needs Gemma's SentencePiece pipeline (Replace "
                "normalizer, Split pre-tokenizer), not normalizer {} / pre-tokenizer {}",
                src, arch, type(norm), type(pre));
    return false;
  }
  if (type(pre) == "Metaspace" && norm.is_null()) {
    return pre.value("prepend_scheme", "always") != "never";
  }
  if (pre.is_null() && replaces_spaces(norm)) return false;
  if (pre.is_null() && type(norm) == "Sequence" && norm.contains("normalizers") &&
      norm["normalizers"].size() == 2 && type(norm["normalizers"][0]) == "Prepend" &&
      replaces_spaces(norm["normalizers"][1])) {
    return true;
  }
  MAGIX_FAIL(
      "{}: GGUF export cannot state this SentencePiece pipeline (normalizer {}, "
      "pre-tokenizer {}); it writes Metaspace or Prepend/Replace ones",
      src, type(norm), type(pre));
}

// The tokenizer.* metadata of a byte-level BPE tokenizer.json ("gpt2") or a SentencePiece-style
// BPE one with byte fallback ("llama": merges, and scores for llama.cpp from their ranks).
std::vector<KV> tokenizer_metadata(const fs::path& tokenizer_json, const ModelConfig& config,
                                   const std::string& arch) {
  const std::string src = tokenizer_json.string();
  const fs::path dir = tokenizer_json.parent_path();
  // The files must be ones magix's tokenizer loads: every field read below then has its type,
  // and the GGUF states the tokenization magix itself does.
  const TokenizerConfig tc = load_tokenizer_config(dir);
  (void)Tokenizer::from_file(tokenizer_json, tc);
  const json t = parse_json(
      read_text_file_bounded(tokenizer_json, kMaxTokenizerJsonBytes, "tokenizer file"), src);
  MAGIX_CHECK(t.is_object() && t.contains("model") && t["model"].is_object(),
              "{}: not a tokenizer.json", src);
  const json& model = t["model"];
  const json& pre = t.contains("pre_tokenizer") ? t["pre_tokenizer"] : json();
  const bool spm = model.value("type", "") == "BPE" && model.value("byte_fallback", false);
  const bool space_prefix = spm && spm_space_prefix(t, arch, src);
  const auto is_byte_level = [](const json& p, bool use_regex) {
    return p.is_object() && p.value("type", "") == "ByteLevel" &&
           p.value("use_regex", true) == use_regex && !p.value("add_prefix_space", false);
  };
  std::string pre_name;
  if (spm) {
    // (no pre-tokenizer name: SentencePiece vocabularies have none)
  } else if (is_byte_level(pre, true)) {
    pre_name = "gpt-2";
  } else if (pre.is_object() && pre.value("type", "") == "Sequence" &&
             pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2 &&
             pre["pretokenizers"][0].value("type", "") == "Split" &&
             is_byte_level(pre["pretokenizers"][1], false)) {
    const json& pat = pre["pretokenizers"][0]["pattern"];
    const std::string re =
        pat.is_object() && pat.contains("Regex") ? pat["Regex"].get<std::string>() : "";
    if (re == gguf::kLlama3Split) pre_name = "llama-bpe";
    if (re == gguf::kQwen2Split) pre_name = "qwen2";
    MAGIX_CHECK(!pre_name.empty(),
                "{}: GGUF export knows the split regexes of Llama 3 and Qwen 2 byte-level "
                "tokenizers; this one's differs, so llama.cpp would tokenize differently",
                src);
  }
  MAGIX_CHECK(model.value("type", "") == "BPE" && (spm || !pre_name.empty()),
              "{}: GGUF export writes byte-level BPE tokenizers (GPT-2 / Llama 3 / Qwen 2 style) "
              "and SentencePiece-style BPE ones with byte fallback; this tokenizer.json is "
              "another kind (model {}, pre-tokenizer {})",
              src, model.value("type", "?"), pre.is_object() ? pre.value("type", "?") : "none");
  MAGIX_CHECK(model.contains("vocab") && model["vocab"].is_object() && model.contains("merges"),
              "{}: BPE model without vocab or merges", src);
  // Tokens by id: the vocab, then the added tokens; ids past them up to the model's vocab size
  // are padding rows, written as [PAD<id>] like llama.cpp's converter does.
  std::map<int64_t, std::string> by_id;
  for (const auto& [tok, id] : model["vocab"].items()) by_id[id.get<int64_t>()] = tok;
  std::map<int64_t, int32_t> types;
  for (const json& a : t.value("added_tokens", json::array())) {
    const int64_t id = a.at("id").get<int64_t>();
    by_id[id] = a.at("content").get<std::string>();
    types[id] = a.value("special", false) ? 3 : 4;
  }
  const int64_t n =
      std::max<int64_t>(config.vocab_size, by_id.empty() ? 0 : by_id.rbegin()->first + 1);
  MAGIX_CHECK(n == config.vocab_size, "{}: token ids go up to {}, past the model's vocab_size {}",
              src, n - 1, config.vocab_size);
  json tokens = json::array(), token_types = json::array();
  const auto is_byte_token = [](const std::string& s) {
    return s.size() == 6 && s.starts_with("<0x") && s.back() == '>' &&
           std::isxdigit(static_cast<unsigned char>(s[3])) &&
           std::isxdigit(static_cast<unsigned char>(s[4]));
  };
  const std::string unk_token = model.contains("unk_token") && model["unk_token"].is_string()
                                    ? model["unk_token"].get<std::string>()
                                    : "";
  for (int64_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    tokens.push_back(it != by_id.end() ? it->second : fmt::format("[PAD{}]", i));
    int32_t type = it == by_id.end() ? 5 : types.contains(i) ? types[i] : 1;
    if (spm && it != by_id.end() && !types.contains(i) && is_byte_token(it->second)) type = 6;
    if (spm && it != by_id.end() && !unk_token.empty() && it->second == unk_token) type = 2;
    token_types.push_back(type);
  }
  json merges = json::array();
  std::map<std::string, int64_t> first_rank;  // token -> rank of the first merge making it
  for (const json& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string& ms = m.get_ref<const std::string&>();
      const size_t sp = ms.find(' ');
      MAGIX_CHECK(sp != std::string::npos, "{}: merge '{}' is not two tokens", src, ms);
      a = ms.substr(0, sp), b = ms.substr(sp + 1);
    } else {
      MAGIX_CHECK(m.is_array() && m.size() == 2, "{}: a merge is not a pair", src);
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    }
    first_rank.try_emplace(a + b, static_cast<int64_t>(merges.size()));
    merges.push_back(a + " " + b);
  }
  std::vector<KV> kv;
  if (spm) {
    // llama.cpp's SentencePiece tokenizer merges by the score of the merged token: minus the
    // rank of the first merge that makes it; the others rank below every merge.
    json scores = json::array();
    const auto m = static_cast<int64_t>(merges.size());
    for (int64_t i = 0; i < n; ++i) {
      auto it = first_rank.find(tokens[i].get<std::string>());
      scores.push_back(static_cast<double>(it != first_rank.end() ? -it->second : -m - i));
    }
    kv = {{"tokenizer.ggml.model", kString, "llama"},
          {"tokenizer.ggml.tokens", kArray, tokens, kString},
          {"tokenizer.ggml.scores", kArray, scores, kF32},
          {"tokenizer.ggml.token_type", kArray, token_types, kI32},
          {"tokenizer.ggml.merges", kArray, merges, kString},
          {"tokenizer.ggml.add_space_prefix", kBool, space_prefix}};
  } else {
    kv = {{"tokenizer.ggml.model", kString, "gpt2"},
          {"tokenizer.ggml.pre", kString, pre_name},
          {"tokenizer.ggml.tokens", kArray, tokens, kString},
          {"tokenizer.ggml.token_type", kArray, token_types, kI32},
          {"tokenizer.ggml.merges", kArray, merges, kString}};
  }
  // Special ids and flags from tokenizer_config.json (else the config's ids and the
  // post-processor's template).
  const json& cfg = tc.raw;  // an object (tokenizer_config.json or none)
  std::map<std::string, int64_t> id_of;
  for (int64_t i = 0; i < n; ++i) id_of.emplace(tokens[i].get<std::string>(), i);
  auto id_for = [&](const char* key, std::optional<int64_t> fallback) -> std::optional<int64_t> {
    if (auto s = token_string(cfg, key)) {
      if (auto it = id_of.find(*s); it != id_of.end()) return it->second;
    }
    return fallback;
  };
  const auto bos = id_for("bos_token", config.bos_token_id);
  const auto eos = id_for("eos_token", config.eos_token_ids.empty()
                                           ? std::nullopt
                                           : std::optional<int64_t>(config.eos_token_ids[0]));
  const auto pad = id_for("pad_token", config.pad_token_id);
  const auto unk = id_for("unk_token", std::nullopt);
  if (bos) kv.push_back({"tokenizer.ggml.bos_token_id", kU32, *bos});
  if (eos) kv.push_back({"tokenizer.ggml.eos_token_id", kU32, *eos});
  if (unk) kv.push_back({"tokenizer.ggml.unknown_token_id", kU32, *unk});
  if (pad) kv.push_back({"tokenizer.ggml.padding_token_id", kU32, *pad});
  bool add_bos = false, add_eos = false;
  const json post = t.value("post_processor", json());
  if (const json* tp = template_processing(post)) {
    const json& single = (*tp)["single"];
    if (!single.empty() && single.front().contains("SpecialToken")) add_bos = true;
    if (!single.empty() && single.back().contains("SpecialToken")) add_eos = true;
  }
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
    add_bos = cfg["add_bos_token"];
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean())
    add_eos = cfg["add_eos_token"];
  kv.push_back({"tokenizer.ggml.add_bos_token", kBool, add_bos});
  kv.push_back({"tokenizer.ggml.add_eos_token", kBool, add_eos});
  if (auto tmpl = tc.chat_template()) kv.push_back({"tokenizer.chat_template", kString, *tmpl});
  return kv;
}

// llama.cpp's architecture for a family (Mistral is written as llama, as llama.cpp does).
std::string gguf_architecture(const ModelConfig& c) {
  switch (c.family) {
    case ModelFamily::kLlama:
    case ModelFamily::kMistral:
      return "llama";
    case ModelFamily::kQwen2:
      return "qwen2";
    case ModelFamily::kQwen3:
      return "qwen3";
    case ModelFamily::kPhi3:
      return "phi3";
    case ModelFamily::kGemma:
      return "gemma";
    case ModelFamily::kGemma2:
      return "gemma2";
    case ModelFamily::kGemma3Text:
      return "gemma3";
  }
  MAGIX_FAIL("GGUF export: family {} has no GGUF architecture", family_name(c.family));
}

// The metadata beyond the common hyper-parameters, and the refusals for what a GGUF file of
// `arch` cannot state (what llama.cpp fixes per architecture, docs/gguf.md).
std::vector<KV> architecture_metadata(const ModelConfig& c, const std::string& arch) {
  const std::string p = arch + ".", fam(family_name(c.family));
  std::vector<KV> kv;
  const RopeScaling& rs = c.rope_scaling;
  const bool gemma = arch.starts_with("gemma");
  if (rs.kind == RopeScaling::Kind::kLinear) {
    MAGIX_CHECK(arch != "phi3" && arch != "gemma" && arch != "gemma2",
                "GGUF export: RoPE scaling of a {} model is not written to GGUF", fam);
    kv.push_back({p + "rope.scaling.type", kString, "linear"});
    kv.push_back({p + "rope.scaling.factor", kF32, rs.factor});
  } else if (rs.kind == RopeScaling::Kind::kYarn) {
    MAGIX_CHECK(!gemma && arch != "phi3",
                "GGUF export: YaRN RoPE scaling of a {} model is not written to GGUF", fam);
    const double mscale = 0.1 * std::log(rs.factor) + 1.0;
    MAGIX_CHECK(rs.truncate && std::fabs(rs.attention_scaling - mscale) < 1e-6,
                "GGUF export: YaRN with attention_factor or truncate other than the defaults "
                "has no GGUF keys");
    kv.push_back({p + "rope.scaling.type", kString, "yarn"});
    kv.push_back({p + "rope.scaling.factor", kF32, rs.factor});
    kv.push_back({p + "rope.scaling.original_context_length", kU32, rs.original_max_position});
    kv.push_back({p + "rope.scaling.yarn_beta_fast", kF32, rs.beta_fast});
    kv.push_back({p + "rope.scaling.yarn_beta_slow", kF32, rs.beta_slow});
  } else if (rs.kind == RopeScaling::Kind::kLlama3) {
    // Written as llama.cpp does: the divisors in a rope_freqs.weight tensor (gguf_export).
    MAGIX_CHECK(arch == "llama",
                "GGUF export: Llama 3-style RoPE scaling of a {} model is not "
                "written to GGUF",
                fam);
  } else if (rs.kind == RopeScaling::Kind::kLongRope) {
    // Written as llama.cpp does for Phi-3: rope_factors_short/long.weight tensors (gguf_export),
    // the attention factor, and the original context (below).
    MAGIX_CHECK(arch == "phi3",
                "GGUF export: LongRoPE scaling of a {} model is not written to GGUF", fam);
    kv.push_back({p + "rope.scaling.attn_factor", kF32, rs.attention_scaling});
  } else {
    MAGIX_CHECK(rs.kind == RopeScaling::Kind::kNone, "GGUF export: unknown RoPE scaling");
  }
  const auto window = [&](size_t i) { return c.sliding_window.empty() ? 0 : c.sliding_window[i]; };
  if (arch == "qwen2" || arch == "qwen3" || arch == "gemma") {
    for (int64_t i = 0; i < c.num_layers; ++i) {
      MAGIX_CHECK(window(i) == 0,
                  "GGUF export: llama.cpp's {} has no sliding-window layers; "
                  "layer {} of this model has a window of {}",
                  arch, i, window(i));
    }
  }
  if (arch == "phi3") {
    for (int64_t i = 1; i < c.num_layers; ++i) {
      MAGIX_CHECK(window(i) == window(0), "GGUF export: phi3 layers with different windows");
    }
    if (window(0) > 0) kv.push_back({p + "attention.sliding_window", kU32, window(0)});
    const auto omp =
        rs.kind == RopeScaling::Kind::kLongRope
            ? static_cast<uint32_t>(rs.original_max_position)
            : json_value<uint32_t>(c.raw, "original_max_position_embeddings",
                                   static_cast<uint32_t>(c.max_position_embeddings), "config.json");
    kv.push_back({p + "rope.scaling.original_context_length", kU32, omp});
  }
  if (arch == "gemma2" || arch == "gemma3") {
    // llama.cpp fixes the sliding layers (every other from layer 0; five of six), the local
    // layers' RoPE base (10000), and the query scale (below).
    const int64_t pattern = arch == "gemma2" ? 2 : 6;
    const int64_t w = window(0);
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const bool sliding = (i + 1) % pattern != 0;
      MAGIX_CHECK(w > 0 && window(i) == (sliding ? w : 0),
                  "GGUF export: llama.cpp's {} slides a window on every layer but each {}th; "
                  "this model's layer {} has a window of {}",
                  arch, pattern, i, window(i));
    }
    kv.push_back({p + "attention.sliding_window", kU32, w});
    const bool big = c.num_layers == (arch == "gemma2" ? 46 : 62);
    const double scalar = big ? static_cast<double>(c.hidden_size / c.num_heads) : c.head_dim;
    MAGIX_CHECK(c.query_pre_attn_scalar == scalar,
                "GGUF export: llama.cpp scales {} queries by 1/sqrt({}); this model's "
                "query_pre_attn_scalar is {}",
                arch, scalar, c.query_pre_attn_scalar);
  }
  if (arch == "gemma2") {
    MAGIX_CHECK(c.attn_softcap > 0 && c.final_softcap > 0,
                "GGUF export: llama.cpp's gemma2 always soft-caps; this model does not");
    kv.push_back({p + "attn_logit_softcapping", kF32, c.attn_softcap});
    kv.push_back({p + "final_logit_softcapping", kF32, c.final_softcap});
  }
  if (arch == "gemma3") {
    MAGIX_CHECK(c.attn_softcap == 0 && c.final_softcap == 0,
                "GGUF export: llama.cpp's gemma3 does not soft-cap; this model does");
    MAGIX_CHECK(
        c.rope_local_theta == 10000.0f && c.rope_local_scaling.kind == RopeScaling::Kind::kNone,
        "GGUF export: llama.cpp's gemma3 local layers use RoPE base 10000 unscaled; "
        "this model's is {}",
        c.rope_local_theta);
  }
  return kv;
}

uint32_t ggml_type_of(GgufOutType t, const Shape& shape) {
  if (shape.size() != 2) return 0;  // F32: norms and biases
  switch (t) {
    case GgufOutType::kF32:
      return 0;
    case GgufOutType::kF16:
      return 1;
    case GgufOutType::kBF16:
      return 30;
    case GgufOutType::kQ8_0:
      return shape[1] % 32 == 0 ? 8 : 1;  // rows not of whole blocks: F16
  }
  return 0;
}

}  // namespace

GgufOutType parse_gguf_outtype(const std::string& s) {
  if (s == "f32") return GgufOutType::kF32;
  if (s == "f16") return GgufOutType::kF16;
  if (s == "bf16") return GgufOutType::kBF16;
  if (s == "q8_0") return GgufOutType::kQ8_0;
  MAGIX_FAIL("--outtype must be f32, f16, bf16 or q8_0, got '{}'", s);
}

void write_gguf_model(const fs::path& out, const ModelConfig& config, const std::string& name,
                      const fs::path& tokenizer_json, const ParameterSet& params,
                      GgufOutType outtype) {
  const std::string arch = gguf_architecture(config);
  const std::string p = arch + ".";
  std::vector<KV> kv = {
      {"general.architecture", kString, arch},
      {"general.name", kString, name},
      {"general.file_type", kU32,
       outtype == GgufOutType::kF32    ? 0
       : outtype == GgufOutType::kF16  ? 1
       : outtype == GgufOutType::kBF16 ? 32
                                       : 7},
      {p + "context_length", kU32, config.max_position_embeddings},
      {p + "embedding_length", kU32, config.hidden_size},
      {p + "feed_forward_length", kU32, config.intermediate_size},
      {p + "block_count", kU32, config.num_layers},
      {p + "attention.head_count", kU32, config.num_heads},
      {p + "attention.head_count_kv", kU32, config.num_kv_heads},
      {p + "attention.layer_norm_rms_epsilon", kF32, config.rms_norm_eps},
      {p + "rope.freq_base", kF32, config.rope_theta},
      {p + "rope.dimension_count", kU32, config.rope_dim()},
      {p + "vocab_size", kU32, config.vocab_size},
  };
  const bool own_head_dim = arch == "qwen3" || arch.starts_with("gemma");
  if (own_head_dim || config.head_dim * config.num_heads != config.hidden_size) {
    kv.push_back({p + "attention.key_length", kU32, config.head_dim});
    kv.push_back({p + "attention.value_length", kU32, config.head_dim});
  }
  for (auto& e : architecture_metadata(config, arch)) kv.push_back(std::move(e));
  if (outtype == GgufOutType::kQ8_0) kv.push_back({"general.quantization_version", kU32, 2});
  for (auto& t : tokenizer_metadata(tokenizer_json, config, arch)) kv.push_back(std::move(t));

  struct Out {
    std::string name;
    size_t param;
    uint32_t type;
    Shape shape;
    uint64_t offset, nbytes;
    bool permute;
    int64_t heads;
    bool plus_one;              // gemma norms: stored as 1 + w
    std::vector<float> values;  // written instead of a parameter (F32) when not empty
  };
  std::vector<Out> tensors;
  uint64_t offset = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& hf = params.info(i).name;
    if (hf == "lm_head.weight" && config.tie_word_embeddings) continue;
    const Shape& shape = params.info(i).global_shape;
    MAGIX_CHECK(params.tensor(i).shape() == shape,
                "GGUF export needs whole tensors ('{}' is a shard)", hf);
    Out o{gguf_tensor_name(arch, hf),
          i,
          ggml_type_of(outtype, shape),
          shape,
          0,
          0,
          false,
          0,
          arch.starts_with("gemma") && hf.ends_with("norm.weight")};
    const auto g = static_cast<GgmlType>(o.type);
    o.nbytes =
        static_cast<uint64_t>(shape_numel(shape) / ggml_block_values(g) * ggml_block_bytes(g));
    const bool q = hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias");
    const bool k = hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias");
    o.permute = arch == "llama" && (q || k);
    o.heads = q ? config.num_heads : config.num_kv_heads;
    o.offset = offset;
    offset += (o.nbytes + 31) / 32 * 32;
    tensors.push_back(std::move(o));
  }
  if (config.rope_scaling.kind == RopeScaling::Kind::kLlama3) {
    // llama.cpp's rope_freqs.weight: the divisor of each inverse frequency, by HF's llama3 rule.
    const RopeScaling& rs = config.rope_scaling;
    Out o{"rope_freqs.weight", 0, 0, {config.head_dim / 2}, offset, 0, false, 0, false, {}};
    for (int64_t i = 0; i < config.head_dim / 2; ++i) {
      o.values.push_back(static_cast<float>(gguf::llama3_divisor(
          i, config.head_dim, config.rope_theta, rs.factor, rs.low_freq_factor, rs.high_freq_factor,
          static_cast<double>(rs.original_max_position))));
    }
    o.nbytes = o.values.size() * sizeof(float);
    offset += (o.nbytes + 31) / 32 * 32;
    tensors.push_back(std::move(o));
  }
  if (config.rope_scaling.kind == RopeScaling::Kind::kLongRope) {
    // llama.cpp's Phi-3 LongRoPE tensors: the divisors of each inverse frequency.
    const RopeScaling& rs = config.rope_scaling;
    for (const auto& [name, values] : {std::pair{"rope_factors_long.weight", &rs.long_factor},
                                       std::pair{"rope_factors_short.weight", &rs.short_factor}}) {
      Out o{name, 0, 0, {std::ssize(*values)}, offset, 0, false, 0, false, *values};
      o.nbytes = o.values.size() * sizeof(float);
      offset += (o.nbytes + 31) / 32 * 32;
      tensors.push_back(std::move(o));
    }
  }

  Bytes h;
  h.data() = {'G', 'G', 'U', 'F'};
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors.size());
  h.put<uint64_t>(kv.size());
  for (const KV& e : kv) {
    h.str(e.key);
    h.put<uint32_t>(e.type);
    if (e.type == kArray) {
      h.put<uint32_t>(e.elem);
      h.put<uint64_t>(e.value.size());
      for (const json& v : e.value) h.value(e.elem, v);
    } else {
      h.value(e.type, e.value);
    }
  }
  for (const Out& o : tensors) {
    h.str(o.name);
    h.put<uint32_t>(static_cast<uint32_t>(o.shape.size()));
    for (auto it = o.shape.rbegin(); it != o.shape.rend(); ++it) h.put<uint64_t>(*it);
    h.put<uint32_t>(o.type);
    h.put<uint64_t>(o.offset);
  }
  while (h.data().size() % 32) h.data().push_back(0);

  fs::create_directories(out.parent_path().empty() ? fs::path(".") : out.parent_path());
  io::write_file_atomically(out, [&](int fd, const fs::path& tmp) {
    io::write_all(fd, h.data().data(), h.data().size(), tmp);
    std::vector<uint8_t> bytes;
    for (const Out& o : tensors) {
      Tensor t = o.values.empty()
                     ? params.tensor(o.param).to(DType::kF32)
                     : Tensor::view_of(const_cast<float*>(o.values.data()), o.shape, DType::kF32);
      if (o.permute) t = gguf::permute_qk_rows(t, o.heads, /*to_gguf=*/true);
      if (o.plus_one) {
        float* d = t.data<float>();
        for (int64_t k = 0; k < t.numel(); ++k) d[k] += 1.0f;
      }
      bytes.assign((o.nbytes + 31) / 32 * 32, 0);
      const std::span<const float> src(t.data<float>(), static_cast<size_t>(t.numel()));
      switch (o.type) {
        case 0:
          std::memcpy(bytes.data(), src.data(), o.nbytes);
          break;
        case 1:
          for (size_t i = 0; i < src.size(); ++i) {
            const uint16_t v = float_to_f16(src[i]);
            std::memcpy(bytes.data() + 2 * i, &v, 2);
          }
          break;
        case 30:
          for (size_t i = 0; i < src.size(); ++i) {
            const uint16_t v = float_to_bf16(src[i]);
            std::memcpy(bytes.data() + 2 * i, &v, 2);
          }
          break;
        case 8:
          ggml_quantize_q8_0(src, std::span<uint8_t>(bytes.data(), o.nbytes));
          break;
        default:
          MAGIX_FAIL("GGUF export: type {}", o.type);
      }
      io::write_all(fd, bytes.data(), bytes.size(), tmp);
    }
  });
}

}  // namespace magix
