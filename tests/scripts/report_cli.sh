#!/usr/bin/env bash
# What a run reports besides its log: --report_to tensorboard writes event files that
# TensorBoard's own reader loads with the metrics file's numbers (train and eval); the loss-curve SVG next to the
# metrics file and from `magix plot` is well-formed; bad input to plot is a clear error.
# The TensorBoard check needs the tensorboard Python package (scripts/setup.sh installs it in
# .venv); without it that part is skipped (exit 77) after the rest has run.
# Usage: bash report_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TINY=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
      --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --learning_rate 1e-2
      --batch_size 4 --progress log)

"$MAGIX" train "${TINY[@]}" --max_steps 30 --metrics_file "$WORK/run/metrics.jsonl" \
  --eval_file "$FIXTURES/train/corpus.jsonl" --eval_steps 10 \
  --report_to tensorboard --logging_dir "$WORK/tb" > "$WORK/stdout" 2> "$WORK/stderr" \
  || fail "train: $(cat "$WORK/stderr")"
grep -q "loss curves: $WORK/run/metrics.svg" "$WORK/stderr" || fail "no picture line: $(cat "$WORK/stderr")"
ls "$WORK"/tb/events.out.tfevents.* > /dev/null 2>&1 || fail "no event file in $WORK/tb"

# The picture: well-formed SVG with the loss and lr curves.
python3 - "$WORK/run/metrics.svg" <<'PY' || fail "metrics.svg is not a good SVG"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
classes = [e.get("class") for e in root.iter("{http://www.w3.org/2000/svg}polyline")]
assert {"raw", "trend", "lr", "eval"} <= set(classes), classes
PY
"$MAGIX" plot "$WORK/run/metrics.jsonl" --output "$WORK/again.svg" > /dev/null || fail "magix plot"
cmp -s "$WORK/run/metrics.svg" "$WORK/again.svg" || fail "magix plot draws another picture than train"
"$MAGIX" plot "$WORK/run/metrics.jsonl" > /dev/null || fail "magix plot (default output)"

# Bad input: a clear error, nothing written.
expect_plot_error() {
  local want="$1"; shift
  if "$MAGIX" plot "$@" > "$WORK/out" 2> "$WORK/err"; then fail "plot $* succeeded"; fi
  grep -qF -- "$want" "$WORK/err" || fail "plot $*: stderr lacks '$want': $(cat "$WORK/err")"
}
expect_plot_error "cannot read the metrics file" "$WORK/absent.jsonl"
printf '{"step":1,"loss":2}\nnot json\n{"step":3,"loss":1}\n' > "$WORK/bad.jsonl"
expect_plot_error "bad.jsonl:2" "$WORK/bad.jsonl" --output "$WORK/bad.svg"
[ ! -e "$WORK/bad.svg" ] || fail "a failed plot left its output"
expect_plot_error "is the metrics file itself" "$WORK/run/metrics.jsonl" --output "$WORK/run/metrics.jsonl"
if "$MAGIX" train "${TINY[@]}" --max_steps 2 --report_to wandb > /dev/null 2> "$WORK/err"; then
  fail "--report_to wandb was accepted"
fi
grep -q "expected none or tensorboard" "$WORK/err" || fail "message: $(cat "$WORK/err")"

# Truncation that removes counted targets is said before training, with the --max_length that
# keeps 99% of the examples whole (here all 48: the longest one), and that length is tight.
"$MAGIX" train "${TINY[@]}" --max_length 8 --max_steps 1 > /dev/null 2> "$WORK/err" || fail "train: $(cat "$WORK/err")"
grep -q "WARNING: --max_length 8 cuts counted targets from 48 of 48 examples" "$WORK/err" \
  || fail "no truncation warning: $(cat "$WORK/err")"
suggested=$(sed -n 's/.*--max_length \([0-9]*\) would keep 99% of the examples whole.*/\1/p' "$WORK/err")
[ -n "$suggested" ] || fail "no suggested --max_length: $(cat "$WORK/err")"
"$MAGIX" train "${TINY[@]}" --max_length "$suggested" --max_steps 1 > /dev/null 2> "$WORK/err" || fail "train"
grep -q "WARNING: --max_length" "$WORK/err" && fail "--max_length $suggested still cuts targets: $(cat "$WORK/err")"
"$MAGIX" train "${TINY[@]}" --max_length $((suggested - 1)) --max_steps 1 > /dev/null 2> "$WORK/err" || fail "train"
grep -qE "cuts counted targets from [0-9]+ of 48 examples" "$WORK/err" || fail "one shorter: $(cat "$WORK/err")"
# Log lines say what they average and count.
"$MAGIX" train "${TINY[@]}" --max_steps 4 --log_steps 2 > /dev/null 2> "$WORK/err" || fail "train"
grep -q "loss [0-9.]* (mean of 2 steps) .* input tokens/s, [0-9]* counted targets/s" "$WORK/err" \
  || fail "log line: $(cat "$WORK/err")"
grep -q '"input_tokens":' "$WORK/run/metrics.jsonl" || fail "metrics lack input_tokens"

# TensorBoard's reader sees every step with the metrics file's values (the tensorboard package
# of the repository's .venv, which scripts/setup.sh makes, else of python3).
PY=python3
ROOT="$(cd "$FIXTURES/../.." && pwd)"
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
"$PY" -c "import tensorboard" 2> /dev/null || { echo "report_cli: tensorboard not installed, event check skipped"; exit 77; }
"$PY" - "$WORK/tb" "$WORK/run/metrics.jsonl" <<'PY' || fail "TensorBoard does not read the event file as written"
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1]); ea.Reload()
lines = [json.loads(l) for l in open(sys.argv[2])]
want = [l for l in lines if "loss" in l]
evals = [l for l in lines if "eval_loss" in l]
assert [e["step"] for e in evals] == [10, 20, 30], evals
for tag, key in [("eval/loss", "eval_loss"), ("eval/perplexity", "eval_perplexity")]:
    got = ea.Scalars(tag)
    assert [e.step for e in got] == [w["step"] for w in evals], tag
    for e, w in zip(got, evals):
        assert math.isclose(e.value, w[key], rel_tol=1e-6), (tag, e, w)
for tag, key in [("train/loss", "loss"), ("train/learning_rate", "lr"), ("train/grad_norm", "grad_norm")]:
    got = ea.Scalars(tag)
    assert [e.step for e in got] == [w["step"] for w in want], tag
    for e, w in zip(got, want):
        assert math.isclose(e.value, w[key], rel_tol=1e-6, abs_tol=1e-12), (tag, e, w)
print("tensorboard read", len(want), "steps and", len(evals), "evaluations")
PY
echo "report_cli: OK"
