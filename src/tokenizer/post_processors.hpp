// tokenizer.json "post_processor": TemplateProcessing, ByteLevel (offset trimming), BertProcessing,
// Sequence. Runs on the encoding of a single sequence.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/normalized_string.hpp"

namespace magix::text {

struct EncodingBuffer {
  std::vector<int32_t> ids;
  std::vector<Range> offsets;       // byte offsets into the input; {0, 0} for added special tokens
  std::vector<uint8_t> from_input;  // 1 where the token's text is the input slice (added tokens)
  // false: ids only, `offsets` and `from_input` stay empty (17 bytes per token less).
  bool with_offsets = true;
};

// The text of token i of an encoding (for offset trimming).
using IdToToken = std::function<std::string(size_t)>;

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(EncodingBuffer& enc, bool add_special_tokens,
                       const IdToToken& id_to_token) const = 0;
  // Appends the ids of the special tokens it adds (checked against the vocabulary at load).
  virtual void special_ids(std::vector<int32_t>& out) const { (void)out; }
};

// null -> nullptr; an unknown "type" is an error naming it and `source`.
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j,
                                                   const std::string& source);

}  // namespace magix::text
