#!/usr/bin/env bash
# --bf16 (bf16 mixed precision) from the command line: every compute command takes the flag;
# magix score --bf16 stays within 1e-2 of transformers' fp32 NLL on the llama_gqa fixture;
# generate --bf16 answers every prompt; train-lora --bf16 trains (the loss falls) and records
# the flag; a run resumed without --bf16 is allowed (precision is not part of the data order).
# Usage: bash bf16_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
MODEL="$FIXTURES/models/llama_gqa"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for cmd in train train-lora score generate demo; do
  "$MAGIX" $cmd --help | grep -q -- "--bf16 " || fail "magix $cmd --help lacks --bf16"
done

# score: per example within 1e-2 relative of transformers' fp32 numbers, and not the fp32 bits.
"$MAGIX" score --model_name_or_path "$MODEL" --input "$MODEL/score_input.jsonl" \
  --output_file "$WORK/scores.jsonl" --bf16 > /dev/null || fail "score --bf16"
"$MAGIX" score --model_name_or_path "$MODEL" --input "$MODEL/score_input.jsonl" \
  --output_file "$WORK/scores32.jsonl" > /dev/null || fail "score"
python3 - "$WORK/scores.jsonl" "$WORK/scores32.jsonl" "$MODEL/score_expected.jsonl" <<'PY' || fail "score --bf16 numbers"
import json, math, sys
got, f32, want = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
assert len(got) == len(want) > 0
for g, w in zip(got, want):
    assert g["tokens"] == w["tokens"], (g, w)
    assert math.isclose(g["nll"], w["nll"], rel_tol=1e-2), (g, w)
assert [g["nll"] for g in got] != [f["nll"] for f in f32], "--bf16 scored in fp32"
PY

# generate: one line per prompt (a random model of the tiny training config).
printf 'Hello world\nThe quick brown fox\nfoo\n' > "$WORK/prompts.txt"
"$MAGIX" init --config "$FIXTURES/train/tiny_config.json" --output_dir "$WORK/model" --seed 3 \
  > /dev/null || fail "init"
"$MAGIX" generate --model_name_or_path "$WORK/model" --tokenizer_name_or_path \
  "$FIXTURES/tokenizers/trained_bytelevel" --prompts "$WORK/prompts.txt" --max_new_tokens 6 \
  --output_file "$WORK/gen.jsonl" --bf16 > /dev/null 2> "$WORK/err" || fail "generate --bf16: $(cat "$WORK/err")"
[ "$(wc -l < "$WORK/gen.jsonl")" -eq 3 ] || fail "generate --bf16 wrote $(wc -l < "$WORK/gen.jsonl") lines"

# train-lora --bf16: the loss falls, the flag is recorded in the trainer state, and the run
# resumes without it.
LORA=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
      --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --batch_size 8
      --learning_rate 3e-2 --save_steps 6 --checkpoint_dir "$WORK/lora" --progress none)
"$MAGIX" train-lora "${LORA[@]}" --max_steps 6 --bf16 --metrics_file "$WORK/lora.jsonl" \
  > "$WORK/out" 2> "$WORK/err" || fail "train-lora --bf16: $(cat "$WORK/err")"
grep -q '"bf16": *true' "$WORK/lora/000006/trainer_state.json" || fail "trainer state lacks bf16"
first=$(sed -n 's/^first loss: //p' "$WORK/out"); last=$(sed -n 's/^last loss: //p' "$WORK/out")
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "train-lora --bf16 loss did not fall: $first -> $last"
"$MAGIX" train-lora "${LORA[@]}" --max_steps 9 --metrics_file "$WORK/lora.jsonl" \
  > "$WORK/out" 2> "$WORK/err" || fail "resume without --bf16: $(cat "$WORK/err")"
grep -q "resuming from $WORK/lora/000006" "$WORK/err" || fail "did not resume: $(cat "$WORK/err")"
[ "$(wc -l < "$WORK/lora.jsonl")" -eq 9 ] || fail "metrics lines after resume: $(wc -l < "$WORK/lora.jsonl")"
echo "bf16_cli: ok"
