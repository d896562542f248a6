// The parts of a loaded tokenizer.json (shared, immutable after loading).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "magix/tokenizer_config.hpp"
#include "tokenizer/added_tokens.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/decoders.hpp"
#include "tokenizer/normalizers.hpp"
#include "tokenizer/post_processors.hpp"
#include "tokenizer/pre_tokenizers.hpp"

namespace magix {

struct TokenizerImpl {
  std::string source;  // file name for messages
  TokenizerConfig config;
  std::unique_ptr<text::Normalizer> normalizer;
  std::unique_ptr<text::PreTokenizer> pre_tokenizer;
  std::unique_ptr<text::BpeModel> model;
  std::unique_ptr<text::PostProcessor> post_processor;
  std::unique_ptr<text::Decoder> decoder;

  std::vector<text::AddedToken> added;              // in file order
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index into `added`
  text::TokenMap added_by_content;
  text::AddedTokenMatcher raw_matcher;         // tokens with normalized == false
  text::AddedTokenMatcher normalized_matcher;  // tokens with normalized == true (normalized form)
  int64_t vocab_size = 0;
  std::optional<int32_t> bos, eos, pad;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Model tokens of one plain (non-added-token) piece of the input, appended to `out`.
  void encode_plain(std::string_view text, size_t begin, text::EncodingBuffer& out) const;
  // with_offsets false: ids only (what Tokenizer::encode returns).
  text::EncodingBuffer encode(std::string_view text, bool add_special_tokens,
                              bool with_offsets) const;
};

}  // namespace magix
