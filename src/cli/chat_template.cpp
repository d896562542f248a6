#include "commands.hpp"
#include "magix/error.hpp"

namespace magix::cli {

void add_chat_template_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("chat-template", "(not built yet)");
  cmd->callback([] { MAGIX_FAIL("'chat-template' is not built yet"); });
}

}  // namespace magix::cli
