#!/usr/bin/env bash
# GGUF out and back in: a trained step exported with `magix export --format gguf` loads as a
# model again (`--model_name_or_path FILE.gguf`) and gives the HF export's token ids, greedy
# text and NLL (f32: equal up to float rounding; f16 and q8_0: within their quantization);
# bad requests and damaged files are clear errors.
# Usage: bash gguf_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
export MAGIX_CACHE="$WORK/cache"
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_error() {
  local want="$1"; shift
  if "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
}
run() { "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr" || fail "$*: $(cat "$WORK/stderr")"; }

run train --model_config "$FIXTURES/train/tiny_config.json" \
  --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel" \
  --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --learning_rate 1e-2 \
  --batch_size 8 --max_steps 3 --checkpoint_dir "$WORK/ckpt"
STEP="$WORK/ckpt/000003"
run export --checkpoint "$STEP" --output_dir "$WORK/hf"
for t in f32 f16 bf16 q8_0; do
  run export --checkpoint "$STEP" --output_dir "$WORK/out" --format gguf --outtype "$t"
  [ -f "$WORK/out/model-$t.gguf" ] || fail "no $WORK/out/model-$t.gguf"
done
run export --checkpoint "$STEP" --output_dir "$WORK/named.gguf" --format gguf --outtype f32
cmp -s "$WORK/named.gguf" "$WORK/out/model-f32.gguf" || fail "a .gguf output path differs"

printf '{"text": "The cat sees a red ball. Then it rests."}\n{"text": "  A small robot, 123 songs\\tabout rain!"}\n' > "$WORK/texts.jsonl"
printf 'The cat\nA small robot\n' > "$WORK/prompts.txt"
for m in hf out/model-f32.gguf; do
  tag=$(basename "$m" .gguf)
  run tokenize --tokenizer_name_or_path "$WORK/$m" --input "$WORK/texts.jsonl" --output_file "$WORK/ids-$tag.jsonl"
  run generate --model_name_or_path "$WORK/$m" --prompts "$WORK/prompts.txt" --max_new_tokens 8 \
    --output_file "$WORK/gen-$tag.jsonl"
done
cmp -s "$WORK/ids-hf.jsonl" "$WORK/ids-model-f32.jsonl" || fail "token ids differ: $(cat "$WORK"/ids-*.jsonl)"
cmp -s "$WORK/gen-hf.jsonl" "$WORK/gen-model-f32.jsonl" || fail "greedy text differs: $(cat "$WORK"/gen-*.jsonl)"

score() {
  run score --model_name_or_path "$1" --input "$WORK/texts.jsonl" --data_field text --output_file "$2"
}
score "$WORK/hf" "$WORK/score-hf.jsonl"
for t in f32 f16 bf16 q8_0; do score "$WORK/out/model-$t.gguf" "$WORK/score-$t.jsonl"; done
python3 - "$WORK" <<'PY' || fail "NLL of the GGUF exports"
import json, sys
w = sys.argv[1]
def nll(tag):
    return [json.loads(l)["mean_nll"] for l in open(f"{w}/score-{tag}.jsonl")]
ref = nll("hf")
for tag, tol in [("f32", 1e-5), ("f16", 2e-4), ("bf16", 2e-3), ("q8_0", 2e-3)]:
    got = nll(tag)
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
    print(f"{tag}: relative NLL difference {worst:.2e} (limit {tol})")
    assert len(got) == len(ref) and worst <= tol, (tag, got, ref)
PY

expect_error "--outtype must be" export --checkpoint "$STEP" --output_dir "$WORK/x" --format gguf --outtype q4
expect_error "--format must be" export --checkpoint "$STEP" --output_dir "$WORK/x" --format onnx
expect_error "pass --overwrite" export --checkpoint "$STEP" --output_dir "$WORK/out" --format gguf --outtype f16
head -c 5000 "$WORK/out/model-f16.gguf" > "$WORK/cut.gguf"
expect_error "cut.gguf" score --model_name_or_path "$WORK/cut.gguf" --input "$WORK/texts.jsonl" \
  --data_field text --output_file "$WORK/s.jsonl"
[ ! -e "$WORK/s.jsonl" ] || fail "score wrote output for a damaged GGUF"
echo "gguf_cli: OK"
