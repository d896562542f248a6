#!/usr/bin/env bash
# magix train from the command line: a short run from --model_config writes metrics, checkpoints
# (model, optimizer, trainer state, config and tokenizer files) and its summary; a run killed
# with SIGKILL resumes from its last checkpoint and ends with the same losses as a straight run
# (bit for bit: the metrics lines are equal); bad flags and inputs are clear errors.
# Usage: bash train_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TINY=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
      --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --learning_rate 1e-2)

# expect_error <substring> <args...>: magix train must exit non-zero and say <substring>.
expect_error() {
  local want="$1"; shift
  if "$MAGIX" train "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of 'train $*' lacks '$want': $(cat "$WORK/stderr")"
}

# --- every flag of the reference script is there -------------------------------------------
"$MAGIX" train --help > "$WORK/help" || fail "train --help"
for f in model_type model_name tokenizer_name train_file train_data_config train_data_field split \
         use_chat_template checkpoint_dir max_length num_epochs batch_size learning_rate \
         weight_decay adam_beta1 adam_beta2 max_grad_norm save_steps seed mesh_shape \
         bf16_model_weights max_steps gradient_accumulation_steps lr_schedule warmup_ratio \
         max_to_keep log_steps metrics_file model_config train_on pack partition_rules; do
  grep -q -- "--$f" "$WORK/help" || fail "train --help lacks --$f"
done

# --- a short run --------------------------------------------------------------------------
"$MAGIX" train "${TINY[@]}" --batch_size 8 --num_epochs 2 --save_steps 5 \
  --checkpoint_dir "$WORK/ckpt" --metrics_file "$WORK/metrics.jsonl" --log_steps 4 \
  > "$WORK/stdout" 2> "$WORK/stderr" || fail "short run: $(cat "$WORK/stderr")"
grep -q "^steps: 0..12 of 12$" "$WORK/stdout" || fail "summary: $(cat "$WORK/stdout")"
grep -q "^checkpoint: $WORK/ckpt/000012$" "$WORK/stdout" || fail "summary: $(cat "$WORK/stdout")"
grep -q "^step 4/12 | epoch 0 | loss " "$WORK/stderr" || fail "log lines: $(cat "$WORK/stderr")"
[ "$(wc -l < "$WORK/metrics.jsonl")" -eq 12 ] || fail "metrics lines: $(wc -l < "$WORK/metrics.jsonl")"
for key in step loss lr grad_norm tokens_per_s skipped; do
  grep -q "\"$key\":" "$WORK/metrics.jsonl" || fail "metrics lack $key"
done
[ "$(ls "$WORK/ckpt" | tr '\n' ' ')" = "000005 000010 000012 " ] || fail "checkpoints: $(ls "$WORK/ckpt")"
for f in index.json trainer_state.json config.json tokenizer.json tokenizer_config.json \
         model/rank-00000.bin optimizer/rank-00000.bin; do
  [ -f "$WORK/ckpt/000012/$f" ] || fail "checkpoint lacks $f"
done
grep -q '"step": *12' "$WORK/ckpt/000012/trainer_state.json" || fail "trainer state step"
first=$(sed -n 's/^first loss: //p' "$WORK/stdout"); last=$(sed -n 's/^last loss: //p' "$WORK/stdout")
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "loss did not fall: $first -> $last"

# The same folder again: nothing left to do.
"$MAGIX" train "${TINY[@]}" --batch_size 8 --num_epochs 2 --save_steps 5 \
  --checkpoint_dir "$WORK/ckpt" > "$WORK/stdout" 2> "$WORK/stderr" || fail "rerun: $(cat "$WORK/stderr")"
grep -q "nothing to do" "$WORK/stderr" || fail "rerun: $(cat "$WORK/stderr")"
# ... and with another batch size: refused, saying what differs.
expect_error "--batch_size: checkpoint has 8, this run has 4" "${TINY[@]}" --batch_size 4 \
  --num_epochs 2 --checkpoint_dir "$WORK/ckpt"

# --- kill -9 during training, resume: the same losses as a straight run --------------------
LONG=("${TINY[@]}" --batch_size 8 --max_steps 300 --save_steps 20 --max_to_keep 2 --progress none)
"$MAGIX" train "${LONG[@]}" --metrics_file "$WORK/straight.jsonl" > /dev/null 2>&1 \
  || fail "straight long run"
"$MAGIX" train "${LONG[@]}" --checkpoint_dir "$WORK/killed" --metrics_file "$WORK/killed.jsonl" \
  > /dev/null 2>&1 &
