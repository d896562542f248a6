#!/usr/bin/env bash
# Quick start on a fresh Debian machine (as root): installs what the build needs, builds magix,
# and runs the smallest end-to-end example: a random Llama written in HF format by `magix init`,
# then scored by `magix score` on token ids.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
work=${MAGIX_WORK_DIR:-$(mktemp -d /tmp/magix-quickstart.XXXXXX)}
mkdir -p "$work"
magix=build/bin/magix
"$magix" init --config examples/configs/tiny_llama.json --output_dir "$work/model" --seed 0
printf '%s\n' '{"input_ids": [1, 17, 99, 3, 250, 42, 7]}' '{"input_ids": [1, 5, 6, 7, 8]}' \
  > "$work/ids.jsonl"
"$magix" score --model_name_or_path "$work/model" --input "$work/ids.jsonl" \
  --output_file "$work/scores.jsonl"
echo "scores written to $work/scores.jsonl:"
cat "$work/scores.jsonl"
