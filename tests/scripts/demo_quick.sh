#!/usr/bin/env bash
# magix demo, reduced (2-digit addition, few steps): the work dir holds the tokenizer, data,
# config, checkpoint, generations and report; the tokenizer gives HF tokenizers' ids; held-out
# prompts are never trained on; the printed accuracy is the exact match of generations.jsonl;
# the loss falls; a second run refuses to overwrite; bad flags are clean errors.
# Usage: bash demo_quick.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
ROOT="$(cd "$2/../.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export OMP_NUM_THREADS=1

RUN="$WORK/run"
QUICK=(--digits 2 --train_examples 3000 --test_examples 100 --steps 300 --batch_size 32
       --learning_rate 3e-3 --warmup_steps 30 --log_every 100)
"$MAGIX" demo --work_dir "$RUN" "${QUICK[@]}" > "$WORK/out.txt" 2> "$WORK/err.txt" \
  || fail "magix demo failed: $(cat "$WORK/err.txt")"
cat "$WORK/out.txt"

for f in model/config.json model/tokenizer.json model/tokenizer_config.json data/train.jsonl \
         data/test.jsonl metrics.jsonl checkpoints/000300/index.json checkpoints/000300/config.json \
         checkpoints/000300/tokenizer.json generated.jsonl exact_match.jsonl demo_report.json; do
  [ -s "$RUN/$f" ] || fail "the work dir lacks $f"
done
grep -q "^work dir: $RUN\$" "$WORK/out.txt" || fail "the work dir is not named at the end"
grep -qE "^exact match on held-out prompts: [0-9]+/100 = [0-9.]+%\$" "$WORK/out.txt" \
  || fail "no accuracy line"
grep -q "magix generate --model_name_or_path" "$WORK/out.txt" || fail "no generate command shown"
grep -q "magix export" "$WORK/out.txt" || fail "no export command shown"

# The demo tokenizer's ids, from HF tokenizers 0.23.3 (AutoTokenizer on the written folder,
# apply_chat_template(tokenize=True) of [{"user": "042+317"}, {"assistant": "9530"}]).
printf '{"text": "<|user|>\\n042+317</s><|assistant|>\\n9530</s>"}\n' > "$WORK/tok_in.jsonl"
"$MAGIX" tokenize --tokenizer_name_or_path "$RUN/model" --input "$WORK/tok_in.jsonl" \
  --output_file "$WORK/tok_out.jsonl" > /dev/null || fail "magix tokenize on the demo tokenizer"
grep -q '\[3,5,22,26,24,17,25,23,29,1,4,5,31,27,25,22,1\]' "$WORK/tok_out.jsonl" \
  || fail "demo tokenizer ids differ from HF's: $(cat "$WORK/tok_out.jsonl")"

python3 - "$RUN" "$WORK/out.txt" "$ROOT/examples/configs/demo_llama.json" <<'PY' || fail "work dir contents"
import json, re, sys
run, out = sys.argv[1], open(sys.argv[2]).read()
# The default model is the one examples/configs/demo_llama.json shows.
assert json.load(open(f"{run}/model/config.json")) == json.load(open(sys.argv[3])), "config"
train = [json.loads(l) for l in open(f"{run}/data/train.jsonl")]
test = [json.loads(l) for l in open(f"{run}/data/test.jsonl")]
gens = [json.loads(l) for l in open(f"{run}/exact_match.jsonl")]
raw = [json.loads(l) for l in open(f"{run}/generated.jsonl")]
metrics = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
rep = json.load(open(f"{run}/demo_report.json"))
assert len(train) == 3000 and len(test) == 100 and len(gens) == 100, (len(train), len(test))
assert len(metrics) == 300 and len(raw) == 100, (len(metrics), len(raw))

def answer(a, b):  # a + b with 3 digits, least significant first
    return f"{a + b:03d}"[::-1]

pairs = set()
for r in train:
    (u, a), = [(m["content"], m) for m in r["messages"] if m["role"] == "user"]
    (s,) = [m["content"] for m in r["messages"] if m["role"] == "assistant"]
    x, y = map(int, u.split("+"))
    assert re.fullmatch(r"\d\d\+\d\d", u) and s == answer(x, y), r
    pairs.add(u)
assert len(pairs) == len(train), "training problems repeat"
for t in test:
    x, y = map(int, t["prompt"].split("+"))
    assert t["answer"] == answer(x, y), t
    assert t["prompt"] not in pairs, f"held-out prompt {t['prompt']} is in the training data"
