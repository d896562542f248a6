// GGUF files as HF models: config, tokenizer and tensor names from llama.cpp's conventions.
#include "magix/gguf_model.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "magix/error.hpp"
#include "gguf_names.hpp"
#include "safetensors_util.hpp"

namespace magix {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Bumped whenever what gguf_model_folder writes changes, so old cache folders are not reused.
constexpr int kFolderFormat = 1;
constexpr const char* kSourceFile = "gguf_source.json";

const json& meta(const GgufFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  MAGIX_CHECK(it != f.metadata().end(), "{}: GGUF metadata key '{}' is missing",
              f.path().string(), key);
  return *it;
}

const json* meta_opt(const GgufFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  return it == f.metadata().end() ? nullptr : &*it;
}

int64_t meta_int(const GgufFile& f, const std::string& key) {
  const json& v = meta(f, key);
  MAGIX_CHECK(v.is_number_integer() || v.is_number_unsigned(),
              "{}: GGUF metadata '{}' must be an integer", f.path().string(), key);
  const int64_t x = v.get<int64_t>();
  MAGIX_CHECK(x >= 0 && x <= (int64_t{1} << 40), "{}: GGUF metadata '{}' = {} is out of range",
              f.path().string(), key, x);
  return x;
}

double meta_float(const GgufFile& f, const std::string& key) {
  const json& v = meta(f, key);
  MAGIX_CHECK(v.is_number(), "{}: GGUF metadata '{}' must be a number", f.path().string(), key);
  return v.get<double>();
}

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

// HF name for a GGUF tensor name; empty when the name is not one magix knows.
std::string hf_name(const std::string& g) {
  for (const auto& [gg, hf] : gguf::kTopNames) {
    if (g == gg) return std::string(hf);
  }
  if (!g.starts_with("blk.")) return {};
  const size_t dot = g.find('.', 4);
  if (dot == std::string::npos || dot == 4) return {};
  const std::string idx = g.substr(4, dot - 4);
  if (!std::all_of(idx.begin(), idx.end(), ::isdigit) || idx.size() > 6) return {};
  const std::string_view rest = std::string_view(g).substr(dot + 1);
  for (const auto& [gg, hf] : gguf::kLayerNames) {
    if (rest == gg) return "model.layers." + std::to_string(std::stoll(idx)) + "." + std::string(hf);
  }
  return {};
}

std::optional<int64_t> token_id(const GgufFile& f, const std::string& key, int64_t vocab) {
  const json* v = meta_opt(f, key);
  if (v == nullptr) return std::nullopt;
  MAGIX_CHECK(v->is_number_integer() || v->is_number_unsigned(),
              "{}: GGUF metadata '{}' must be an integer", f.path().string(), key);
  const int64_t id = v->get<int64_t>();
  MAGIX_CHECK(id >= 0 && id < vocab, "{}: GGUF metadata '{}' = {} is not a token id (vocab {})",
              f.path().string(), key, id, vocab);
  return id;
}

const json& tokens(const GgufFile& f) {
  const json& t = meta(f, "tokenizer.ggml.tokens");
  MAGIX_CHECK(t.is_array() && !t.empty() && f.metadata_types().at("tokenizer.ggml.tokens") ==
                                                "array[string]",
              "{}: tokenizer.ggml.tokens must be a non-empty array of strings", f.path().string());
  return t;
}

// The byte-level alphabet: byte b is spelled as the code point alphabet[b] (printable Latin-1
// bytes as themselves, the rest shifted to U+0100 and up).
const std::vector<uint32_t>& byte_alphabet() {
  static const std::vector<uint32_t> a = [] {
    std::vector<uint32_t> out(256);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      out[b] = printable ? b : next++;
    }
    return out;
  }();
  return a;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes UTF-8 into code points; false on invalid input.
bool decode_utf8(const std::string& s, std::vector<uint32_t>& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    out.push_back(cp);
    i += n;
  }
  return true;
}

