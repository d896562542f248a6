#!/usr/bin/env bash
# Data sources from the command line (docs/data.md): train on a parquet file, a datasets
# save_to_disk DatasetDict (--split), a hub dataset in a local HF cache (blobs + symlinks +
# refs/main, two parquet shards), a .jsonl.gz and datasets' to_json output (lines and array):
# every run's losses are bit-equal to the run on the same records as JSONL. Conversations from
# parquet (messages: list<struct<role, content>>) train as their JSONL twin; a checkpoint written
# from the JSONL resumes from the parquet file with the same losses; generate reads prompts from a
# hub dataset's split (--hf_data_split); bad sources are clear errors.
# Fixtures: tests/fixtures/data/sources (tools/reference/make_data_source_fixtures.py).
# Usage: bash data_sources_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
SRC="$FIXTURES/data/sources"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export HF_HOME="$SRC/hf_home"
unset HF_HUB_CACHE
TINY=(--model_config "$FIXTURES/train/tiny_config.json"
      --tokenizer_name "$FIXTURES/tokenizers/trained_bytelevel"
      --learning_rate 1e-2 --batch_size 8 --progress none)
TEXT=(--max_length 24)
# Timing fields aside, the metrics lines (loss, grad norm, lr, tokens) must be identical.
untimed() { sed 's/"elapsed_s":[^,}]*,//; s/"input_tokens_per_s":[^,}]*,//; s/,"tokens_per_s":[^,}]*//' "$1"; }

# train_like <name> <reference metrics> <args...>: a run whose metrics must equal the reference's.
train_like() {
  local name="$1" ref="$2"; shift 2
  "$MAGIX" train "${TINY[@]}" "$@" --metrics_file "$WORK/$name.jsonl" > "$WORK/$name.out" 2>&1 \
    || fail "$name: $(cat "$WORK/$name.out")"
  [ -s "$WORK/$name.jsonl" ] || fail "$name wrote no metrics"
  cmp -s <(untimed "$ref") <(untimed "$WORK/$name.jsonl") \
    || fail "$name: losses differ from the JSONL run: $(diff <(untimed "$ref") <(untimed "$WORK/$name.jsonl") | head -4)"
  echo "$name: $(wc -l < "$WORK/$name.jsonl") steps, losses equal to the JSONL run"
}

# --- text records: the corpus as JSONL, then in every other form -----------------------------
"$MAGIX" train "${TINY[@]}" "${TEXT[@]}" --train_file "$FIXTURES/train/corpus.jsonl" --max_steps 8 \
  --metrics_file "$WORK/jsonl.jsonl" > "$WORK/jsonl.out" 2>&1 || fail "jsonl run: $(cat "$WORK/jsonl.out")"
train_like gz "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file "$SRC/corpus.jsonl.gz" --max_steps 8
train_like to_json "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file "$SRC/corpus_to_json.json" --max_steps 8
train_like to_json_array "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file "$SRC/corpus_to_json_array.json" --max_steps 8

if "$MAGIX" train "${TINY[@]}" "${TEXT[@]}" --train_file "$SRC/corpus.parquet" --max_steps 1 \
     > "$WORK/probe.out" 2>&1; then
  :
elif grep -q "built without Apache Arrow" "$WORK/probe.out"; then
  grep -q "scripts/setup.sh" "$WORK/probe.out" || fail "no how-to in: $(cat "$WORK/probe.out")"
  echo "built without Arrow: parquet refused with a how-to; parquet/arrow runs skipped"
  echo "ok"
  exit 0
else
  fail "parquet probe: $(cat "$WORK/probe.out")"
fi

train_like parquet "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file "$SRC/corpus.parquet" --max_steps 8
train_like hub "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file magix/tiny-corpus --max_steps 8
train_like hub_revision "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file magix/tiny-corpus --max_steps 8 \
  --dataset_revision 5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff
train_like hub_config "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file magix/tiny-configs --train_data_config en \
  --max_steps 8
snap="$SRC/hf_home/hub/datasets--magix--tiny-corpus/snapshots/5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff"
train_like glob "$WORK/jsonl.jsonl" "${TEXT[@]}" --train_file "$snap/data/train-*.parquet" --max_steps 8

# A DatasetDict saved with save_to_disk: --split test against the same records as JSONL.
"$MAGIX" train "${TINY[@]}" "${TEXT[@]}" --train_file "$SRC/corpus_test.jsonl" --num_epochs 3 \
  --metrics_file "$WORK/test_jsonl.jsonl" > "$WORK/test_jsonl.out" 2>&1 \
  || fail "test split jsonl: $(cat "$WORK/test_jsonl.out")"
train_like dict_test "$WORK/test_jsonl.jsonl" "${TEXT[@]}" --train_file "$SRC/corpus_dict" --split test --num_epochs 3

