// The magix command: wires the subcommands together and turns errors into an exit status.
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <memory>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"

int main(int argc, char** argv) {
  // Joins the MPI world when started by mpirun/srun; a lone process needs no launcher.
  std::unique_ptr<magix::Runtime> runtime;
  try {
    runtime = std::make_unique<magix::Runtime>(&argc, &argv);
  } catch (const magix::Error& e) {
    fmt::print(stderr, "magix: error: {}\n", e.what());
    return 1;
  }
  CLI::App app{"magix: train and run Hugging Face decoder LLMs with data and model parallelism"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "magix 0.1.0");
  magix::cli::add_init_command(app);
  magix::cli::add_score_command(app);
  magix::cli::add_tokenize_command(app);
  magix::cli::add_chat_template_command(app);
  magix::cli::add_generate_command(app);
  magix::cli::add_export_command(app);
  magix::cli::add_train_command(app);
  magix::cli::add_train_lora_command(app);
  magix::cli::add_demo_command(app);
  magix::cli::add_plot_command(app);
  // Every command that reads models or tokenizers by hub name picks the cached revision.
  for (CLI::App* sub : app.get_subcommands([](CLI::App* c) {
         return c->get_name() != "init" && c->get_name() != "demo" && c->get_name() != "plot";
       })) {
    sub->add_option_function<std::string>(
        magix::cli::flag("revision"),
        [](const std::string& revision) { magix::set_hub_revision(revision); },
        "revision of hub names in the local HF cache: a branch or tag (refs/<name>) or a commit "
        "hash (default: refs/main)");
    if (sub->get_name() == "export") continue;  // reads no data
    sub->add_option_function<std::string>(
        magix::cli::flag("dataset_revision"),
        [](const std::string& revision) { magix::set_dataset_revision(revision); },
        "revision of dataset hub names in the local HF cache (datasets--ORG--NAME): a branch, "
        "tag or commit hash (default: refs/main)");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // On several ranks this stops them all, so that none waits forever in a collective.
    runtime->abort(e.what());
  }
  return 0;
}
