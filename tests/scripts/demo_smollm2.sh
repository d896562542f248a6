#!/usr/bin/env bash
# magix demo --model smollm2, reduced to a few steps on the tiny GGUF fixture
# (tests/fixtures/gguf/tiny_llama.gguf) instead of SmolLM2: the work dir holds the data, the
# answers before and after training, the chat answers, the train-lora step and both exports;
# the printed accuracies are the exact match of the answer files; the dates are those Python's
# datetime gives for the words; held-out dates are never trained on; the merged HF export
# answers like the base model with the adapters merged at load, the GGUF export scores like the
# HF export (within q8_0's quantization) and unlike the base model; bad requests are clear errors.
# Usage: bash demo_smollm2.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
GGUF="$FIXTURES/gguf/tiny_llama.gguf"
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
export MAGIX_CACHE="$WORK/cache" OMP_NUM_THREADS=2
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_error() {
  local want="$1"; shift
  if "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
}
run() { "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr" || fail "$*: $(cat "$WORK/stderr")"; }

RUN="$WORK/run"
QUICK=(--model smollm2 --gguf "$GGUF" --train_examples 24 --test_examples 6 --steps 4
       --batch_size 4 --learning_rate 1e-2 --warmup_steps 1 --log_every 2 --max_new_tokens 6
       --lora_rank 4 --lora_alpha 8)
"$MAGIX" demo --work_dir "$RUN" "${QUICK[@]}" > "$WORK/out.txt" 2> "$WORK/err.txt" \
  || fail "magix demo --model smollm2 failed: $(cat "$WORK/err.txt")"
cat "$WORK/out.txt"
for f in data/train.jsonl data/test.jsonl data/chat.jsonl generated_before.jsonl \
         generated_after.jsonl chat.jsonl metrics.jsonl checkpoints/000004/index.json \
         export/model-q8_0.gguf export/hf/config.json export/hf/model.safetensors \
         export/hf/tokenizer.json demo_report.json; do
  [ -s "$RUN/$f" ] || fail "the work dir lacks $f"
done
grep -qE '^held-out accuracy before training: [0-9]+/6$' "$WORK/out.txt" || fail "no accuracy before"
grep -qE '^held-out accuracy after training: [0-9]+/6$' "$WORK/out.txt" || fail "no accuracy after"
grep -q "^step 2/4 .* loss " "$WORK/err.txt" || fail "no step log lines: $(cat "$WORK/err.txt")"
grep -q "^chat with the fine-tuned model:" "$WORK/out.txt" || fail "no chat"

python3 - "$RUN" "$WORK/out.txt" <<'PY' || fail "work dir contents"
import datetime, json, re, sys
run, out = sys.argv[1], open(sys.argv[2]).read()
train = [json.loads(l) for l in open(f"{run}/data/train.jsonl")]
test = [json.loads(l) for l in open(f"{run}/data/test.jsonl")]
assert len(train) == 24 and len(test) == 6, (len(train), len(test))
PREFIX = "Write this date in ISO 8601 form (YYYY-MM-DD): "

def iso(words):  # the answer by Python's calendar, from the words alone
    for fmt in ("%B %d, %Y", "%d %B %Y"):
        try:
            return datetime.datetime.strptime(words, fmt).strftime("%Y-%m-%d")
        except ValueError:
            pass
    raise AssertionError(f"unreadable date {words!r}")

seen = set()
for r in train:
    (u,) = [m["content"] for m in r["messages"] if m["role"] == "user"]
    (a,) = [m["content"] for m in r["messages"] if m["role"] == "assistant"]
    assert u.startswith(PREFIX) and iso(u[len(PREFIX):]) == a, (u, a)
    seen.add(a)
assert len(seen) == len(train), "training dates repeat"
for r in test:
    assert iso(r["prompt"][len(PREFIX):]) == r["answer"], r
    assert r["answer"] not in seen, f"held-out {r['answer']} is trained on"

rep = json.load(open(f"{run}/demo_report.json"))
for name, key in [("generated_before", "correct_before"), ("generated_after", "correct_after")]:
    gens = [json.loads(l) for l in open(f"{run}/{name}.jsonl")]
    assert [g["prompt"] for g in gens] == [t["prompt"] for t in test], name
    correct = sum(g["generated"].strip() == t["answer"] for g, t in zip(gens, test))
    assert rep[key] == correct, (name, rep[key], correct)
    holding = sum(t["answer"] in g["generated"] for g, t in zip(gens, test))
    assert rep[key.replace("correct", "containing")] == holding, (name, holding)
    when = "before" if key == "correct_before" else "after"
    assert f"held-out accuracy {when} training: {correct}/6\n" in out, (when, correct)
