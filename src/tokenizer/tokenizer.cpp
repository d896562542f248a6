// Tokenizer: loading tokenizer.json and the encode / decode pipelines (HF tokenizers' order:
// added tokens -> normalizer -> normalized added tokens -> pre-tokenizer -> BPE -> post-processor).
#include "magix/tokenizer.hpp"

#include "magix/error.hpp"
#include "magix/gguf.hpp"
#include "magix/hf_files.hpp"
#include "magix/json_parse.hpp"
#include "tokenizer/tokenizer_impl.hpp"
#include "tokenizer/unicode.hpp"

namespace magix {

using nlohmann::json;

std::optional<int32_t> TokenizerImpl::token_to_id(std::string_view token) const {
  if (const auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
  return model->token_to_id(token);
}

std::optional<std::string> TokenizerImpl::id_to_token(int32_t id) const {
  if (const auto it = added_by_id.find(id); it != added_by_id.end())
    return added[it->second].content;
  if (const std::string* t = model->id_to_token(id)) return *t;
  return std::nullopt;
}

bool TokenizerImpl::is_special(int32_t id) const {
  const auto it = added_by_id.find(id);
  return it != added_by_id.end() && added[it->second].special;
}

void TokenizerImpl::encode_plain(std::string_view text, size_t begin,
                                 text::EncodingBuffer& out) const {
  // Without a normalizer the alignment to the input is implied (not stored per byte).
  text::NormalizedString ns = normalizer ? text::NormalizedString::from_original(text, begin)
                                         : text::NormalizedString::identity_of(text, begin);
  if (normalizer) normalizer->normalize(ns);
  std::vector<text::AddedSplit> splits;
  if (normalized_matcher.empty()) {
    splits.push_back({{0, ns.text.size()}, -1});
  } else {
    splits = normalized_matcher.split(ns.text, added);
  }
  std::vector<text::ModelToken> tokens;
  // Words are encoded as the pre-tokenizer finds them: none is kept after its tokens.
  const auto encode_word = [&](text::NormalizedString&& word) {
    tokens.clear();
    model->tokenize(word.text, tokens);
    for (const auto& t : tokens) out.ids.push_back(t.id);
    if (!out.with_offsets) return;
    for (const auto& t : tokens) out.offsets.push_back(word.original_range(t.begin, t.end));
    out.from_input.resize(out.ids.size(), 0);
  };
  for (const auto& sp : splits) {
    const auto [b, e] = sp.range;
    if (sp.token >= 0) {
      out.ids.push_back(added[static_cast<size_t>(sp.token)].id);
      if (!out.with_offsets) continue;
      out.offsets.push_back(e > b ? ns.original_range(b, e)
                                  : text::Range{ns.original_begin, ns.original_begin});
      out.from_input.push_back(1);
      continue;
    }
    if (e <= b) continue;
    text::NormalizedString piece = b == 0 && e == ns.text.size() ? std::move(ns) : ns.slice(b, e);
    if (pre_tokenizer) {
      pre_tokenizer->split(std::move(piece), encode_word);
    } else {
      encode_word(std::move(piece));
    }
  }
}

text::EncodingBuffer TokenizerImpl::encode(std::string_view input, bool add_special_tokens,
                                           bool with_offsets) const {
  text::check_utf8(input, "Tokenizer::encode: input text");
  text::EncodingBuffer enc;
  enc.with_offsets = with_offsets;
  if (raw_matcher.empty()) {
    encode_plain(input, 0, enc);
  } else {
    for (const auto& sp : raw_matcher.split(input, added)) {
      const auto [b, e] = sp.range;
      if (sp.token >= 0) {
        enc.ids.push_back(added[static_cast<size_t>(sp.token)].id);
        if (!with_offsets) continue;
        enc.offsets.push_back({b, e});
        enc.from_input.push_back(1);
      } else {
        encode_plain(input.substr(b, e - b), b, enc);
      }
    }
  }
  if (post_processor) {
    post_processor->process(enc, add_special_tokens, [&](size_t i) {
      if (enc.from_input[i])
        return std::string(
            input.substr(enc.offsets[i].first, enc.offsets[i].second - enc.offsets[i].first));
      return id_to_token(enc.ids[i]).value_or("");
    });
  }
  return enc;
}

namespace {

std::shared_ptr<TokenizerImpl> build_impl(const json& j, TokenizerConfig config,
                                          const std::string& source) {
  auto impl = std::make_shared<TokenizerImpl>();
  impl->source = source;
  impl->config = std::move(config);
  MAGIX_CHECK(j.is_object(), "{}: not a tokenizer.json (a JSON object), found {}", source,
              json_found(j));
  MAGIX_CHECK(j.contains("model"), "{}: not a tokenizer.json (no 'model')", source);
  const auto field = [&](const char* key) { return j.contains(key) ? j.at(key) : json(); };
  MAGIX_CHECK(
      field("truncation").is_null() && field("padding").is_null(),
      "{}: 'truncation' and 'padding' in tokenizer.json are not supported (set them to null)",
      source);
  impl->normalizer = text::make_normalizer(field("normalizer"), source);
  impl->pre_tokenizer = text::make_pre_tokenizer(field("pre_tokenizer"), source);
  impl->model = std::make_unique<text::BpeModel>(j.at("model"), source);
  impl->post_processor = text::make_post_processor(field("post_processor"), source);
  impl->decoder = text::make_decoder(field("decoder"), source);

  int64_t max_id = impl->model->max_id();
  const json no_added = json::array();
  const json& added =
      json_find(j, "added_tokens") ? json_array_at(j, "added_tokens", source) : no_added;
  for (size_t i = 0; i < added.size(); ++i) {
    const json& a = added[i];
    const std::string where = fmt::format("{}[{}]", json_key_name(source, "added_tokens"), i);
    json_expect_object(a, where);
    text::AddedToken t;
    t.id = json_get<int32_t>(a, "id", where);
    MAGIX_CHECK(t.id >= 0, "{}: added token id {} is negative", source, t.id);
    t.content = json_get<std::string>(a, "content", where);
    text::check_utf8(t.content, source + ": added token content");
    t.single_word = json_value<bool>(a, "single_word", false, where);
    t.lstrip = json_value<bool>(a, "lstrip", false, where);
    t.rstrip = json_value<bool>(a, "rstrip", false, where);
    t.special = json_value<bool>(a, "special", false, where);
    t.normalized = json_value<bool>(a, "normalized", !t.special, where);
    // An added token may re-declare a vocab token with its id (Gemma, Mistral do); an id that
    // already names another token would decode ambiguously.
    const std::string* in_vocab = impl->model->id_to_token(t.id);
    MAGIX_CHECK(in_vocab == nullptr || *in_vocab == t.content,
                "{}: added token '{}' has id {}, which model.vocab gives to '{}' (each id must "
                "name one token)",
                source, t.content, t.id, *in_vocab);
    if (const auto it = impl->added_by_id.find(t.id); it != impl->added_by_id.end()) {
      MAGIX_CHECK(impl->added[it->second].content == t.content,
                  "{}: added tokens '{}' and '{}' both have id {} (each id must name one token)",
                  source, impl->added[it->second].content, t.content, t.id);
    }
    max_id = std::max<int64_t>(max_id, t.id);
    impl->added_by_id[t.id] = impl->added.size();
    impl->added_by_content[t.content] = t.id;
    impl->added.push_back(std::move(t));
  }
  // Special tokens are matched before the others of the same pattern (HF order).
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < impl->added.size(); ++i) {
      const text::AddedToken& t = impl->added[i];
      if (t.special != (pass == 0)) continue;
      if (!t.normalized) {
        impl->raw_matcher.add(t.content, static_cast<int32_t>(i));
      } else {
        text::NormalizedString ns = text::NormalizedString::from_original(t.content, 0);
        if (impl->normalizer) impl->normalizer->normalize(ns);
        impl->normalized_matcher.add(ns.text, static_cast<int32_t>(i));
      }
    }
  }
  impl->vocab_size = max_id + 1;
  // An id the post-processor adds must name a token (else generation fails on it later).
  std::vector<int32_t> post_ids;
  if (impl->post_processor) impl->post_processor->special_ids(post_ids);
  for (const int32_t id : post_ids) {
    MAGIX_CHECK(impl->id_to_token(id).has_value(),
                "{}: post_processor adds id {}, which no token of model.vocab or added_tokens has",
                source, id);
  }
  const auto special_id = [&](const std::optional<std::string>& tok,
                              const char* what) -> std::optional<int32_t> {
    if (!tok) return std::nullopt;
    const auto id = impl->token_to_id(*tok);
    MAGIX_CHECK(id.has_value(), "{}: tokenizer_config {} '{}' is not in the vocabulary", source,
                what, *tok);
    return id;
  };
  impl->bos = special_id(impl->config.bos_token, "bos_token");
  impl->eos = special_id(impl->config.eos_token, "eos_token");
  impl->pad = special_id(impl->config.pad_token, "pad_token");
  return impl;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_string(std::string_view text, TokenizerConfig config,
                                      const std::string& source) {
  json j = parse_json(text, source);  // nesting limited (kMaxJsonDepth)
  try {
    return Tokenizer(build_impl(j, std::move(config), source));
  } catch (const json::exception& e) {
    MAGIX_FAIL("{}: unexpected tokenizer.json structure: {}", source, e.what());
  }
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json,
                               TokenizerConfig config) {
  return from_json_string(
      read_text_file_bounded(tokenizer_json, kMaxTokenizerJsonBytes, "tokenizer file"),
      std::move(config), tokenizer_json.string());
}

Tokenizer Tokenizer::load(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  const fs::path p(name_or_path);
  if (fs::is_regular_file(p) && !is_gguf_file(p)) {
    return from_file(p, load_tokenizer_config(p.parent_path()));
  }
  // Folders and hub names as models resolve (a .gguf file, or a folder holding one, stands for
  // the folder magix makes from its metadata).
  const fs::path dir = resolve_model_dir(name_or_path);
  const fs::path file = dir / "tokenizer.json";
  MAGIX_CHECK(fs::is_regular_file(file),
              "no tokenizer.json in '{}' (only tokenizer.json files are supported)", dir.string());
  return from_file(file, load_tokenizer_config(dir));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens, /*with_offsets=*/false).ids;
}

Tokenizer::Encoding Tokenizer::encode_with_offsets(std::string_view text,
                                                   bool add_special_tokens) const {
  text::EncodingBuffer enc = impl_->encode(text, add_special_tokens, /*with_offsets=*/true);
  return Encoding{std::move(enc.ids), std::move(enc.offsets)};
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (skip_special_tokens && impl_->is_special(id)) continue;
    auto t = impl_->id_to_token(id);
    MAGIX_CHECK(t.has_value(), "Tokenizer::decode: id {} is not in the vocabulary of {} (size {})",
                id, impl_->source, impl_->vocab_size);
    tokens.push_back(std::move(*t));
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  impl_->decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

int64_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}
std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  return impl_->token_to_id(token);
}
std::string Tokenizer::id_to_token(int32_t id) const {
  auto t = impl_->id_to_token(id);
  MAGIX_CHECK(t.has_value(), "Tokenizer::id_to_token: id {} is out of range for {} (vocab size {})",
              id, impl_->source, impl_->vocab_size);
  return std::move(*t);
}
bool Tokenizer::is_special(int32_t id) const {
  return impl_->is_special(id);
}
std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}
std::optional<int32_t> Tokenizer::pad_id() const {
  return impl_->pad;
}
const TokenizerConfig& Tokenizer::config() const {
  return impl_->config;
}

}  // namespace magix
