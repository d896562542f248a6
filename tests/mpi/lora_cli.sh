#!/usr/bin/env bash
# magix train-lora from the command line: every train flag plus the LoRA flags; a 2x2 run saves
# checkpoints holding only the adapters, the optimizer and the trainer state; resuming it on
# 1x1, 1x4 and 4x1 gives the straight run's losses (1e-5 relative) and data order; step 1 is the
# base model (B = 0); bf16 base weights train; a resume with another rank and bad LoRA flags are
# clear errors. Then on an HF base folder: export of the merged model and of a PEFT folder, and
# `generate --lora STEP` (1x1 and 2x2) writes what generating from the merged export writes.
# Usage: bash lora_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
COMMON=(--model_config "$FIXTURES/train/tiny_config.json"
        --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
        --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --batch_size 8
        --learning_rate 2e-2 --weight_decay 0.1 --progress log)

run() {  # run <np> <data> <model> <args...>
  local np=$1 d=$2 m=$3
  shift 3
  local launch=()
  [ "$np" -gt 1 ] && launch=(timeout 120 mpirun --oversubscribe -np "$np")
  "${launch[@]}" "$MAGIX" "$@" --mesh_shape "$d" "$m"
}
field() { grep -o "\"$1\":[^,}]*" "$2" | cut -d: -f2; }
same_losses() {  # same_losses <label> <metrics a> <metrics b>
  paste <(field loss "$2") <(field loss "$3") | awk -v label="$1" '
    { d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1
      if (d > 1e-5 * a) { printf "FAIL: %s step %d loss %s vs %s\n", label, NR, $2, $1; bad = 1 } }
    END { exit bad + (NR == 0) }'
}

# --- flags ------------------------------------------------------------------------------------
"$MAGIX" train-lora --help > "$WORK/help" || fail "train-lora --help"
for f in model_type model_name tokenizer_name train_file train_data_field use_chat_template \
         checkpoint_dir max_length num_epochs batch_size learning_rate weight_decay save_steps \
         seed mesh_shape bf16_model_weights max_steps gradient_accumulation_steps partition_rules \
         lora_rank lora_alpha lora_targets lora_dropout lora_init recompute; do
  grep -q -- "--$f" "$WORK/help" || fail "train-lora --help lacks --$f"
done

# --- a straight 2x2 run -----------------------------------------------------------------------
run 4 2 2 train-lora "${COMMON[@]}" --max_steps 8 --save_steps 4 --max_to_keep 0 \
  --checkpoint_dir "$WORK/straight" --metrics_file "$WORK/straight.jsonl" \
  > "$WORK/out" 2> "$WORK/err" || fail "2x2 run: $(cat "$WORK/err")"
grep -q "lora: 14 adapted weights" "$WORK/err" || fail "adapter count: $(cat "$WORK/err")"
[ "$(wc -l < "$WORK/straight.jsonl")" -eq 8 ] || fail "metrics lines: $(wc -l < "$WORK/straight.jsonl")"
for f in index.json trainer_state.json lora optimizer config.json tokenizer.json; do
  [ -e "$WORK/straight/000008/$f" ] || fail "checkpoint lacks $f: $(ls "$WORK/straight/000008")"
done
[ ! -e "$WORK/straight/000008/model" ] || fail "a LoRA checkpoint must not hold the model"
grep -q '"lora_rank": *8' "$WORK/straight/000008/trainer_state.json" || fail "trainer state lacks lora_rank"
first=$(field loss "$WORK/straight.jsonl" | head -1); last=$(field loss "$WORK/straight.jsonl" | tail -1)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.01) }' || fail "loss did not fall: $first -> $last"

# Step 1 is the base model: full training's first loss is the same number.
run 1 1 1 train "${COMMON[@]}" --max_steps 1 --metrics_file "$WORK/full.jsonl" \
  > "$WORK/out" 2> "$WORK/err" || fail "full run: $(cat "$WORK/err")"
same_losses "step 1 vs the base model" "$WORK/full.jsonl" <(head -1 "$WORK/straight.jsonl") || exit 1

