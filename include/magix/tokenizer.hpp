// tokenizer.json (Hugging Face `tokenizers` format): BPE models, byte-level (Llama-3, Qwen) and
// SentencePiece-style with byte fallback (Mistral, Gemma), added/special tokens, normalizers,
// pre-tokenizers, post-processors and decoders. Ids equal those of HF `tokenizers`.
// Input text must be valid UTF-8: invalid input throws magix::Error naming the byte offset
// (see docs/tokenizer.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "magix/tokenizer_config.hpp"

namespace magix {

struct TokenizerImpl;  // src/tokenizer/tokenizer_impl.hpp

// The largest tokenizer.json read: real ones are 2-35 MB (Gemma 3's, 33 MB, is the largest seen).
inline constexpr int64_t kMaxTokenizerJsonBytes = 256 << 20;

class Tokenizer {
 public:
  // tokenizer.json (+ tokenizer_config.json / chat_template.jinja beside it, if present) from a
  // folder, or a hub name in the local HF cache (resolved as resolve_model_dir does).
  static Tokenizer load(const std::string& name_or_path);
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json,
                             TokenizerConfig config = {});
  // The same from the JSON text of a tokenizer.json; `source` names it in error messages.
  static Tokenizer from_json_string(std::string_view json, TokenizerConfig config = {},
                                    const std::string& source = "<tokenizer.json>");

  // byte offsets [begin, end) into the input text; tokens added by the post-processor get {0, 0}
  struct Encoding {
    std::vector<int32_t> ids;
    std::vector<std::pair<size_t, size_t>> offsets;
  };
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  Encoding encode_with_offsets(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const;

  int64_t vocab_size() const;  // max id + 1 over the model vocab and added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // throws on an id out of range
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_id() const;  // from tokenizer_config's bos_token
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> pad_id() const;
  const TokenizerConfig& config() const;

  // Copyable (shares the immutable implementation) and movable.
  Tokenizer(const Tokenizer&) = default;
  Tokenizer& operator=(const Tokenizer&) = default;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  ~Tokenizer();

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerImpl> impl);
  std::shared_ptr<const TokenizerImpl> impl_;
};

// Incremental detokenisation: push ids one at a time; returns the newly completed text, never a
// partial UTF-8 character.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  std::string push(int32_t id);
  std::string finish();  // whatever remains (incomplete bytes as U+FFFD, documented)

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;  // ids not yet fully emitted (a window, trimmed as text is emitted)
  size_t prefix_len_ = 0;     // leading ids of ids_ that are only context
  std::string prefix_text_;   // decode of the context ids
};

}  // namespace magix