# --- conversations: parquet (list<struct<role, content>>) as JSONL, assistant-only loss -------
CHAT=(--train_data_field messages --use_chat_template --chat_template_name builtin --train_on assistant --max_steps 6
      --max_length 128)
"$MAGIX" train "${TINY[@]}" "${CHAT[@]}" --train_file "$SRC/conv.jsonl" \
  --metrics_file "$WORK/conv_jsonl.jsonl" > "$WORK/conv.out" 2>&1 || fail "conv jsonl: $(cat "$WORK/conv.out")"
train_like conv_parquet "$WORK/conv_jsonl.jsonl" "${CHAT[@]}" --train_file "$SRC/conv.parquet"
train_like conv_hub "$WORK/conv_jsonl.jsonl" "${CHAT[@]}" --train_file magix/tiny-corpus --split test

# --- resume: a checkpoint of the JSONL run continues from the parquet file -------------------
RUN=("${TEXT[@]}" --max_steps 8 --save_steps 4 --checkpoint_dir "$WORK/ckpt" --metrics_file "$WORK/resumed.jsonl")
"$MAGIX" train "${TINY[@]}" --train_file "$FIXTURES/train/corpus.jsonl" "${RUN[@]}" > /dev/null 2>&1 \
  || fail "checkpointed jsonl run"
rm -rf "$WORK/ckpt/000008"
"$MAGIX" train "${TINY[@]}" --train_file "$SRC/corpus.parquet" "${RUN[@]}" > "$WORK/resume.out" 2>&1 \
  || fail "resume from parquet: $(cat "$WORK/resume.out")"
grep -q "resuming from .*000004" "$WORK/resume.out" || fail "did not resume: $(cat "$WORK/resume.out")"
cmp -s <(untimed "$WORK/jsonl.jsonl") <(untimed "$WORK/resumed.jsonl") \
  || fail "resumed-from-parquet losses differ from the straight JSONL run"
echo "resume: JSONL checkpoint at step 4 continued from parquet, losses equal"

# --- generate: prompts from a hub dataset's split, as from the JSONL --------------------------
GEN=(--model_name_or_path "$WORK/ckpt/000008" --data_field text --max_new_tokens 3 --batch_size 16)
"$MAGIX" generate "${GEN[@]}" --prompts "$FIXTURES/train/corpus.jsonl" \
  --output_file "$WORK/gen_jsonl.jsonl" > "$WORK/gen.out" 2>&1 || fail "generate jsonl: $(cat "$WORK/gen.out")"
"$MAGIX" generate "${GEN[@]}" --prompts magix/tiny-corpus --hf_data_split train \
  --output_file "$WORK/gen_hub.jsonl" > "$WORK/gen.out" 2>&1 || fail "generate hub: $(cat "$WORK/gen.out")"
[ "$(wc -l < "$WORK/gen_hub.jsonl")" -eq 48 ] || fail "generate wrote $(wc -l < "$WORK/gen_hub.jsonl") lines"
cmp -s "$WORK/gen_jsonl.jsonl" "$WORK/gen_hub.jsonl" || fail "generate: hub prompts give other output"
# The reference's default split is 'test': the hub dataset's test split holds no 'text' column.
if "$MAGIX" generate "${GEN[@]}" --prompts magix/tiny-corpus --output_file "$WORK/g.jsonl" \
     > "$WORK/gen.out" 2>&1; then fail "generate read the test split's missing column"; fi
grep -q "test-00000-of-00001.parquet: no column 'text'" "$WORK/gen.out" || fail "generate: $(cat "$WORK/gen.out")"
echo "generate: prompts from magix/tiny-corpus (split train) give the JSONL run's output"
"$MAGIX" generate --help | grep -q -- "--hf_data_config" || fail "generate --help lacks --hf_data_config"
"$MAGIX" generate --help | grep -q -- "--hf_data_split" || fail "generate --help lacks --hf_data_split"

# --- errors -------------------------------------------------------------------------------------
expect_error() {
  local want="$1"; shift
  if "$MAGIX" train "${TINY[@]}" "${TEXT[@]}" "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of 'train $*' lacks '$want': $(cat "$WORK/stderr")"
}
expect_error "huggingface-cli download --repo-type dataset magix/absent" --train_file magix/absent
expect_error "no split 'validation' (splits: [test, train])" --train_file magix/tiny-corpus --split validation
expect_error "no split 'dev' in this DatasetDict (splits: [train, test])" --train_file "$SRC/corpus_dict" --split dev
expect_error "no column 'text' (columns: messages, id)" --train_file "$SRC/conv.parquet"
head -c 300 "$SRC/corpus.parquet" > "$WORK/cut.parquet"
expect_error "$WORK/cut.parquet" --train_file "$WORK/cut.parquet"
head -c 200 "$SRC/corpus.jsonl.gz" > "$WORK/cut.jsonl.gz"
expect_error "truncated" --train_file "$WORK/cut.jsonl.gz"
echo "ok"
