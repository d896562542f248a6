#!/usr/bin/env bash
# Every file a command reads from a checkpoint step is checked against the step's index: a
# step whose tokenizer.json (or config.json) was edited is refused by generate, score, tokenize,
# export and a resuming train, with an error naming the file; nothing is written.
# Usage: bash checkpoint_verify_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TINY=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
      --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --learning_rate 1e-2
      --batch_size 8 --max_steps 2)
# expect_error <substring> <args...>: magix must exit non-zero and say <substring>.
expect_error() {
  local want="$1"; shift
  if "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
}

"$MAGIX" train "${TINY[@]}" --checkpoint_dir "$WORK/ckpt" > /dev/null 2> "$WORK/stderr" \
  || fail "train: $(cat "$WORK/stderr")"
STEP="$WORK/ckpt/000002"
[ -f "$STEP/tokenizer.json" ] || fail "the step has no tokenizer.json"
printf 'Hello world\nThe cat\n' > "$WORK/prompts.txt"
echo '{"text": "The cat sees a red ball."}' > "$WORK/texts.jsonl"
"$MAGIX" generate --model_name_or_path "$STEP" --prompts "$WORK/prompts.txt" \
  --max_new_tokens 4 --output_file "$WORK/ok.jsonl" > /dev/null 2> "$WORK/stderr" \
  || fail "generate on the intact step: $(cat "$WORK/stderr")"

# Swap two vocabulary entries of the step's tokenizer.json (same size, same JSON shape).
python3 - "$STEP/tokenizer.json" <<'PY' || fail "edit tokenizer.json"
import json, sys
p = sys.argv[1]
j = json.load(open(p, encoding="utf-8"))
v = j["model"]["vocab"]
a, b = sorted(v, key=v.get)[300:302]
v[a], v[b] = v[b], v[a]
json.dump(j, open(p, "w", encoding="utf-8"), ensure_ascii=False)
PY
WANT="tokenizer.json does not match the step's index"
expect_error "$WANT" generate --model_name_or_path "$STEP" --prompts "$WORK/prompts.txt" \
  --max_new_tokens 4 --output_file "$WORK/gen.jsonl"
[ ! -e "$WORK/gen.jsonl" ] && [ ! -e "$WORK/gen.jsonl.partial" ] || fail "generate wrote output"
expect_error "$WANT" score --model_name_or_path "$STEP" --input "$WORK/texts.jsonl" \
  --data_field text --output_file "$WORK/score.jsonl"
expect_error "$WANT" score --model_name_or_path "$STEP" --input "$WORK/texts.jsonl" \
  --data_field text --tokenizer_name_or_path "$STEP" --output_file "$WORK/score.jsonl"
[ ! -e "$WORK/score.jsonl" ] || fail "score wrote output"
expect_error "$WANT" tokenize --tokenizer_name_or_path "$STEP" --input "$WORK/texts.jsonl" \
  --output_file "$WORK/tok.jsonl"
expect_error "$WANT" export --checkpoint "$STEP" --output_dir "$WORK/hf"
# A resuming train reads the step's trainer state and shards: the edited step is refused too.
expect_error "$WANT" train "${TINY[@]}" --max_steps 3 --checkpoint_dir "$WORK/ckpt"
# Scoring ids reads no tokenizer, but the step as a whole is still checked.
echo '{"input_ids": [1, 2, 3]}' > "$WORK/ids.jsonl"
expect_error "$WANT" score --model_name_or_path "$STEP" --input "$WORK/ids.jsonl" \
  --output_file "$WORK/score.jsonl"

# config.json edited (a byte changed, same size).
"$MAGIX" train "${TINY[@]}" --checkpoint_dir "$WORK/ckpt2" > /dev/null 2>&1 || fail "train 2"
sed -i 's/"rms_norm_eps": 1e-05/"rms_norm_eps": 2e-05/' "$WORK/ckpt2/000002/config.json"
expect_error "config.json does not match the step's index" generate \
  --model_name_or_path "$WORK/ckpt2/000002" --prompts "$WORK/prompts.txt" --max_new_tokens 4 \
  --output_file "$WORK/gen.jsonl"
# An adapter step: generate --lora and export of a train-lora step check it too.
"$MAGIX" init --config "$FIXTURES/train/tiny_config.json" --output_dir "$WORK/base" --seed 3 \
  > /dev/null || fail "init"
cp "$FIXTURES/tokenizers/trained_bytelevel/"tokenizer*.json "$WORK/base/"
"$MAGIX" train-lora --model_name "$WORK/base" --train_file "$FIXTURES/train/corpus.jsonl" \
  --max_length 24 --batch_size 8 --max_steps 2 --checkpoint_dir "$WORK/lora" > /dev/null 2>&1 \
  || fail "train-lora"
LSTEP="$WORK/lora/000002"
"$MAGIX" generate --model_name_or_path "$WORK/base" --lora "$LSTEP" --prompts "$WORK/prompts.txt" \
  --max_new_tokens 4 --output_file "$WORK/lora_ok.jsonl" > /dev/null 2> "$WORK/stderr" \
  || fail "generate --lora on the intact step: $(cat "$WORK/stderr")"
printf ' ' >> "$LSTEP/tokenizer_config.json"
WANT="tokenizer_config.json does not match the step's index"
expect_error "$WANT" generate --model_name_or_path "$WORK/base" --lora "$LSTEP" \
  --prompts "$WORK/prompts.txt" --max_new_tokens 4 --output_file "$WORK/lora.jsonl"
expect_error "$WANT" export --checkpoint "$LSTEP" --output_dir "$WORK/lora_hf"
expect_error "$WANT" export --checkpoint "$LSTEP" --output_dir "$WORK/lora_peft" --lora_format peft
expect_error "$WANT" train-lora --model_name "$WORK/base" --train_file "$FIXTURES/train/corpus.jsonl" \
  --max_length 24 --batch_size 8 --max_steps 3 --checkpoint_dir "$WORK/lora"
echo "checkpoint_verify_cli: OK"
