// tokenizer.json "decoder": ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence.
// A decoder rewrites the list of token strings; the decoded text is their concatenation.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace magix::text {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// null -> nullptr; an unknown "type" is an error naming it and `source`.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& source);

}  // namespace magix::text
