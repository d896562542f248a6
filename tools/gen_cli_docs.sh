#!/usr/bin/env bash
# Writes docs/cli.md, the command-line reference, from `magix --help` and `magix <cmd> --help`:
# every flag of every subcommand, as the binary declares it (tests/scripts/cli_docs.sh fails
# when the committed file differs from what this prints).
# Usage: tools/gen_cli_docs.sh MAGIX_BINARY [OUTPUT]   (OUTPUT: a file, or - for stdout;
#        default: docs/cli.md beside this script's repository)
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 MAGIX_BINARY [OUTPUT]" >&2
  exit 2
fi
MAGIX="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTPUT="${2:-$ROOT/docs/cli.md}"

# The usage line names the binary by its path: print it as `magix`.
# Trailing blank lines are dropped.
help_of() {
  "$MAGIX" "$@" --help | sed -E 's#^Usage: [^ ]*magix#Usage: magix#' |
    awk '{lines[NR] = $0} END {n = NR; while (n > 0 && lines[n] == "") n--; for (i = 1; i <= n; i++) print lines[i]}'
}

# Subcommands in reading order: the workflow's order for those known here, then any others
# alphabetically (independent of the order main.cpp registers them in).
subcommands() {
  local all known="init tokenize chat-template score train train-lora generate export demo" c
  all="$("$MAGIX" --help | awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1}')"
  for c in $known; do
    if grep -qx -- "$c" <<< "$all"; then echo "$c"; fi
  done
  for c in $(sort <<< "$all"); do
    if ! grep -qw -- "$c" <<< "${known// /$'\n'}"; then echo "$c"; fi
  done
}

# `magix --help` without its list of subcommands (whose order is the registration order); the
# list follows as a table in reading order.
top_help() {
  help_of | awk '/^Subcommands:/ {exit} {print}' |
    awk '{lines[NR] = $0} END {n = NR; while (n > 0 && lines[n] == "") n--; for (i = 1; i <= n; i++) print lines[i]}'
}

# One subcommand's description, as `magix --help` lists it.
description() {
  "$MAGIX" --help | awk -v c="$1" '/^Subcommands:/ {on = 1; next} on && $1 == c {sub(/^  [^ ]+ +/, ""); print; exit}'
}

# Where each subcommand is explained at length.
see_also() {
  case "$1" in
    init) echo "docs/model.md" ;;
    score) echo "docs/mesh.md" ;;
    tokenize) echo "docs/tokenizer.md" ;;
    chat-template) echo "docs/chat_templates.md" ;;
    train) echo "docs/training.md, docs/data.md" ;;
    train-lora) echo "docs/lora.md, docs/training.md" ;;
    generate) echo "docs/generation.md" ;;
    export) echo "docs/checkpoints.md" ;;
    *) echo "" ;;
  esac
}

# Longer notes for commands whose explanation lives here rather than in a docs/ page of its own.
notes() {
  case "$1" in
    demo)
      cat <<'MD'
`magix demo` runs the whole workflow offline, with nothing but the binary:

1. **Tokenizer**: a character-level `tokenizer.json` (BPE without merges; `<pad>`, `</s>`, `<unk>`,
   `<|user|>`, `<|assistant|>`, newline and printable ASCII) and a `tokenizer_config.json` whose
   Jinja chat template writes `<|user|>\n{content}</s>` and `<|assistant|>\n{content}</s>`.
   HF `tokenizers` / `AutoTokenizer` load the folder with the same ids.
2. **Data**: distinct problems `a+b` with zero-padded operands; the assistant answers with the
   sum's `digits + 1` digits **least significant first**: `25+07` → `230` (32 = 032, backwards).
   Writing the sum backwards lets a causal model emit each digit right after the carry it needs.
   The held-out test prompts are drawn first and never appear in the training set.
3. **Model**: a small Llama from `examples/configs/demo_llama.json` (or `--model_config`),
   trained from random weights by the library entry point of `magix train` (`run_training`):
   chat template, `--train_on assistant` (only the answer and its `</s>` count), AdamW with
   warmup + cosine decay, a checkpoint at the last step.
4. **Answers**: the library entry point of `magix generate` (`run_generation`) answers the
   held-out prompts greedily from that checkpoint; the demo prints the exact-match accuracy, the
   loss (first step → mean of the last 50) and tokens/s, and names the work directory and the
   commands to continue: `magix generate` (the same answers again), `magix export` (an HF folder)
   and `magix train` with every setting of the run (it reproduces the demo's losses bit for bit;
   tests/scripts/demo_quick.sh runs all three).

