#!/usr/bin/env bash
# magix train --eval_file on conversations (--use_chat_template --train_on assistant) on 1x1 and
# 2x2: the final eval loss equals `magix score` of the saved step (the mean NLL over every
# counted target), the 2x2 eval losses equal the 1x1 ones, evaluating leaves the train losses
# bit-identical, a run without --checkpoint_dir warns once, and a tokenizer without a chat
# template is an error naming --chat_template_name builtin. Steps carry generation_config.json.
# Usage: bash eval_mesh.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIX="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

DATA="$FIX/score_chat/conversations.jsonl"
train() {  # train <np> <data> <model> <name> [flags...]
  local np=$1 d=$2 m=$3 name=$4
  shift 4
  local launch=()
  [ "$np" -gt 1 ] && launch=(timeout 180 mpirun --oversubscribe -np "$np")
  "${launch[@]}" "$MAGIX" train --model_name "$FIX/models/llama_gqa" \
    --tokenizer_name "$FIX/score_chat/tokenizer" --train_file "$DATA" --train_data_field messages \
    --use_chat_template --train_on assistant --max_length 200 --batch_size 2 --max_steps 3 \
    --learning_rate 1e-3 --metrics_file "$WORK/$name.jsonl" --mesh_shape "$d" "$m" \
    --progress log --log_steps 1 "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" \
    || fail "$name: $(cat "$WORK/$name.err")"
}

evalflags=(--eval_file "$DATA" --eval_steps 2 --per_device_eval_batch_size 1)
train 1 1 1 one "${evalflags[@]}" --checkpoint_dir "$WORK/ckpt_one" --save_steps 0
train 4 2 2 mesh "${evalflags[@]}" --checkpoint_dir "$WORK/ckpt_mesh" --save_steps 0
train 1 1 1 noeval --checkpoint_dir "$WORK/ckpt_noeval" --save_steps 0
train 4 2 2 nosave "${evalflags[@]}"

"$MAGIX" score --model_name_or_path "$WORK/ckpt_one/000003" \
  --tokenizer_name_or_path "$FIX/score_chat/tokenizer" --input "$DATA" --data_field messages \
  --use_chat_template --train_on assistant --output_file "$WORK/score.jsonl" --batch_size 2 \
  > "$WORK/score.out" 2>&1 || fail "score: $(cat "$WORK/score.out")"

python3 - "$WORK" <<'PY' || exit 1
import json, sys
w = sys.argv[1]
def lines(name):
    return [json.loads(l) for l in open(f"{w}/{name}.jsonl")]
def evals(name):
    return [l for l in lines(name) if "eval_loss" in l]
def steps(name):
    return [l for l in lines(name) if "loss" in l]
one, mesh = evals("one"), evals("mesh")
assert [e["step"] for e in one] == [2, 3] == [e["step"] for e in mesh], (one, mesh)
for a, b in zip(one, mesh):
    assert a["eval_tokens"] == b["eval_tokens"] and a["eval_examples"] == b["eval_examples"] == 3
    assert abs(a["eval_loss"] - b["eval_loss"]) <= 1e-5 * a["eval_loss"], ("2x2 vs 1x1", a, b)
scores = lines("score")
nll, tokens = sum(s["nll"] for s in scores), sum(s["tokens"] for s in scores)
assert tokens == one[-1]["eval_tokens"], (tokens, one[-1])
assert abs(one[-1]["eval_loss"] - nll / tokens) <= 1e-5 * nll / tokens, (one[-1], nll / tokens)
assert [s["loss"] for s in steps("one")] == [s["loss"] for s in steps("noeval")], "eval changed training"
print(f"eval_mesh: eval loss 1x1 {one[-1]['eval_loss']:.8f}, 2x2 {mesh[-1]['eval_loss']:.8f}, "
      f"score {nll / tokens:.8f}")
PY
# The model folder's generation_config.json travels with the steps (magix export copies it).
cmp -s "$WORK/ckpt_one/000003/generation_config.json" "$FIX/models/llama_gqa/generation_config.json" \
  || fail "the step does not carry the model's generation_config.json"
grep -q "^eval step 3/3 | eval loss" "$WORK/one.err" || fail "no eval log line: $(cat "$WORK/one.err")"
grep -q "^eval loss: " "$WORK/one.out" || fail "no eval loss in the summary: $(cat "$WORK/one.out")"
n=$(grep -c "^WARNING: no --checkpoint_dir" "$WORK/nosave.err")
[ "$n" -eq 1 ] || fail "a run without --checkpoint_dir should warn once, warned $n times"
! grep -q "WARNING: no --checkpoint_dir" "$WORK/one.err" || fail "warned with a --checkpoint_dir"

# A tokenizer without a chat template: an error naming the built-in format's option.
if "$MAGIX" train --model_name "$FIX/models/llama_gqa" --tokenizer_name "$FIX/train/gqa_tokenizer" \
    --train_file "$DATA" --train_data_field messages --use_chat_template --max_length 200 \
    --batch_size 2 --max_steps 1 > "$WORK/notemplate.out" 2>&1; then
  fail "--use_chat_template without a template was accepted"
fi
grep -q -- "--chat_template_name builtin" "$WORK/notemplate.out" \
  || fail "the error does not name --chat_template_name builtin: $(cat "$WORK/notemplate.out")"
echo "eval_mesh: OK"
