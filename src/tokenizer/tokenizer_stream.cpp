// StreamDecoder: text is emitted only once the decode of the pending ids is stable, i.e. does not
// end in U+FFFD (an incomplete UTF-8 character, or byte tokens still waiting for the rest).
// The last emitted ids stay as context so that decoders which look at the first token (Strip,
// Metaspace) treat the new ids as they would in the full decode.
#include "magix/error.hpp"
#include "magix/tokenizer.hpp"

namespace magix {
namespace {

bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tokenizer_->decode(ids_, skip_special_tokens_);
  if (text.size() <= prefix_text_.size() || ends_with_replacement(text) ||
      text.compare(0, prefix_text_.size(), prefix_text_) != 0) {
    return {};
  }
  std::string fresh = text.substr(prefix_text_.size());
  // The ids just emitted become the context for the next ones.
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_len_));
  prefix_len_ = ids_.size();
  prefix_text_ = tokenizer_->decode(ids_, skip_special_tokens_);
  return fresh;
}

std::string StreamDecoder::finish() {
  const std::string text = tokenizer_->decode(ids_, skip_special_tokens_);
  std::string rest;
  if (text.size() > prefix_text_.size() &&
      text.compare(0, prefix_text_.size(), prefix_text_) == 0) {
    rest = text.substr(prefix_text_.size());
  }
  ids_.clear();
  prefix_len_ = 0;
  prefix_text_.clear();
  return rest;
}

}  // namespace magix
