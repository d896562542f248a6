#include "commands.hpp"
#include "magix/error.hpp"

namespace magix::cli {

void add_score_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "(not built yet)");
  cmd->callback([] { MAGIX_FAIL("'score' is not built yet"); });
}

}  // namespace magix::cli
