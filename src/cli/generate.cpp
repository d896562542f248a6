// magix generate: batched generation from a prompts file (REFERENCE.md `generate`; the work is
// run_generation in src/generate/).
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

#include "cli_util.hpp"
#include "commands.hpp"
#include "magix/distributed.hpp"
#include "magix/generate.hpp"
#include "magix/host_checks.hpp"

namespace magix::cli {

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "generate", "Generate continuations of prompts (greedy or sampled) with a KV cache");
  auto a = std::make_shared<GenerateArgs>();
  GenerateOptions& g = a->generation;
  SamplingOptions& s = g.sampling;
  cmd->add_option(flag("prompts"), a->prompts,
                  "prompts: .txt (one per line), or the --data_field of each record of a .jsonl, "
                  ".json, .parquet or .arrow file (optionally .gz for text), a folder, a glob or "
                  "a hub dataset ORG/NAME in the local HF cache (docs/data.md)")
      ->required();
  cmd->add_option(flag("hf_data_config"), a->hf_data_config,
                  "dataset config: the subfolder of a hub dataset holding its splits");
  cmd->add_option(flag("hf_data_split"), a->hf_data_split,
                  "dataset split: a DatasetDict's split folder or a hub dataset's "
                  "<split>-*.parquet files (a source without splits ignores it)")
      ->capture_default_str();
  cmd->add_option(flag("data_field"), a->data_field, "field holding the prompt in .jsonl/.json")
      ->capture_default_str();
  cmd->add_flag(flag("skip_bad_records"), a->skip_bad_records,
                "skip unreadable prompt records (reported on stderr) instead of failing");
  cmd->add_flag(flag("use_chat_template"), a->use_chat_template,
                "wrap each prompt as a user turn of the tokenizer's chat template with the "
                "generation prompt (an error when it has none: see --chat_template_name)");
  cmd->add_option(flag("chat_template_name"), a->chat_template_name,
                  "a named template of the tokenizer, or builtin: the reference scripts' "
                  "built-in <|user|> format");
  cmd->add_option(flag("output_file"), a->output_file,
                  "JSONL output, one {\"prompt\", \"generated\"} per prompt in input order "
                  "(written to OUTPUT.partial as batches finish, renamed at the end)")
      ->capture_default_str();
  cmd->add_option(flag("batch_size"), a->batch_size, "prompts per batch on each data rank")
      ->capture_default_str();
  cmd->add_option(flag("pad_to_multiple_of"), a->pad_to_multiple_of,
                  "round each batch's padded prompt length up to a multiple of this")
      ->capture_default_str();
  cmd->add_flag(flag("sample"), s.sample, "sample (default: greedy)");
  cmd->add_option("--temperature,--tempearature", s.temperature,
                  "sampling temperature (the reference's misspelling is accepted too)")
      ->capture_default_str();
  cmd->add_option(flag("top_k"), s.top_k, "sample among the k most likely tokens (0 = off)")
      ->capture_default_str();
  cmd->add_option(flag("top_p"), s.top_p, "nucleus sampling: smallest set of mass >= top_p")
      ->capture_default_str();
  cmd->add_option(flag("repetition_penalty"), s.repetition_penalty,
                  "HF repetition penalty on prompt and generated tokens (1 = off)")
      ->capture_default_str();
  cmd->add_option(flag("seed"), s.seed,
                  "sampling seed; a prompt's draws depend on (seed, its index, token index) only")
      ->capture_default_str();
  cmd->add_option(flag("max_length"), g.max_length,
                  "most tokens per sequence, prompt included (padding not counted)")
      ->capture_default_str();
  cmd->add_option(flag("max_new_tokens"), g.max_new_tokens,
                  "most generated tokens per prompt (0 = only --max_length limits)")
      ->capture_default_str();
  cmd->add_option(flag("stop"), g.stop,
                  "stop strings: a sequence ends once its text contains one (cut before it)");
  cmd->add_option(flag("model_type"), a->model_type,
                  "llama, mistral, gemma, qwen2, qwen3, gemma2, gemma3_text or phi3: checked "
                  "against the config");
  cmd->add_option(flag("model_name_or_path"), a->model_name_or_path,
                  "HF folder, hub name in the local cache, or a magix checkpoint step directory")
      ->required();
  cmd->add_option(flag("model_config_name"), a->model_config_name,
                  "folder or hub name whose config.json must describe the same model");
  cmd->add_option(flag("tokenizer_name_or_path"), a->tokenizer_name_or_path,
                  "tokenizer folder or hub name (default: --model_name_or_path)");
  cmd->add_option(flag("mesh_shape"), a->mesh_shape,
                  "data and model axis sizes, one may be -1 (run under mpirun for more than one)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option(flag("lora"), a->lora,
                  "LoRA adapters to merge before generating: a train-lora checkpoint step (or "
                  "checkpoint dir) or a PEFT adapter folder");
  cmd->add_option(flag("lora_alpha"), a->lora_alpha,
                  "overrides the alpha saved with the adapters (scale = alpha / rank; default: "
                  "the saved alpha)");
  cmd->add_flag(flag("bf16"), a->bf16,
                "bf16 mixed precision: weights kept and streamed in bf16, prefill products in "
                "bf16 with fp32 accumulation (docs/generation.md)");
  add_device_option(*cmd, a->device);
  cmd->callback([a, cmd] {
    a->progress = isatty(fileno(stderr)) != 0;
    // The flags generation_config.json gives defaults for: given on the command line, they win.
    for (const char* name : {"sample", "temperature", "top_k", "top_p", "repetition_penalty",
                             "max_length", "max_new_tokens"}) {
      if (cmd->get_option(std::string("--") + name)->count() > 0) a->given.push_back(name);
    }
    const std::string& out = a->output_file;
    check_outputs_spare_inputs(
        {{"--prompts", a->prompts},
         {"--model_name_or_path", a->model_name_or_path},
         {"--tokenizer_name_or_path", a->tokenizer_name_or_path},
         {"--model_config_name", a->model_config_name},
         {"--lora", a->lora}},
        {{"--output_file", out},
         {"--output_file (its temporary)", out.empty() ? out : out + ".partial"}});
    Mesh mesh = create_device_mesh(a->mesh_shape);
    // Every rank reads the prompts: over several hosts they must be the same file.
    if (!a->prompts.empty()) check_same_file(mesh, a->prompts, "--prompts");
    const GenerationSummary sum = run_generation(*a, mesh);
    if (mesh.world_rank() != 0) return;
    fmt::print("prompts: {}\ngenerated tokens: {}\nseconds: {:.2f}\ntokens/s: {:.1f}\noutput: {}\n",
               sum.prompts, sum.generated_tokens, sum.seconds,
               sum.seconds > 0 ? static_cast<double>(sum.generated_tokens) / sum.seconds : 0.0,
               a->output_file);
  });
}

}  // namespace magix::cli