# --- resume on other meshes -------------------------------------------------------------------
for mesh in "1 1" "1 4" "4 1"; do
  set -- $mesh
  rm -rf "$WORK/resume"
  cp -r "$WORK/straight" "$WORK/resume"
  rm -rf "$WORK/resume/000008"
  head -n 4 "$WORK/straight.jsonl" > "$WORK/resume.jsonl"
  run $(($1 * $2)) $1 $2 train-lora "${COMMON[@]}" --max_steps 8 --save_steps 4 --max_to_keep 0 \
    --checkpoint_dir "$WORK/resume" --metrics_file "$WORK/resume.jsonl" \
    > "$WORK/out" 2> "$WORK/err" || fail "resume on $1x$2: $(cat "$WORK/err")"
  grep -q "resuming from $WORK/resume/000004" "$WORK/err" || fail "$1x$2 did not resume: $(cat "$WORK/err")"
  [ "$(field tokens "$WORK/resume.jsonl")" = "$(field tokens "$WORK/straight.jsonl")" ] \
    || fail "$1x$2: counted tokens per step differ (data order)"
  same_losses "resume on $1x$2" "$WORK/straight.jsonl" "$WORK/resume.jsonl" || exit 1
  echo "resume on $1x$2: ok"
done

# Another adapter rank cannot resume these adapters.
rm -rf "$WORK/resume" && cp -r "$WORK/straight" "$WORK/resume"
if run 1 1 1 train-lora "${COMMON[@]}" --max_steps 12 --checkpoint_dir "$WORK/resume" \
    --lora_rank 4 > "$WORK/out" 2> "$WORK/err"; then
  fail "resume with another --lora_rank should fail"
fi
grep -q "lora_rank" "$WORK/err" || fail "unclear rank mismatch error: $(cat "$WORK/err")"

# --- bf16 base weights ------------------------------------------------------------------------
run 1 1 1 train-lora "${COMMON[@]}" --max_steps 4 --bf16_model_weights \
  --metrics_file "$WORK/bf16.jsonl" > "$WORK/out" 2> "$WORK/err" || fail "bf16 run: $(cat "$WORK/err")"
[ "$(wc -l < "$WORK/bf16.jsonl")" -eq 4 ] || fail "bf16 metrics lines"

# --- export and generate --lora ---------------------------------------------------------------
cat > "$WORK/config.json" <<'EOF'
{"model_type": "llama", "vocab_size": 768, "hidden_size": 32, "intermediate_size": 64,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "initializer_range": 0.5,
 "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 700, "eos_token_id": 0,
 "hidden_act": "silu"}
EOF
"$MAGIX" init --config "$WORK/config.json" --output_dir "$WORK/base" --seed 5 > /dev/null \
  || fail "magix init"
cp "$FIXTURES/tokenizers/trained_bytelevel/tokenizer.json" \
   "$FIXTURES/tokenizers/trained_bytelevel/tokenizer_config.json" "$WORK/base/"
run 1 1 1 train-lora --model_name "$WORK/base" --train_file "$FIXTURES/train/corpus.jsonl" \
  --max_length 24 --batch_size 8 --max_steps 6 --learning_rate 5e-2 --lr_schedule constant \
  --warmup_ratio 0 --checkpoint_dir "$WORK/gen_ckpt" --progress none \
  > "$WORK/out" 2> "$WORK/err" || fail "train-lora on an HF folder: $(cat "$WORK/err")"
STEP="$WORK/gen_ckpt/000006"
"$MAGIX" export --checkpoint "$STEP" --output_dir "$WORK/merged" > "$WORK/out" 2> "$WORK/err" \
  || fail "export merged: $(cat "$WORK/err")"
[ -f "$WORK/merged/model.safetensors" ] && [ -f "$WORK/merged/config.json" ] \
  || fail "merged export: $(ls "$WORK/merged")"
"$MAGIX" export --checkpoint "$STEP" --output_dir "$WORK/peft" --lora_format peft \
  > "$WORK/out" 2> "$WORK/err" || fail "export peft: $(cat "$WORK/err")"
