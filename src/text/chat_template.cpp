#include "magix/chat_template.hpp"

#include "magix/error.hpp"

namespace magix {

namespace jinja {
struct Template {
  std::string source;
};
}  // namespace jinja

ChatTemplate::ChatTemplate(std::string source)
    : impl_(std::make_shared<jinja::Template>(jinja::Template{std::move(source)})) {}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render(context, ChatTemplateOptions{});
}
std::string ChatTemplate::render(const nlohmann::ordered_json&, const ChatTemplateOptions&) const {
  MAGIX_FAIL("chat templates are not built yet");
}
const std::string& ChatTemplate::source() const { return impl_->source; }

std::string apply_chat_template(const TokenizerConfig&, const nlohmann::ordered_json&, bool,
                                const nlohmann::ordered_json&, const std::optional<std::string>&) {
  MAGIX_FAIL("chat templates are not built yet");
}

}  // namespace magix
