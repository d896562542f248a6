// GGUF tokenizer metadata as tokenizer.json / tokenizer_config.json, built the way transformers'
// GGUF loader builds them (integrations/gguf/gguf_tokenizer_mapping.py): byte-level BPE for
// tokenizer.ggml.model "gpt2", SentencePiece BPE with byte fallback for "llama".
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>

#include "gguf_meta.hpp"
#include "gguf_names.hpp"
#include "magix/error.hpp"
#include "magix/gguf_model.hpp"

namespace magix {

using gguf::meta;
using gguf::meta_bool;
using gguf::meta_opt;
using gguf::token_id;
using gguf::tokens;
using nlohmann::json;

namespace {

// llama.cpp's token types (tokenizer.ggml.token_type).
constexpr int64_t kControl = 3, kUserDefined = 4;

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
  static const std::string llama3(gguf::kLlama3Split), qwen2(gguf::kQwen2Split),
      qwen35(gguf::kQwen35Split), tekken(gguf::kTekkenSplit), gpt4o(gguf::kGpt4oSplit);
  // The names transformers 5.23 maps (its GGUF tokenizer mapping), to the same patterns.
  static const std::map<std::string, const std::string*> by_name = {
      {"llama3", &llama3},       {"llama-v3", &llama3},
      {"llama-bpe", &llama3},    {"falcon3", &llama3},
      {"falcon-h1", &llama3},    {"pixtral", &llama3},
      {"midm-2.0", &llama3},     {"lfm2", &llama3},
      {"jina-v5-nano", &llama3}, {"dbrx", &llama3},
      {"smaug-bpe", &llama3},    {"tekken", &tekken},
      {"qwen2", &qwen2},         {"deepseek-r1-qwen", &qwen2},
      {"kormo", &qwen2},         {"f2llmv2", &qwen2},
      {"megrez", &qwen2},        {"qwen35", &qwen35},
      {"gpt-4o", &gpt4o},        {"llama4", &gpt4o},
      {"kanana2", &gpt4o},       {"talkie", &gpt4o},
      {"minimax-m2", &gpt4o},
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

std::vector<int64_t> token_types(const GgufFile& f, int64_t n) {
  std::vector<int64_t> types(n, 1);
  if (const json* tt = meta_opt(f, "tokenizer.ggml.token_type")) {
    MAGIX_CHECK(tt->is_array() && static_cast<int64_t>(tt->size()) == n,
                "{}: tokenizer.ggml.token_type must list one type per token ({})",
                f.path().string(), n);
    for (int64_t i = 0; i < n; ++i) {
      MAGIX_CHECK((*tt)[i].is_number_integer(), "{}: tokenizer.ggml.token_type must hold integers",
                  f.path().string());
      types[i] = (*tt)[i].get<int64_t>();
    }
  }
  return types;
}

json added_token(int64_t id, const json& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

// TemplateProcessing that adds bos / eos as the file's add_bos_token / add_eos_token say
// (absent: `add_bos_default`, no eos).
json template_processor(const GgufFile& f, const json& toks, bool add_bos_default) {
  const int64_t n = static_cast<int64_t>(toks.size());
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
    specials[tok.get<std::string>()] = {
        {"id", tok}, {"ids", json::array({*id})}, {"tokens", json::array({tok})}};
  };
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  special("tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token", add_bos_default, true);
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
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", pair},
          {"special_tokens", specials}};
}

json merges_from_file(const GgufFile& f, const json& m) {
  MAGIX_CHECK(m.is_array(), "{}: tokenizer.ggml.merges must be an array", f.path().string());
  json merges = json::array();
  for (const json& e : m) {
    MAGIX_CHECK(e.is_string(), "{}: tokenizer.ggml.merges must hold strings", f.path().string());
    const std::string& s = e.get_ref<const std::string&>();
    const size_t sp = s.find(' ');
    MAGIX_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                "{}: GGUF merge '{}' is not two tokens separated by one space", f.path().string(),
                s);
    merges.push_back(json::array({s.substr(0, sp), s.substr(sp + 1)}));
  }
  return merges;
}

json byte_level_tokenizer_json(const GgufFile& f) {
  const json& toks = tokens(f);
  const int64_t n = static_cast<int64_t>(toks.size());
  const std::vector<int64_t> types = token_types(f, n);
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
  if (const json* m = meta_opt(f, "tokenizer.ggml.merges")) merges = merges_from_file(f, *m);
  // Control tokens (type 3) are special added tokens; user-defined ones (type 4) plain added
  // tokens. A control token spelled outside the byte alphabet is a mislabel and skipped.
  json added = json::array();
  for (int64_t i = 0; i < n; ++i) {
    const bool control = types[i] == kControl && in_alphabet[i];
    // (transformers adds a user-defined token only when the vocabulary holds it as spelled)
    const bool user =
        types[i] == kUserDefined && in_alphabet[i] && vocab.at(spelled[i]).get<int64_t>() == i;
    if (control || user) added.push_back(added_token(i, toks[i], control));
  }
  json pre;
  const json* pre_name = meta_opt(f, "tokenizer.ggml.pre");
  const char* pattern =
      pre_name && pre_name->is_string() ? split_pattern(pre_name->get<std::string>()) : nullptr;
  if (pattern) {
    pre = {{"type", "Sequence"},
           {"pretokenizers", json::array({{{"type", "Split"},
                                           {"pattern", {{"Regex", pattern}}},
                                           {"behavior", "Isolated"},
                                           {"invert", false}},
                                          byte_level(false, false)})}};
  } else {
    pre = byte_level(false, true);
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor", template_processor(f, toks, false)},
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

// ---- SentencePiece BPE ("llama") ----

// How the SentencePiece vocabulary of an architecture is split and spelled (transformers picks
// the tokenizer class by architecture): Llama's Metaspace, Gemma's spaces-as-"▁" normalizer
// with a split after each space, Phi-3's normalizer that prepends "▁".
enum class SpmStyle { kLlama, kGemma, kPhi3 };

SpmStyle spm_style(const std::string& arch) {
  if (arch == "gemma" || arch == "gemma2" || arch == "gemma3") return SpmStyle::kGemma;
  if (arch == "phi3") return SpmStyle::kPhi3;
  return SpmStyle::kLlama;
}

// Python's str.isspace() for the code points a token may hold.
bool is_python_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

constexpr std::string_view kSpace = "\u2581";  // "▁"

// Merges implied by a vocabulary without merges (transformers' generate_merges with scores):
// every split of a token into two vocabulary tokens, ranked by the token's score (highest
// first), then by the lengths of the two parts (longest first); the splits of one token by the
// ids of their parts. `order` lists each distinct token once (first occurrence) with its score
// (that of its last occurrence), `ids` a token's (last) id.
json derive_merges(const GgufFile& f, const std::vector<std::pair<std::string_view, double>>& order,
                   const std::unordered_map<std::string_view, int64_t>& ids) {
  struct Merge {
    std::string_view l, r;
    double score;
    size_t len_l, len_r;  // in code points
  };
  // Each token costs about len^2 bytes of hashing; bounded for untrusted files (real
  // vocabularies: Llama 2's about 2^21, Gemma 3's about 2^26).
  constexpr uint64_t kBudget = uint64_t{1} << 32;
  uint64_t work = 0;
  for (const auto& [tok, score] : order) {
    work += static_cast<uint64_t>(tok.size()) * tok.size();  // (tokens are under 64 MiB)
    if (work > kBudget) break;
  }
  MAGIX_CHECK(work <= kBudget,
              "{}: the SentencePiece vocabulary is too large to derive merges from (the sum of "
              "squared token lengths is {}, over 2^32)",
              f.path().string(), work);
  std::vector<Merge> merges;
  std::vector<uint32_t> cps;
  std::vector<size_t> offsets;
  for (const auto& [tok, score] : order) {
    MAGIX_CHECK(decode_utf8(std::string(tok), cps), "{}: token '{}' is not valid UTF-8",
                f.path().string(), tok);
    offsets.clear();
    for (size_t i = 0; i < tok.size(); ++i) {
      if ((static_cast<unsigned char>(tok[i]) & 0xC0) != 0x80) offsets.push_back(i);
    }
    const size_t first = merges.size();
    for (size_t k = 1; k < offsets.size(); ++k) {
      const std::string_view l = tok.substr(0, offsets[k]), r = tok.substr(offsets[k]);
      if (ids.contains(l) && ids.contains(r))
        merges.push_back({l, r, score, k, offsets.size() - k});
    }
    std::stable_sort(merges.begin() + static_cast<std::ptrdiff_t>(first), merges.end(),
                     [&](const Merge& a, const Merge& b) {
                       const int64_t al = ids.at(a.l), bl = ids.at(b.l);
                       return al != bl ? al < bl : ids.at(a.r) < ids.at(b.r);
                     });
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.len_l != b.len_l) return a.len_l > b.len_l;
    return a.len_r > b.len_r;
  });
  json out = json::array();
  for (const Merge& m : merges) out.push_back(json::array({m.l, m.r}));
  return out;
}

json replace_space(std::string_view from, std::string_view to) {
  return {{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
}

json spm_tokenizer_json(const GgufFile& f) {
  const json& toks = tokens(f);
  const int64_t n = static_cast<int64_t>(toks.size());
  const std::vector<int64_t> types = token_types(f, n);
  const SpmStyle style = spm_style(gguf::meta_string(f, "general.architecture"));
  // Gemma files store a token of spaces (two or more) as spaces; its vocabulary spells "▁".
  std::vector<std::string> spelled(n);
  std::vector<uint32_t> cps;
  for (int64_t i = 0; i < n; ++i) {
    const std::string& t = toks[i].get_ref<const std::string&>();
    spelled[i] = t;
    if (style != SpmStyle::kGemma || t.find(' ') == std::string::npos) continue;
    MAGIX_CHECK(decode_utf8(t, cps), "{}: token {} is not valid UTF-8", f.path().string(), i);
    if (std::all_of(cps.begin(), cps.end(), is_python_space)) {
      spelled[i].clear();
      for (size_t k = 0; k < cps.size(); ++k) spelled[i] += kSpace;
    }
  }
  json vocab = json::object();
  std::unordered_map<std::string_view, int64_t> ids;
  for (int64_t i = 0; i < n; ++i) {
    vocab[spelled[i]] = i;  // a repeated token keeps its last id
    ids[spelled[i]] = i;
  }
  json merges;
  if (const json* m = meta_opt(f, "tokenizer.ggml.merges")) {
    merges = merges_from_file(f, *m);
  } else {
    // The score ranks the merges; Gemma's scores do not follow its merge order, its token
    // order does (transformers ranks Gemma's by -position).
    std::vector<double> scores(n);
    if (style == SpmStyle::kGemma) {
      for (int64_t i = 0; i < n; ++i) scores[i] = -static_cast<double>(i);
    } else {
      const json& s = meta(f, "tokenizer.ggml.scores");
      MAGIX_CHECK(s.is_array() && static_cast<int64_t>(s.size()) == n,
                  "{}: tokenizer.ggml.scores must list one score per token ({})", f.path().string(),
                  n);
      for (int64_t i = 0; i < n; ++i) {
        MAGIX_CHECK(s[i].is_number() && std::isfinite(s[i].get<double>()),
                    "{}: tokenizer.ggml.scores must hold finite numbers (token {})",
                    f.path().string(), i);
        scores[i] = s[i].get<double>();
      }
    }
    std::vector<std::pair<std::string_view, double>> order;
    std::unordered_map<std::string_view, size_t> where;
    for (int64_t i = 0; i < n; ++i) {
      auto [it, fresh] = where.try_emplace(spelled[i], order.size());
      if (fresh) {
        order.emplace_back(spelled[i], scores[i]);
      } else {
        order[it->second].second = scores[i];
      }
    }
    merges = derive_merges(f, order, ids);
  }
  // Special: control tokens and the bos/eos/unk/pad the file names; plain added tokens: the
  // user-defined ones the vocabulary holds as stored.
  std::set<int64_t> special_ids;
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"}) {
    if (auto id = token_id(f, key, n)) special_ids.insert(*id);
  }
  json added = json::array();
  for (int64_t i = 0; i < n; ++i) {
    const bool special = types[i] == kControl || special_ids.contains(i);
    const bool user =
        types[i] == kUserDefined && ids.contains(toks[i].get_ref<const std::string&>());
    if (special || user) added.push_back(added_token(i, toks[i], special));
  }
  const bool prefix = meta_bool(f, "tokenizer.ggml.add_space_prefix", true);
  json normalizer = nullptr, pre = nullptr;
  json decoders =
      json::array({replace_space(kSpace, " "), {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
  json unk = nullptr;
  switch (style) {
    case SpmStyle::kLlama:
      pre = {{"type", "Metaspace"},
             {"replacement", kSpace},
             {"prepend_scheme", prefix ? "first" : "never"},
             {"split", false}};
      break;
    case SpmStyle::kPhi3:
      normalizer = replace_space(" ", kSpace);
      if (prefix) {
        normalizer = {
            {"type", "Sequence"},
            {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", kSpace}}, normalizer})}};
      }
      break;
    case SpmStyle::kGemma:
      normalizer = replace_space(" ", kSpace);
      pre = {{"type", "Split"},
             {"pattern", {{"String", " "}}},
             {"behavior", "MergedWithPrevious"},
             {"invert", false}};
      if (auto id = token_id(f, "tokenizer.ggml.unknown_token_id", n)) unk = toks[*id];
      break;
  }
  if (prefix && style != SpmStyle::kGemma) {
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", normalizer},
          {"pre_tokenizer", pre},
          {"post_processor", template_processor(f, toks, true)},
          {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", unk},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

}  // namespace

json gguf_tokenizer_json(const GgufFile& f) {
  const std::string model = gguf::meta_string(f, "tokenizer.ggml.model");
  if (model == "gpt2") return byte_level_tokenizer_json(f);
  if (model == "llama") return spm_tokenizer_json(f);
  MAGIX_FAIL(
      "{}: GGUF tokenizer model '{}' is not supported (magix builds 'gpt2' byte-level BPE "
      "and 'llama' SentencePiece BPE tokenizers from GGUF metadata)",
      f.path().string(), model);
}

json gguf_tokenizer_config(const GgufFile& f) {
  const json& toks = tokens(f);
  const int64_t n = static_cast<int64_t>(toks.size());
  // SentencePiece vocabularies add bos unless the file says otherwise (llama.cpp, transformers).
  const bool spm = gguf::meta_string(f, "tokenizer.ggml.model") == "llama";
  json c = json::object();
  c["add_bos_token"] = meta_bool(f, "tokenizer.ggml.add_bos_token", spm);
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

}  // namespace magix
