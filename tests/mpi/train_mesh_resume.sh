#!/usr/bin/env bash
# magix train saves on a 2x2 mesh and resumes on 1x4, 4x1, 1x1 (and 2x2): the resumed steps'
# losses equal the straight 2x2 run's to float tolerance (1e-5 relative; AdamW amplifies
# rounding), the data order is exact (same counted tokens per step), and the metrics file keeps
# the steps before the checkpoint. Also: a batch that does not divide over the data axis is a
# clear error on every rank.
# Usage: bash train_mesh_resume.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

train() {  # train <np> <data> <model> <checkpoint dir> <metrics file>
  local np=$1 d=$2 m=$3 ckpt=$4 metrics=$5
  local launch=()
  [ "$np" -gt 1 ] && launch=(timeout 120 mpirun --oversubscribe -np "$np")
  "${launch[@]}" "$MAGIX" train --model_config "$FIXTURES/train/tiny_config.json" \
    --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel" \
    --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --batch_size 8 --max_steps 8 \
    --learning_rate 1e-2 --weight_decay 0.1 --save_steps 4 --max_to_keep 0 \
    --checkpoint_dir "$ckpt" --metrics_file "$metrics" --mesh_shape "$d" "$m" --progress log
}

# field <key> <metrics file>: the values of a numeric key, one per line.
field() { grep -o "\"$1\":[^,}]*" "$2" | cut -d: -f2; }

train 4 2 2 "$WORK/straight" "$WORK/straight.jsonl" > "$WORK/out" 2> "$WORK/err" \
  || fail "straight 2x2 run: $(cat "$WORK/err")"
[ "$(wc -l < "$WORK/straight.jsonl")" -eq 8 ] || fail "straight run wrote $(wc -l < "$WORK/straight.jsonl") metrics lines"
[ -f "$WORK/straight/000004/index.json" ] && [ -f "$WORK/straight/000008/index.json" ] \
  || fail "checkpoints 4 and 8 missing: $(ls "$WORK/straight")"

for mesh in "1 4" "4 1" "1 1" "2 2"; do
  set -- $mesh
  np=$(($1 * $2))
  rm -rf "$WORK/resume"
  cp -r "$WORK/straight" "$WORK/resume"
  rm -rf "$WORK/resume/000008"  # as if the 2x2 run had stopped after step 4
  head -n 6 "$WORK/straight.jsonl" > "$WORK/resume.jsonl"  # two lines past the checkpoint
  train $np $1 $2 "$WORK/resume" "$WORK/resume.jsonl" > "$WORK/out" 2> "$WORK/err" \
    || fail "resume on $1x$2: $(cat "$WORK/err")"
  grep -q "resuming from $WORK/resume/000004" "$WORK/err" || fail "$1x$2 did not resume: $(cat "$WORK/err")"
  [ "$(field step "$WORK/resume.jsonl" | tr '\n' ' ')" = "1 2 3 4 5 6 7 8 " ] \
    || fail "$1x$2 metrics steps: $(field step "$WORK/resume.jsonl" | tr '\n' ' ')"
  [ "$(field tokens "$WORK/resume.jsonl")" = "$(field tokens "$WORK/straight.jsonl")" ] \
    || fail "$1x$2: counted tokens per step differ (data order)"
  paste <(field loss "$WORK/straight.jsonl") <(field loss "$WORK/resume.jsonl") | awk -v mesh="$1x$2" '
    { d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1
      if (d > 1e-5 * a) { printf "FAIL: %s step %d loss %s vs straight %s\n", mesh, NR, $2, $1; bad = 1 } }
    END { exit bad }' || exit 1
  echo "resume on $1x$2: ok"
done

# A global batch of 6 rows does not divide over 4 data ranks.
if timeout 120 mpirun --oversubscribe -np 4 "$MAGIX" train --model_config "$FIXTURES/train/tiny_config.json" \
    --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel" --train_file "$FIXTURES/train/corpus.jsonl" \
    --batch_size 6 --mesh_shape 4 1 > "$WORK/out" 2> "$WORK/err"; then
  fail "batch 6 on a data axis of 4 should fail"
fi
grep -q "batch_size 6 does not divide over the 4 ranks of the data axis" "$WORK/err" \
  || fail "unclear error: $(cat "$WORK/err")"
echo "ok"
