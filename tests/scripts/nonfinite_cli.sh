#!/usr/bin/env bash
# Non-finite values never give a silent result: a NaN or infinity in a weight file (fp32 or
# bf16) is refused at load naming the tensor, the file and the element; finite weights so large
# that the forward pass overflows make score and generate fail (non-zero exit, no output)
# instead of writing null or empty text; a training run whose update overflows stops naming the
# step and saves no checkpoint of it.
# Usage: bash nonfinite_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TOK="$FIXTURES/tokenizers/trained_bytelevel"
expect_error() {
  local want="$1"; shift
  if "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
}
# poke <model.safetensors> <tensor> <element> <value>: sets one element in place (F32 or BF16).
poke() {
  python3 - "$@" <<'PY' || fail "poke $*"
import json, struct, sys
path, name, elem, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    t = h[name]
    if t["dtype"] == "F32":
        f.seek(8 + n + t["data_offsets"][0] + 4 * elem); f.write(struct.pack("<f", value))
    else:
        f.seek(8 + n + t["data_offsets"][0] + 2 * elem); f.write(struct.pack("<f", value)[2:])
PY
}
make_model() {  # make_model <dir> <dtype>
  "$MAGIX" init --config "$FIXTURES/train/tiny_config.json" --output_dir "$1" --seed 3 \
    --dtype "$2" > /dev/null || fail "init $1"
  cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" "$1/"
}
printf 'Hello world\nThe cat\n' > "$WORK/prompts.txt"
echo '{"text": "The cat sees a red ball."}' > "$WORK/texts.jsonl"
run_score() { echo score --model_name_or_path "$1" --input "$WORK/texts.jsonl" --data_field text \
                --output_file "$WORK/score.jsonl"; }
run_generate() { echo generate --model_name_or_path "$1" --prompts "$WORK/prompts.txt" \
                   --max_new_tokens 4 --output_file "$WORK/gen.jsonl"; }

Q=model.layers.1.self_attn.q_proj.weight
for dtype in float32 bfloat16; do
  M="$WORK/nan_$dtype"
  make_model "$M" "$dtype"
  "$MAGIX" $(run_score "$M") > /dev/null 2>&1 || fail "score on the intact $dtype model"
  rm -f "$WORK/score.jsonl"
  poke "$M/model.safetensors" "$Q" 37 nan          # row 1, column 5 of [32, 32]
  WANT="tensor '$Q' in $M/model.safetensors has a non-finite value (nan) at [1, 5]"
  expect_error "$WANT" $(run_score "$M")
  expect_error "$WANT" $(run_generate "$M")
  poke "$M/model.safetensors" "$Q" 37 0
  poke "$M/model.safetensors" model.norm.weight 3 inf
  expect_error "tensor 'model.norm.weight' in $M/model.safetensors has a non-finite value (inf) at [3]" \
    $(run_score "$M")
done
[ ! -e "$WORK/score.jsonl" ] && [ ! -e "$WORK/gen.jsonl" ] || fail "an output was written"

# Finite weights whose forward pass overflows: an error, not "mean_nll": null or empty text.
BIG="$WORK/big"
make_model "$BIG" float32
python3 - "$BIG/model.safetensors" <<'PY' || fail "fill lm_head"
import json, struct, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    t = json.loads(f.read(n))["lm_head.weight"]
    rows, cols = t["shape"]
    f.seek(8 + n + t["data_offsets"][0])
    f.write(struct.pack("<f", 3e38) * (rows * cols))   # every logit overflows to +-inf
PY
expect_error "non-finite NLL" $(run_score "$BIG")
expect_error "non-finite logit" $(run_generate "$BIG")
[ ! -e "$WORK/score.jsonl" ] && [ ! -e "$WORK/gen.jsonl" ] || fail "an output was written"

# A training update that overflows (learning rate x weight decay = inf in fp32): the run stops
# at that step and commits no checkpoint of the diverged weights.
expect_error "step 2: the weights hold non-finite values (model." train \
  --model_config "$FIXTURES/train/tiny_config.json" --tokenizer_name "$TOK" \
  --train_file "$FIXTURES/train/corpus.jsonl" --max_length 24 --batch_size 8 --max_steps 2 \
  --learning_rate 3e38 --weight_decay 100 --lr_schedule constant --checkpoint_dir "$WORK/ckpt"
[ -z "$(ls "$WORK/ckpt" 2>/dev/null | grep -v '^\.')" ] || fail "a checkpoint was saved: $(ls "$WORK/ckpt")"
echo "nonfinite_cli: OK"