pid=$!
for _ in $(seq 1 400); do  # until the step-40 checkpoint is committed (or the run ends)
  [ -f "$WORK/killed/000040/index.json" ] && break
  kill -0 $pid 2> /dev/null || break
  sleep 0.02
done
kill -9 $pid 2> /dev/null
wait $pid 2> /dev/null
"$MAGIX" train "${LONG[@]}" --checkpoint_dir "$WORK/killed" --metrics_file "$WORK/killed.jsonl" \
  > "$WORK/stdout" 2> "$WORK/stderr" || fail "resume after kill -9: $(cat "$WORK/stderr")"
# Timing fields aside, every line (loss, grad norm, lr, tokens, ...) must be identical.
untimed() { sed 's/"elapsed_s":[^,}]*,//; s/"input_tokens_per_s":[^,}]*,//; s/,"tokens_per_s":[^,}]*//' "$1"; }
[ "$(wc -l < "$WORK/killed.jsonl")" -eq 300 ] || fail "killed + resumed run has $(wc -l < "$WORK/killed.jsonl") metrics lines"
cmp -s <(untimed "$WORK/straight.jsonl") <(untimed "$WORK/killed.jsonl") \
  || fail "killed + resumed metrics differ from the straight run's"
# (.lock is the run lock's file: a killed run leaves it, and it blocks nothing.)
debris=$(ls -A "$WORK/killed" | grep '^\.' | grep -vx '\.lock' || true)
[ -z "$debris" ] || fail "temporary entries left in the checkpoint folder: $debris"
echo "resumed after kill -9: $(grep -o 'resuming from [^ ]*' "$WORK/stderr" || echo 'finished before the kill')"

# --- bad flags and inputs -----------------------------------------------------------------
expect_error "--bogus" "${TINY[@]}" --bogus 1
expect_error "--train_file is required" --model_config "$FIXTURES/train/tiny_config.json"
expect_error "give exactly one of --model_name" "${TINY[@]}" --model_name "$FIXTURES/models/llama_gqa"
expect_error "give exactly one of --model_name" --train_file "$FIXTURES/train/corpus.jsonl"
expect_error "data file '$WORK/none.jsonl' does not exist" "${TINY[@]}" --train_file "$WORK/none.jsonl"
expect_error "bad.jsonl:2: invalid JSON" "${TINY[@]}" --train_file "$FIXTURES/data/bad.jsonl"
expect_error "cannot open model config" --model_config "$WORK/none.json" --train_file "$FIXTURES/train/corpus.jsonl"
expect_error "has no tokenizer.json beside it: pass --tokenizer_name" \
  --model_config "$FIXTURES/train/tiny_config.json" --train_file "$FIXTURES/train/corpus.jsonl"
expect_error "has no tokenizer.json: pass --tokenizer_name" \
  --model_name "$FIXTURES/models/llama_gqa" --train_file "$FIXTURES/train/corpus.jsonl"
expect_error "--batch_size must be positive" "${TINY[@]}" --batch_size 0
expect_error "--batch_size 6 does not divide into --gradient_accumulation_steps 4" "${TINY[@]}" \
  --batch_size 6 --gradient_accumulation_steps 4
expect_error "fewer than one batch of 64" "${TINY[@]}" --batch_size 64
expect_error "unknown learning-rate schedule 'cosine'" "${TINY[@]}" --lr_schedule cosine
expect_error "--warmup_ratio must be in [0, 1]" "${TINY[@]}" --warmup_ratio 1.5
expect_error "train_on 'prompts' is not supported" "${TINY[@]}" --train_on prompts
expect_error "has no configs" "${TINY[@]}" --train_data_config wikitext-2
expect_error "pass --model_type llama" "${TINY[@]}" --model_type gemma
expect_error "mesh shape [2, 1] needs 2 processes" "${TINY[@]}" --mesh_shape 2 1
expect_error "unknown device 'tpu' (use cpu or cuda)" "${TINY[@]}" --device tpu
# A build without the CUDA backend says so, one with it and no GPU says that (one with a GPU
# trains on it).
if ! "$MAGIX" train "${TINY[@]}" --batch_size 8 --max_steps 1 --device cuda > "$WORK/stdout" 2> "$WORK/stderr"; then
  grep -qE "this build of magix has no cuda backend|no GPU is visible to this process" "$WORK/stderr" ||
    fail "--device cuda: $(cat "$WORK/stderr")"
fi
echo "ok"