// A token as the byte-level vocabulary spells it: as stored when every character is in the
// byte alphabet, else its UTF-8 bytes spelled through the alphabet (transformers does the same).
std::string byte_level_spelling(const std::string& token, bool* in_alphabet) {
  static const std::set<uint32_t> alphabet(byte_alphabet().begin(), byte_alphabet().end());
  std::vector<uint32_t> cps;
  bool all = decode_utf8(token, cps);
  for (uint32_t cp : cps) all = all && alphabet.count(cp) > 0;
  *in_alphabet = all;
  if (all) return token;
  std::string out;
  for (unsigned char b : token) append_utf8(out, byte_alphabet()[b]);
  return out;
}

// Pre-tokenizer split patterns by tokenizer.ggml.pre (the regexes of the tokenizers these
// vocabularies were trained with); absent: GPT-2's ByteLevel split.
const char* split_pattern(const std::string& pre) {
  static const std::string llama3(gguf::kLlama3Split), qwen2(gguf::kQwen2Split);
  static const std::map<std::string, const std::string*> by_name = {
      {"llama3", &llama3},  {"llama-v3", &llama3}, {"llama-bpe", &llama3},
      {"falcon3", &llama3}, {"dbrx", &llama3},     {"smaug-bpe", &llama3},
      {"pixtral", &llama3}, {"qwen2", &qwen2},     {"deepseek-r1-qwen", &qwen2},
      {"megrez", &qwen2},
  };
  auto it = by_name.find(pre);
  return it == by_name.end() ? nullptr : it->second->c_str();
}

json byte_level(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

bool meta_bool(const GgufFile& f, const std::string& key, bool dflt) {
  const json* v = meta_opt(f, key);
  if (v == nullptr) return dflt;
  MAGIX_CHECK(v->is_boolean(), "{}: GGUF metadata '{}' must be a bool", f.path().string(), key);
  return v->get<bool>();
}

std::string tokenizer_model(const GgufFile& f) {
  const json& m = meta(f, "tokenizer.ggml.model");
  MAGIX_CHECK(m.is_string(), "{}: tokenizer.ggml.model must be a string", f.path().string());
  return m.get<std::string>();
}

fs::path cache_root() {
  if (const char* c = std::getenv("MAGIX_CACHE"); c && *c) return fs::path(c) / "gguf";
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "magix" / "gguf";
  const char* home = std::getenv("HOME");
  MAGIX_CHECK(home && *home, "cannot place magix's cache for GGUF files: MAGIX_CACHE, "
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
  io::write_file_atomically(path, [&](int fd, const fs::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });
}

}  // namespace

std::vector<std::string> gguf_supported_architectures() { return {"llama", "qwen2"}; }

json gguf_hf_config(const GgufFile& f) {
  const std::string arch = architecture(f);
  const std::string p = arch + ".";
  const int64_t hidden = meta_int(f, p + "embedding_length");
  const int64_t heads = meta_int(f, p + "attention.head_count");
  MAGIX_CHECK(heads > 0, "{}: {}attention.head_count is 0", f.path().string(), p);
  const int64_t kv = meta_opt(f, p + "attention.head_count_kv") ? meta_int(f, p + "attention.head_count_kv")
                                                                : heads;
  const int64_t vocab = static_cast<int64_t>(tokens(f).size());
  bool tied = f.find("output.weight") == nullptr;
  json c = {
      {"architectures", json::array({arch == "llama" ? "LlamaForCausalLM" : "Qwen2ForCausalLM"})},
      {"model_type", arch},
      {"hidden_size", hidden},
      {"intermediate_size", meta_int(f, p + "feed_forward_length")},
      {"num_hidden_layers", meta_int(f, p + "block_count")},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv},
      {"max_position_embeddings", meta_int(f, p + "context_length")},
      {"rms_norm_eps", meta_float(f, p + "attention.layer_norm_rms_epsilon")},
      {"rope_theta", meta_opt(f, p + "rope.freq_base") ? meta_float(f, p + "rope.freq_base") : 10000.0},
      {"vocab_size", vocab},
      {"tie_word_embeddings", tied},
      {"hidden_act", "silu"},
      {"torch_dtype", "float32"},
  };
  if (const json* kl = meta_opt(f, p + "attention.key_length")) {
    c["head_dim"] = kl->get<int64_t>();
  } else if (meta_opt(f, p + "rope.dimension_count") && arch == "llama") {
    c["head_dim"] = meta_int(f, p + "rope.dimension_count");
  }
  if (arch == "llama") {
    c["attention_bias"] = f.find("blk.0.attn_q.bias") != nullptr;
    c["mlp_bias"] = false;
  }
  if (const json* st = meta_opt(f, p + "rope.scaling.type"); st && st->is_string() &&
                                                              st->get<std::string>() != "none") {
    MAGIX_FAIL("{}: GGUF rope scaling '{}' is not supported yet", f.path().string(),
               st->get<std::string>());
  }
  MAGIX_CHECK(f.find("rope_freqs.weight") == nullptr,
              "{}: this GGUF carries rope_freqs.weight (Llama 3.1-style RoPE scaling), which "
              "magix does not map from GGUF yet", f.path().string());
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                  {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                  {"tokenizer.ggml.padding_token_id", "pad_token_id"}}) {
    if (auto id = token_id(f, key, vocab)) c[name] = *id;
  }
  return c;
}

