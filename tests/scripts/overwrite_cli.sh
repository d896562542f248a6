#!/usr/bin/env bash
# An output that would overwrite an input, or land in a checkpoint step or an input model
# folder, is refused before any work, the input left intact: --metrics_file equal to
# --train_file, the output of generate / tokenize / score / chat-template naming its input (also
# through ./, a symlink or a hard link), generate's OUTPUT.partial, export into a step or its
# checkpoint dir, init over its own config.
# Usage: bash overwrite_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TOK="$FIXTURES/tokenizers/trained_bytelevel"
cp "$FIXTURES/train/corpus.jsonl" "$WORK/train.jsonl"
TINY=(--model_config "$FIXTURES/train/tiny_config.json" --tokenizer_name "$TOK"
      --max_length 24 --learning_rate 1e-2 --batch_size 8 --max_steps 2)
expect_error() {
  local want="$1"; shift
  if "$MAGIX" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
}
# unchanged <file> <sha>: the input still has its content.
sum() { sha256sum "$1" | cut -d' ' -f1; }
TRAIN_SUM="$(sum "$WORK/train.jsonl")"
unchanged() { [ "$(sum "$WORK/train.jsonl")" = "$TRAIN_SUM" ] || fail "train.jsonl was overwritten ($*)"; }

cd "$WORK"
SAME="refusing to overwrite an input"
expect_error "$SAME" train "${TINY[@]}" --train_file train.jsonl --metrics_file train.jsonl
unchanged "metrics = train"
expect_error "$SAME" train "${TINY[@]}" --train_file train.jsonl --metrics_file ./train.jsonl
ln -s train.jsonl link.jsonl
expect_error "$SAME" train "${TINY[@]}" --train_file train.jsonl --metrics_file link.jsonl
ln train.jsonl hard.jsonl
expect_error "$SAME" train "${TINY[@]}" --train_file hard.jsonl --metrics_file "$WORK/train.jsonl"
unchanged "links"
expect_error "$SAME" train "${TINY[@]}" --train_file train.jsonl --checkpoint_dir train.jsonl
unchanged "checkpoint_dir = train"

# A real run, then its step as an input (and as a place to write).
"$MAGIX" train "${TINY[@]}" --train_file train.jsonl --checkpoint_dir ckpt \
  --metrics_file metrics.jsonl > /dev/null 2> stderr || fail "train: $(cat stderr)"
STEP=ckpt/000002
printf 'Hello\nThe cat\n' > prompts.txt
echo '{"text": "The cat sees a red ball."}' > texts.jsonl
expect_error "$SAME" generate --model_name_or_path "$STEP" --prompts prompts.txt \
  --output_file prompts.txt --max_new_tokens 2
[ "$(cat prompts.txt)" = "$(printf 'Hello\nThe cat')" ] || fail "prompts.txt was overwritten"
# OUTPUT.partial naming the prompts file.
cp prompts.txt p.partial
expect_error "$SAME" generate --model_name_or_path "$STEP" --prompts p.partial \
  --output_file p --max_new_tokens 2
[ "$(cat p.partial)" = "$(printf 'Hello\nThe cat')" ] || fail "p.partial was overwritten"
expect_error "would write into the checkpoint step" generate --model_name_or_path "$STEP" \
  --prompts prompts.txt --output_file "$STEP/out.jsonl" --max_new_tokens 2
expect_error "$SAME" tokenize --tokenizer_name_or_path "$TOK" --input texts.jsonl \
  --output_file ./texts.jsonl
expect_error "$SAME" score --model_name_or_path "$STEP" --input texts.jsonl --data_field text \
  --output_file texts.jsonl
grep -q '"text"' texts.jsonl || fail "texts.jsonl was overwritten"
echo '{"messages": [{"role": "user", "content": "hi"}]}' > chats.jsonl
expect_error "$SAME" chat-template --tokenizer_name_or_path "$TOK" --input chats.jsonl \
  --output_file chats.jsonl
grep -q '"messages"' chats.jsonl || fail "chats.jsonl was overwritten"
# Outputs inside an input model folder.
cp -r "$TOK" tok
expect_error "inside --tokenizer_name_or_path" tokenize --tokenizer_name_or_path tok \
  --input texts.jsonl --output_file tok/tokenizer.json
cmp -s tok/tokenizer.json "$TOK/tokenizer.json" || fail "tok/tokenizer.json was overwritten"

# export: not into a step, its checkpoint dir, or the step itself with --overwrite.
expect_error "checkpoint step" export --checkpoint "$STEP" --output_dir "$STEP" --overwrite
expect_error "checkpoint step" export --checkpoint "$STEP" --output_dir "$STEP/hf" --overwrite
expect_error "checkpoint dir of --checkpoint" export --checkpoint "$STEP" --output_dir ckpt --overwrite
expect_error "checkpoint dir of --checkpoint" export --checkpoint "$STEP/" --output_dir ckpt/hf
ln -s "$STEP" steplink
expect_error "checkpoint dir of --checkpoint" export --checkpoint steplink --output_dir ckpt/hf
[ -f "$STEP/index.json" ] && [ -f "$STEP/model/rank-00000.bin" ] || fail "the step was damaged"
"$MAGIX" score --model_name_or_path "$STEP" --input texts.jsonl --data_field text \
  --output_file score.jsonl > /dev/null 2> stderr || fail "the step no longer loads: $(cat stderr)"
"$MAGIX" export --checkpoint "$STEP" --output_dir hf > /dev/null 2> stderr || fail "export: $(cat stderr)"

# init over its own config.json.
mkdir m && cp "$FIXTURES/train/tiny_config.json" m/config.json
expect_error "$SAME" init --config m/config.json --output_dir m --overwrite
grep -q '"model_type": "llama"' m/config.json || fail "m/config.json was overwritten"
echo "overwrite_cli: OK"