metrics = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
assert [m["step"] for m in metrics] == [1, 2, 3, 4], metrics
assert rep["steps"] == 4 and rep["loss_first"] == metrics[0]["loss"], rep
assert len(rep["chat"]) == 3 and len(open(f"{run}/chat.jsonl").readlines()) == 3
print(f"demo_smollm2: before {rep['correct_before']}/6, after {rep['correct_after']}/6, "
      f"loss {rep['loss_first']:.3f} -> {rep['loss_last']:.3f}")
PY

# The merged HF export answers exactly as the base with the adapters merged at load.
run generate --model_name_or_path "$RUN/export/hf" --prompts "$RUN/data/test.jsonl" \
  --use_chat_template --max_new_tokens 6 --output_file "$WORK/again.jsonl"
cmp -s "$WORK/again.jsonl" "$RUN/generated_after.jsonl" \
  || fail "the HF export answers differently: $(cat "$WORK/again.jsonl")"

# Both exports load back and score alike; the fine-tuning changed the model.
printf '{"text": "Write this date in ISO 8601 form: May 1, 2001. 2001-05-01"}\n{"text": "  The cat sees a red ball. Then it rests."}\n' > "$WORK/texts.jsonl"
score() {
  run score --model_name_or_path "$1" --input "$WORK/texts.jsonl" --data_field text --output_file "$2"
}
score "$RUN/export/hf" "$WORK/score-hf.jsonl"
score "$RUN/export/model-q8_0.gguf" "$WORK/score-q8.jsonl"
score "$GGUF" "$WORK/score-base.jsonl"
python3 - "$WORK" <<'PY' || fail "NLL of the exports"
import json, sys
w = sys.argv[1]
nll = lambda t: [json.loads(l)["mean_nll"] for l in open(f"{w}/score-{t}.jsonl")]
hf, q8, base = nll("hf"), nll("q8"), nll("base")
worst = max(abs(a - b) / abs(b) for a, b in zip(q8, hf))
moved = max(abs(a - b) / abs(b) for a, b in zip(base, hf))
print(f"q8_0 GGUF vs HF export: relative NLL difference {worst:.2e}; base vs export {moved:.2e}")
assert len(q8) == len(hf) == 2 and worst <= 2e-3, (q8, hf)
assert moved > 1e-3, ("the exported model scores like the base", base, hf)
PY

# Under mpirun on a 2x1 mesh (data parallel; the fixture's vocabulary of 705 does not split
# over a model axis): the single-process run's losses.
if command -v mpirun > /dev/null; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \
    mpirun --oversubscribe -np 2 "$MAGIX" demo --work_dir "$WORK/mesh" "${QUICK[@]}" \
    --mesh_shape 2 1 --quiet > "$WORK/mesh.txt" 2>&1 || fail "2x1: $(cat "$WORK/mesh.txt")"
  grep -qE '^held-out accuracy after training: [0-9]+/6$' "$WORK/mesh.txt" || fail "2x1: no accuracy"
  [ -s "$WORK/mesh/export/model-q8_0.gguf" ] && [ -s "$WORK/mesh/export/hf/config.json" ] \
    || fail "2x1: no exports"
  python3 - "$RUN/metrics.jsonl" "$WORK/mesh/metrics.jsonl" <<'PY' || fail "2x1 losses differ from 1x1"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(b) == 4 and all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(a, b)), (a, b)
PY
fi

# A second run into the same folder, bad flags, a missing model: clear errors.
expect_error "pass --overwrite" demo --work_dir "$RUN" "${QUICK[@]}"
expect_error "--model must be tiny or smollm2" demo --work_dir "$WORK/x" --model llama
expect_error "--digits belongs to --model tiny" demo --work_dir "$WORK/x" "${QUICK[@]}" --digits 3
expect_error "--gguf belongs to --model smollm2" demo --work_dir "$WORK/x" --gguf "$GGUF"
expect_error "--outtype must be" demo --work_dir "$WORK/x" "${QUICK[@]}" --outtype q4
expect_error "scripts/fetch_smollm2.sh" demo --work_dir "$WORK/x" --model smollm2
[ ! -e "$WORK/x" ] || fail "a refused demo left $WORK/x behind"
echo "demo_smollm2: OK"