assert len({t["prompt"] for t in test}) == len(test)
correct = 0
for t, g, r in zip(test, gens, raw):
    assert g["prompt"] == t["prompt"] == r["prompt"] and g["answer"] == t["answer"], (t, g, r)
    assert g["generated"] == r["generated"], (g, r)
    assert g["correct"] == (g["generated"] == t["answer"]), g
    correct += g["correct"]
m = re.search(r"exact match on held-out prompts: (\d+)/100", out)
assert int(m.group(1)) == correct == rep["correct"], (m.group(0), correct, rep["correct"])
assert abs(rep["accuracy"] - correct / 100) < 1e-12
assert rep["steps"] == 300
assert rep["loss_last"] < 0.5 * rep["loss_first"], (rep["loss_first"], rep["loss_last"])
print(f"demo_quick: accuracy {correct}/100, loss {rep['loss_first']:.3f} -> {rep['loss_last']:.3f}")
PY

# The commands it prints to continue work as printed: generate gives the same answers from the
# checkpoint, export writes an HF folder, and train is the same run (the same losses, bit for bit:
# the demo trains through the same run_training on the same data, seed and settings).
run_printed() {
  local line
  line="$(grep -E "^  magix $1 " "$WORK/out.txt")" || fail "no '$1' command printed"
  # shellcheck disable=SC2086
  (set -f; "$MAGIX" ${line#  magix }) > "$WORK/$1.out" 2>&1 || fail "printed '$1' failed: $(cat "$WORK/$1.out")"
}
run_printed generate
cmp -s "$RUN/generated.jsonl" "$RUN/generated_again.jsonl" || fail "generate from the checkpoint differs"
run_printed export
[ -s "$RUN/hf_model/config.json" ] && [ -s "$RUN/hf_model/model.safetensors" ] \
  && [ -s "$RUN/hf_model/tokenizer.json" ] || fail "export wrote no HF folder"
run_printed train
python3 - "$RUN/metrics.jsonl" "$RUN/metrics_train.jsonl" <<'PY' || fail "magix train differs from the demo's training"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 300, (len(a), len(b))
for x, y in zip(a, b):
    assert (x["step"], x["loss"], x["lr"], x["grad_norm"], x["tokens"]) == \
        (y["step"], y["loss"], y["lr"], y["grad_norm"], y["tokens"]), (x, y)
PY

# A second run into the same folder refuses before doing anything.
if "$MAGIX" demo --work_dir "$RUN" "${QUICK[@]}" > /dev/null 2> "$WORK/err2.txt"; then
  fail "a second demo overwrote the first without --overwrite"
fi
grep -q "already holds a demo run" "$WORK/err2.txt" || fail "stderr: $(cat "$WORK/err2.txt")"

# Bad flags: one clear message, non-zero exit, nothing written.
expect_error() {
  local want="$1"; shift
  if "$MAGIX" demo "$@" > /dev/null 2> "$WORK/err3.txt"; then fail "no error for: $*"; fi
  grep -qF -- "$want" "$WORK/err3.txt" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/err3.txt")"
}
expect_error "--digits must be in [1, 9]" --work_dir "$WORK/bad1" --digits 0
[ ! -e "$WORK/bad1/model" ] || fail "a failed demo left files"
expect_error "exceed the 100 distinct 1-digit additions" --work_dir "$WORK/bad2" --digits 1 \
  --train_examples 100 --test_examples 10
expect_error "--steps must be positive" --work_dir "$WORK/bad3" --steps 0
# Fewer steps than --warmup_steps: all of them warm up (no error).
"$MAGIX" demo --work_dir "$WORK/short" --digits 1 --train_examples 40 --test_examples 8 --steps 2 \
  --batch_size 8 --warmup_steps 5 --quiet > /dev/null 2>&1 || fail "a 2-step demo with 5 warmup steps failed"
expect_error "cannot open --model_config" --work_dir "$WORK/bad4" --model_config "$WORK/none.json"
[ ! -e "$WORK/bad4/model" ] && [ ! -e "$WORK/bad4/data" ] || fail "a bad --model_config left files"
printf '{"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}\n' > "$WORK/small_vocab.json"
expect_error "vocab_size 64 is smaller than the demo tokenizer's 101 tokens" --work_dir "$WORK/bad5" \
  --model_config "$WORK/small_vocab.json"
echo "demo_quick: OK"
