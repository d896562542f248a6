#!/usr/bin/env bash
# magix train --bf16 (bf16 mixed precision) on meshes 1x1, 2x1, 1x2 and 2x2: every step's loss
# within bf16 tolerance (1e-3 relative) of the 1x1 bf16 run, the same counted tokens per step,
# and every loss within 2e-2 relative of the fp32 run (bf16 rounding, amplified by AdamW).
# Usage: bash train_bf16_mesh.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

train() {  # train <data> <model> <metrics file> [flags...]
  local d=$1 m=$2 metrics=$3
  shift 3
  local np=$((d * m)) launch=()
  [ "$np" -gt 1 ] && launch=(timeout 120 mpirun --oversubscribe -np "$np")
  "${launch[@]}" "$MAGIX" train --model_config "$FIXTURES/train/tiny_config.json" \
    --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel" \
    --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --batch_size 8 --max_steps 8 \
    --learning_rate 1e-2 --weight_decay 0.1 --save_steps 0 --mesh_shape "$d" "$m" \
    --metrics_file "$metrics" --progress none "$@" > "$WORK/out" 2> "$WORK/err" \
    || fail "train on ${d}x${m} $*: $(cat "$WORK/err")"
}
field() { grep -o "\"$1\":[^,}]*" "$2" | cut -d: -f2; }
# close <a file> <b file> <relative tolerance> <what>: the losses of two runs, step by step.
close() {
  paste <(field loss "$1") <(field loss "$2") | awk -v tol="$3" -v what="$4" '
    { d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1; r = d / a; if (r > worst) worst = r
      if (r > tol) { printf "FAIL: %s step %d loss %s vs %s (rel %.3g > %s)\n", what, NR, $2, $1, r, tol; bad = 1 } }
    END { printf "%s: worst relative loss difference %.3g\n", what, worst; exit bad }' || exit 1
}

train 1 1 "$WORK/fp32.jsonl"
train 1 1 "$WORK/bf16_1x1.jsonl" --bf16
[ "$(wc -l < "$WORK/bf16_1x1.jsonl")" -eq 8 ] || fail "1x1 bf16 run wrote $(wc -l < "$WORK/bf16_1x1.jsonl") lines"
cmp -s <(field loss "$WORK/fp32.jsonl") <(field loss "$WORK/bf16_1x1.jsonl") \
  && fail "--bf16 gave the fp32 losses bit for bit: it did not compute in bf16"
close "$WORK/fp32.jsonl" "$WORK/bf16_1x1.jsonl" 2e-2 "bf16 1x1 vs fp32"
for mesh in "2 1" "1 2" "2 2"; do
  set -- $mesh
  train $1 $2 "$WORK/bf16_$1x$2.jsonl" --bf16
  [ "$(field tokens "$WORK/bf16_$1x$2.jsonl")" = "$(field tokens "$WORK/bf16_1x1.jsonl")" ] \
    || fail "$1x$2: counted tokens per step differ"
  close "$WORK/bf16_1x1.jsonl" "$WORK/bf16_$1x$2.jsonl" 1e-3 "bf16 $1x$2 vs bf16 1x1"
done
