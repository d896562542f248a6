// Tokenizer: transient stubs (being written).
#include "magix/tokenizer.hpp"

#include "magix/error.hpp"

namespace magix {

struct TokenizerImpl {};

Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string&) { MAGIX_FAIL("Tokenizer: not built yet"); }
Tokenizer Tokenizer::from_file(const std::filesystem::path&, TokenizerConfig) {
  MAGIX_FAIL("Tokenizer: not built yet");
}
Tokenizer Tokenizer::from_json_string(std::string_view, TokenizerConfig, const std::string&) {
  MAGIX_FAIL("Tokenizer: not built yet");
}
std::vector<int32_t> Tokenizer::encode(std::string_view, bool) const { MAGIX_FAIL("not built yet"); }
Tokenizer::Encoding Tokenizer::encode_with_offsets(std::string_view, bool) const {
  MAGIX_FAIL("not built yet");
}
std::string Tokenizer::decode(std::span<const int32_t>, bool) const { MAGIX_FAIL("not built yet"); }
int64_t Tokenizer::vocab_size() const { MAGIX_FAIL("not built yet"); }
std::optional<int32_t> Tokenizer::token_to_id(std::string_view) const { MAGIX_FAIL("not built yet"); }
std::string Tokenizer::id_to_token(int32_t) const { MAGIX_FAIL("not built yet"); }
bool Tokenizer::is_special(int32_t) const { MAGIX_FAIL("not built yet"); }
std::optional<int32_t> Tokenizer::bos_id() const { MAGIX_FAIL("not built yet"); }
std::optional<int32_t> Tokenizer::eos_id() const { MAGIX_FAIL("not built yet"); }
std::optional<int32_t> Tokenizer::pad_id() const { MAGIX_FAIL("not built yet"); }
const TokenizerConfig& Tokenizer::config() const { MAGIX_FAIL("not built yet"); }

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}
std::string StreamDecoder::push(int32_t) { MAGIX_FAIL("not built yet"); }
std::string StreamDecoder::finish() { MAGIX_FAIL("not built yet"); }

}  // namespace magix