The work directory holds `model/` (config + tokenizer), `data/train.jsonl` (conversations),
`data/test.jsonl` (`{"prompt", "answer"}`), `checkpoints/NNNNNN/`, `metrics.jsonl` (one line per
step), `generated.jsonl` (what `magix generate` wrote), `exact_match.jsonl` and
`demo_report.json`. A second run into the same folder is refused unless `--overwrite`, which
removes only those entries. Under `mpirun -np 2 magix demo --mesh_shape 2 1` (or `1 2`) the run
follows the single-process one step by step (tests/scripts/demo_mesh.sh).

Measured with the defaults (a 328k-parameter Llama, 1,200 steps of 64 conversations, one thread
per process) on this project's 2-core machine: 200/200 held-out prompts exact, loss 4.96 → 0.003;
idle machine: 38 s for the whole demo, training 37 s (26,800 tokens/s over whole rows, 8,250
assistant tokens/s; `--threads 2`: 28 s); shared with other jobs (load ≈ 3): 92 s, training 89 s
wall / 46 s CPU. The same 200/200 and the same answers
on `--mesh_shape 2 1` and `1 2`; seeds 7, 123, 1, 2024 gave 200, 198, 200, 200 of 200.
transformers loads the `magix export` of the checkpoint and greedily gives the same 200 answers.
`--digits 3` is harder: with 20,000 problems this model was still at loss ≈ 0.9 after 2,500 of
4,000 steps (not tuned further).
MD
      echo
      ;;
  esac
}

generate() {
  cat <<'MD'
# Command-line reference

<!-- Generated by tools/gen_cli_docs.sh from `magix <command> --help`; do not edit by hand.
     After changing a flag: tools/gen_cli_docs.sh build/bin/magix   (the ctest `cli_cli_docs`
     fails while this file differs from the binary's --help). -->

`magix <command> [flags]`. Conventions shared by every command:

- Flag names follow the reference scripts (underscores); the dashed spelling is accepted too
  (`--mesh_shape` = `--mesh-shape`). `--help` on any command prints its flags and defaults.
- `--mesh_shape D M` sizes the data and model axes of the device mesh (one may be `-1`); more
  than one process runs under `mpirun -np N` (or `srun`), `N = D × M` (docs/mesh.md).
- Result files (`--output_file`) are JSONL, written under a temporary name and renamed when
  complete, so a failed run leaves none that looks complete. Errors print one line naming the
  file/tensor/line and exit non-zero; under `mpirun` every rank stops.
- Outputs never overwrite inputs: before any work, an output (`--output_file` and generate's
  `OUTPUT.partial`, `--metrics_file`, `--checkpoint_dir`, `--output_dir`) that is the same file
  as an input (same device and inode, else the same canonical parent + name: symlinks, hard
  links and `./x` are caught), lies inside an input folder (model, tokenizer, checkpoint step or
  dir), or lies in a checkpoint step is refused, naming both flags (`src/cli/cli_util.cpp`).
- Values are checked up front: config keys when parsed (positive sizes, heads dividing,
  `rms_norm_eps` and `rope_theta` positive and finite, `max_position_embeddings` > 0, bos / eos /
  pad ids inside the vocabulary), flags when given (finite, in range), and sizes against this
  machine's physical memory before anything is allocated: weights (plus gradients and AdamW
  moments when training), training activations at `--batch_size` x `--max_length`, generate's KV
  cache. A size that cannot fit is refused naming the value and what it would need (e.g.
  `hidden_size 1000000000 ... for the weights would need 7.7 TiB; this machine has 23.5 GiB`);
  the estimates are lower bounds, so a run that fits is never refused.
- Non-finite values are errors: a NaN or infinity in a weight file or checkpoint shard is refused
  at load naming the tensor, the file and the element; `score` and `generate` fail on a
  non-finite NLL or logit instead of writing `null` or empty text; `train` stops, naming the
  step, rather than save a checkpoint of non-finite weights (docs/training.md).
- A checkpoint step's files are checked against its `index.json` before any command reads them,
  and `train` / `train-lora` lock their `--checkpoint_dir` for the run (docs/checkpoints.md).

Commands:
MD
  local cmd
  echo
  echo '| command | what it does |'
  echo '|---|---|'
  for cmd in $(subcommands); do
    printf '| [`magix %s`](#magix-%s) | %s |\n' "$cmd" "$cmd" "$(description "$cmd")"
  done
  echo
  echo '## magix'
  echo
  echo '```text'
  top_help
  echo '```'
  for cmd in $(subcommands); do
    echo
    echo "## magix $cmd"
    echo
    local more
    more="$(see_also "$cmd")"
    if [ -n "$more" ]; then
      echo "More: $more."
      echo
    fi
    notes "$cmd"
    echo '```text'
    help_of "$cmd"
    echo '```'
  done
}

if [ "$OUTPUT" = "-" ]; then
  generate
else
  tmp="$(mktemp "${OUTPUT}.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  generate > "$tmp"
  mv "$tmp" "$OUTPUT"
  trap - EXIT
  echo "wrote $OUTPUT"
fi
