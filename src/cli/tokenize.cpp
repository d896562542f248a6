// magix tokenize: text (a JSONL field) -> {"ids": [...]}, or with --decode {"ids"} -> {"text"}.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/tokenizer.hpp"

namespace magix::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string input;
  std::string output;
  std::string data_field = "text";
  bool add_special_tokens = true;
  bool decode = false;
  bool skip_special_tokens = false;
};

// One output line for one input line (blank lines are skipped).
std::string process_line(const Tokenizer& tok, const TokenizeArgs& a, const std::string& line,
                         size_t lineno) {
  const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  MAGIX_CHECK(!j.is_discarded(), "{}:{}: invalid JSON (or invalid UTF-8)", a.input, lineno);
  MAGIX_CHECK(j.is_object(), "{}:{}: expected a JSON object", a.input, lineno);
  nlohmann::json out = nlohmann::json::object();
  if (a.decode) {
    MAGIX_CHECK(j.contains("ids") && j.at("ids").is_array(), "{}:{}: expected an 'ids' array",
                a.input, lineno);
    std::vector<int32_t> ids;
    for (const auto& v : j.at("ids")) {
      MAGIX_CHECK(
          v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < tok.vocab_size(),
          "{}:{}: 'ids' must hold integers in [0, {}), got {}", a.input, lineno, tok.vocab_size(),
          v.dump());
      ids.push_back(v.get<int32_t>());
    }
    out["text"] = tok.decode(ids, a.skip_special_tokens);
  } else {
    MAGIX_CHECK(j.contains(a.data_field) && j.at(a.data_field).is_string(),
                "{}:{}: expected a string field '{}'", a.input, lineno, a.data_field);
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(j.at(a.data_field).get_ref<const std::string&>(), a.add_special_tokens);
    } catch (const Error& e) {
      MAGIX_FAIL("{}:{}: {}", a.input, lineno, e.what());
    }
    // Written directly, as out.dump() would: a JSON array of ids takes 16 bytes per id.
    return fmt::format("{{\"ids\":[{}]}}", fmt::join(ids, ","));
  }
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void run_tokenize(const TokenizeArgs& a) {
  check_outputs_spare_inputs({{"--input", a.input}, {"--tokenizer_name_or_path", a.tokenizer}},
                             {{"--output_file", a.output}});
  verify_if_checkpoint_step(a.tokenizer);  // a step's tokenizer files match its index
  const Tokenizer tok = Tokenizer::load(a.tokenizer);
  std::ifstream in(a.input, std::ios::binary);
  MAGIX_CHECK(in, "cannot open {}", a.input);
  std::string text, line;
  size_t lineno = 0, written = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    text += process_line(tok, a, line, lineno);
    text += '\n';
    ++written;
  }
  MAGIX_CHECK(!in.bad(), "error reading {}", a.input);
  write_output_file(a.output, text);
  std::fprintf(stderr, "tokenize: %zu lines -> %s\n", written, a.output.c_str());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand(
      "tokenize", "Text (JSONL) to token ids with a tokenizer.json, or ids back to text");
  cmd->add_option(flag("tokenizer_name_or_path"), args->tokenizer,
                  "Folder with tokenizer.json (and tokenizer_config.json), a tokenizer.json file, "
                  "or a hub name "
                  "in the local HF cache")
      ->required();
  cmd->add_option(flag("input"), args->input, "JSONL input: one object per line")->required();
  cmd->add_option(
         flag("output_file"), args->output,
         "JSONL written atomically: {\"ids\": [...]} per line ({\"text\": ...} with --decode)")
      ->required();
  cmd->add_option(flag("data_field"), args->data_field, "Field holding the text to encode")
      ->capture_default_str();
  cmd->add_option(flag("add_special_tokens"), args->add_special_tokens,
                  "Add the post-processor's special tokens (e.g. BOS): true|false")
      ->capture_default_str();
  cmd->add_flag(flag("decode"), args->decode, "Decode: read \"ids\" and write {\"text\": ...}");
  cmd->add_option(flag("skip_special_tokens"), args->skip_special_tokens,
                  "With --decode: leave special tokens out of the text: true|false")
      ->capture_default_str();
  cmd->callback([args] { run_tokenize(*args); });
}

}  // namespace magix::cli
