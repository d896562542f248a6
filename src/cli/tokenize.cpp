#include "commands.hpp"
#include "magix/error.hpp"

namespace magix::cli {

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "(not built yet)");
  cmd->callback([] { MAGIX_FAIL("'tokenize' is not built yet"); });
}

}  // namespace magix::cli
