#include "commands.hpp"
#include "magix/error.hpp"

namespace magix::cli {

void add_init_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("init", "(not built yet)");
  cmd->callback([] { MAGIX_FAIL("'init' is not built yet"); });
}

}  // namespace magix::cli