json gguf_tokenizer_json(const GgufFile& f) {
  const std::string model = tokenizer_model(f);
  MAGIX_CHECK(model == "gpt2",
              "{}: GGUF tokenizer model '{}' is not supported yet (magix builds 'gpt2' byte-level "
              "BPE tokenizers from GGUF metadata)", f.path().string(), model);
  const json& toks = tokens(f);
  const int64_t n = static_cast<int64_t>(toks.size());
  std::vector<int64_t> types(n, 1);
  if (const json* tt = meta_opt(f, "tokenizer.ggml.token_type")) {
    MAGIX_CHECK(tt->is_array() && static_cast<int64_t>(tt->size()) == n,
                "{}: tokenizer.ggml.token_type must list one type per token ({})",
                f.path().string(), n);
    for (int64_t i = 0; i < n; ++i) types[i] = (*tt)[i].get<int64_t>();
  }
  json vocab = json::object();
  std::vector<std::string> spelled(n);
  std::vector<bool> in_alphabet(n);
  for (int64_t i = 0; i < n; ++i) {
    bool all = false;
    spelled[i] = byte_level_spelling(toks[i].get_ref<const std::string&>(), &all);
    in_alphabet[i] = all;
    vocab[spelled[i]] = i;  // a repeated token keeps its last id, as transformers' dict does
  }
  json merges = json::array();
  if (const json* m = meta_opt(f, "tokenizer.ggml.merges")) {
    MAGIX_CHECK(m->is_array(), "{}: tokenizer.ggml.merges must be an array", f.path().string());
    for (const json& e : *m) {
      MAGIX_CHECK(e.is_string(), "{}: tokenizer.ggml.merges must hold strings", f.path().string());
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      MAGIX_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                  "{}: GGUF merge '{}' is not two tokens separated by one space",
                  f.path().string(), s);
      merges.push_back(json::array({s.substr(0, sp), s.substr(sp + 1)}));
    }
  }
  // Control tokens (type 3) are special added tokens; user-defined ones (type 4) plain added
  // tokens. A control token spelled outside the byte alphabet is a mislabel and skipped.
  json added = json::array();
  for (int64_t i = 0; i < n; ++i) {
    const bool control = types[i] == 3 && in_alphabet[i];
    // (transformers adds a user-defined token only when the vocabulary holds it as spelled)
    const bool user = types[i] == 4 && in_alphabet[i] && vocab.at(spelled[i]).get<int64_t>() == i;
    if (!control && !user) continue;
    added.push_back({{"id", i},
                     {"content", toks[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", control}});
  }
  json pre;
  const json* pre_name = meta_opt(f, "tokenizer.ggml.pre");
  const char* pattern =
      pre_name && pre_name->is_string() ? split_pattern(pre_name->get<std::string>()) : nullptr;
  if (pattern) {
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            json::array({{{"type", "Split"},
                          {"pattern", {{"Regex", pattern}}},
                          {"behavior", "Isolated"},
                          {"invert", false}},
                         byte_level(false, false)})}};
  } else {
    pre = byte_level(false, true);
  }
  // bos/eos added as the file's add_bos_token / add_eos_token say.
  json single = json::array(), pair = json::array(), specials = json::object();
  auto special = [&](const char* key, const std::string& flag, bool dflt, bool at_start) {
    auto id = token_id(f, key, n);
    if (!id || !meta_bool(f, flag, dflt)) return;
    const json tok = toks[*id];
    const json piece = {{"SpecialToken", {{"id", tok}, {"type_id", 0}}}};
    if (at_start) {
      single.insert(single.begin(), piece);
    } else {
      single.push_back(piece);
    }
    specials[tok.get<std::string>()] = {{"id", tok}, {"ids", json::array({*id})},
                                        {"tokens", json::array({tok})}};
  };
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  special("tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token", false, true);
  special("tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_eos_token", false, false);
  pair = single;
  for (const json& piece : single) {
    if (piece.contains("Sequence")) {
      pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
    } else {
      json p2 = piece;
      p2["SpecialToken"]["type_id"] = 1;
      pair.push_back(p2);
    }
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor",
           {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair},
            {"special_tokens", specials}}},
          {"decoder", byte_level(true, true)},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", ""},
            {"end_of_word_suffix", ""},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

json gguf_tokenizer_config(const GgufFile& f) {
  const json& toks = tokens(f);
  const int64_t n = static_cast<int64_t>(toks.size());
  json c = json::object();
  c["add_bos_token"] = meta_bool(f, "tokenizer.ggml.add_bos_token", false);
  c["add_eos_token"] = meta_bool(f, "tokenizer.ggml.add_eos_token", false);
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token"},
                                  {"tokenizer.ggml.eos_token_id", "eos_token"},
                                  {"tokenizer.ggml.unknown_token_id", "unk_token"},
                                  {"tokenizer.ggml.padding_token_id", "pad_token"}}) {
    if (auto id = token_id(f, key, n)) c[name] = toks[*id];
  }
  if (const json* t = meta_opt(f, "tokenizer.chat_template")) {
    MAGIX_CHECK(t->is_string(), "{}: tokenizer.chat_template must be a string", f.path().string());
    c["chat_template"] = *t;
  }
  c["model_max_length"] = gguf_hf_config(f).at("max_position_embeddings");
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
    std::string hf = hf_name(t.name);
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

bool GgufWeights::contains(std::string_view hf) const { return by_hf_.find(hf) != by_hf_.end(); }

const SafetensorsEntry& GgufWeights::entry(std::string_view hf) const {
  auto it = by_hf_.find(hf);
  MAGIX_CHECK(it != by_hf_.end(), "{}: no tensor for '{}'", file_.path().string(), hf);
  return it->second.second;
}

Tensor GgufWeights::read_f32(std::string_view hf) const {
  auto it = by_hf_.find(hf);
  MAGIX_CHECK(it != by_hf_.end(), "{}: no tensor for '{}'", file_.path().string(), hf);
  Tensor t = file_.read_f32(it->second.first);
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
  MAGIX_CHECK(j.is_object() && j.contains("gguf") && j["gguf"].is_string() && j.contains("size"),
              "{}: damaged; delete the folder and load the GGUF file again",
              (dir / kSourceFile).string());
  const fs::path src = j["gguf"].get<std::string>();
  MAGIX_CHECK(fs::is_regular_file(src, ec) && fs::file_size(src, ec) == j["size"].get<uint64_t>(),
              "{}: the GGUF file {} it stands for is gone or changed; load the GGUF file again",
              dir.string(), src.string());
  return src;
}

}  // namespace magix