grep -q '"peft_type": "LORA"' "$WORK/peft/adapter_config.json" || fail "adapter_config.json"
grep -q '"r": 8' "$WORK/peft/adapter_config.json" || fail "adapter_config.json r"
[ -f "$WORK/peft/adapter_model.safetensors" ] || fail "no adapter_model.safetensors"
printf 'Hello world\nThe quick brown fox\nfoo bar baz\n' > "$WORK/prompts.txt"
gen() {  # gen <np> <data> <model> <output> <args...>
  local np=$1 d=$2 m=$3 out=$4
  shift 4
  run "$np" "$d" "$m" generate --prompts "$WORK/prompts.txt" --max_new_tokens 12 \
    --output_file "$out" "$@" > "$WORK/out" 2> "$WORK/err" || fail "generate $*: $(cat "$WORK/err")"
}
gen 1 1 1 "$WORK/g_merged.jsonl" --model_name_or_path "$WORK/merged"
gen 1 1 1 "$WORK/g_lora.jsonl" --model_name_or_path "$WORK/base" --lora "$STEP" --lora_alpha 32
gen 4 2 2 "$WORK/g_lora22.jsonl" --model_name_or_path "$WORK/base" --lora "$WORK/gen_ckpt" \
  --lora_alpha 32
gen 1 1 1 "$WORK/g_base.jsonl" --model_name_or_path "$WORK/base"
cmp -s "$WORK/g_merged.jsonl" "$WORK/g_lora.jsonl" || fail "generate --lora differs from the merged export"
cmp -s "$WORK/g_lora.jsonl" "$WORK/g_lora22.jsonl" || fail "generate --lora on 2x2 differs from 1x1"
! cmp -s "$WORK/g_base.jsonl" "$WORK/g_lora.jsonl" || fail "the adapters change nothing in generation"
# Without --lora_alpha: the alpha saved with the adapters (trained with the default 32).
gen 1 1 1 "$WORK/g_saved.jsonl" --model_name_or_path "$WORK/base" --lora "$STEP"
cmp -s "$WORK/g_saved.jsonl" "$WORK/g_lora.jsonl" || fail "generate --lora without --lora_alpha"
# A PEFT folder (the exported one) for generate --lora and as train-lora --lora_init.
gen 1 1 1 "$WORK/g_peft.jsonl" --model_name_or_path "$WORK/base" --lora "$WORK/peft"
cmp -s "$WORK/g_peft.jsonl" "$WORK/g_merged.jsonl" || fail "generate --lora PEFT_DIR differs"
run 1 1 1 train-lora --model_name "$WORK/base" --train_file "$FIXTURES/train/corpus.jsonl" \
  --max_length 24 --batch_size 8 --max_steps 1 --learning_rate 0 --lr_schedule constant \
  --warmup_ratio 0 --weight_decay 0 --checkpoint_dir "$WORK/init_ckpt" --progress none \
  --lora_init "$WORK/peft" > "$WORK/out" 2> "$WORK/err" || fail "--lora_init: $(cat "$WORK/err")"
gen 1 1 1 "$WORK/g_init.jsonl" --model_name_or_path "$WORK/base" --lora "$WORK/init_ckpt"
cmp -s "$WORK/g_init.jsonl" "$WORK/g_merged.jsonl" || fail "--lora_init did not start from the folder"
if "$MAGIX" export --checkpoint "$WORK/straight/000008" --output_dir "$WORK/x" --lora_format nope \
    > "$WORK/out" 2> "$WORK/err"; then fail "--lora_format nope should fail"; fi
grep -q "lora_format must be merged or peft" "$WORK/err" || fail "unclear error: $(cat "$WORK/err")"

# --- bad flags --------------------------------------------------------------------------------
expect_error() {
  local want="$1"; shift
  if run 1 1 1 train-lora "${COMMON[@]}" --max_steps 1 "$@" > "$WORK/out" 2> "$WORK/err"; then
    fail "expected an error from: $*"
  fi
  grep -qF -- "$want" "$WORK/err" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/err")"
}
expect_error "matches no parameter" --lora_targets "no_such_proj"
expect_error "not a linear weight" --lora_targets "input_layernorm"
expect_error "not a valid regular expression" --lora_targets "(q_proj"
expect_error "--lora_rank must be at least 1" --lora_rank 0
expect_error "--lora_dropout must be in [0, 1)" --lora_dropout 1
# --lora_dropout trains (2x2) and is saved with the adapters.
run 4 2 2 train-lora "${COMMON[@]}" --max_steps 2 --lora_dropout 0.1 \
  --checkpoint_dir "$WORK/drop_ckpt" > "$WORK/out" 2> "$WORK/err" \
  || fail "--lora_dropout: $(cat "$WORK/err")"
grep -rq '"lora_dropout": *0.1' "$WORK/drop_ckpt"/*/trainer_state.json \
  || fail "lora_dropout not saved: $(cat "$WORK/drop_ckpt"/*/trainer_state.json)"
echo "ok"
