#!/usr/bin/env bash
# README.md's tour, run as written: every ```sh block preceded by a `<!-- tour -->` line is run
# in order with bash -euo pipefail, in a scratch folder that holds a (shorter) demo in
# magix_demo/ and the repository's examples/, with `build/bin/magix` standing for the binary
# under test. Then what the tour says it produces is checked.
# Usage: bash readme_tour.sh <magix binary> <fixtures dir>
set -u
MAGIX="$(realpath "$1")"
ROOT="$(cd "$2/../.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export OMP_NUM_THREADS=1

mkdir -p "$WORK/build/bin"
ln -s "$MAGIX" "$WORK/build/bin/magix"
ln -s "$ROOT/examples" "$WORK/examples"
cd "$WORK"
"$MAGIX" demo --work_dir magix_demo --train_examples 3000 --test_examples 50 --steps 300 \
  --batch_size 32 --learning_rate 3e-3 --warmup_steps 30 --quiet > demo.txt 2>&1 \
  || fail "the demo failed: $(cat demo.txt)"

# The tour blocks, in order.
awk '/^<!-- tour -->$/ {armed = 1; next}
     armed && /^```sh$/ {inside = 1; next}
     inside && /^```$/ {inside = 0; armed = 0; print "# ---- end of block"; next}
     inside {print}' "$ROOT/README.md" > tour.sh
blocks=$(grep -c '^# ---- end of block' tour.sh)
[ "$blocks" -ge 7 ] || fail "expected at least 7 tour blocks in README.md, found $blocks"
bash -euo pipefail tour.sh > tour.txt 2>&1 || fail "the tour failed: $(tail -20 tour.txt)"

for f in tour/full/000030/index.json tour/full/000060/index.json tour/full_metrics.jsonl \
         tour/bf16/000030/index.json \
         tour/hf_model/config.json tour/hf_model/model.safetensors tour/hf_model/tokenizer.json \
         tour/generated.jsonl tour/sampled.jsonl tour/scores.jsonl tour/lora/000020/index.json \
         tour/generated_lora.jsonl tour/peft_adapter/adapter_config.json \
         tour/peft_adapter/adapter_model.safetensors tour/mesh/000020/index.json \
         tour/generated_mesh.jsonl tour/tiny/config.json tour/tiny_scores.jsonl \
         tour/ids_of_prompts.jsonl tour/rendered.jsonl; do
  [ -s "$f" ] || fail "the tour did not write $f"
done
for f in generated sampled generated_lora generated_mesh; do
  [ "$(wc -l < "tour/$f.jsonl")" -eq 50 ] || fail "tour/$f.jsonl should hold one line per prompt"
done
[ "$(wc -l < tour/full_metrics.jsonl)" -eq 60 ] || fail "60 steps should give 60 metrics lines"
# A checkpoint step and its HF export generate the same greedy answers.
"$MAGIX" generate --model_name_or_path tour/hf_model --prompts magix_demo/data/test.jsonl \
  --use_chat_template --max_new_tokens 4 --output_file from_export.jsonl > /dev/null 2>&1 \
  || fail "generate from the export"
cmp -s from_export.jsonl tour/generated.jsonl || fail "export and checkpoint generate differently"
echo "readme tour: $blocks blocks ran"
