#!/usr/bin/env bash
# Config values and flags are validated before any work: sizes that cannot fit in this machine's
# memory are refused naming the value and what it would need (never std::bad_alloc), bad config
# values (rms_norm_eps, max_position_embeddings, token ids outside the vocabulary) and non-finite
# flags are clear errors naming the key or flag. Every command runs under `ulimit -v`, so a
# regression fails by running out of address space instead of allocating gigabytes.
# Usage: bash validation_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
TOK="$FIXTURES/tokenizers/trained_bytelevel"
LIMIT_KB=4000000   # 4 GB of address space
expect_error() {
  local want="$1"; shift
  if (ulimit -v $LIMIT_KB; exec "$MAGIX" "$@") > "$WORK/stdout" 2> "$WORK/stderr"; then
    fail "expected an error from: $*"
  fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
  ! grep -q "bad_alloc" "$WORK/stderr" || fail "'$*' ran out of memory: $(cat "$WORK/stderr")"
}
# config <name> <python expression editing dict c>: a copy of the tiny config, edited.
config() {
  python3 - "$FIXTURES/train/tiny_config.json" "$WORK/$1.json" "$2" <<'PY' || fail "config $1"
import json, sys
c = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(c, open(sys.argv[2], "w"))
PY
}
(ulimit -v $LIMIT_KB; exec "$MAGIX" init --config "$FIXTURES/train/tiny_config.json" \
  --output_dir "$WORK/ok" > /dev/null 2> "$WORK/stderr") || fail "init under ulimit: $(cat "$WORK/stderr")"

config huge 'c["hidden_size"] = 1000000000'
expect_error "hidden_size 1000000000 with num_hidden_layers 2" init --config "$WORK/huge.json" --output_dir "$WORK/m"
expect_error "for the weights would need" init --config "$WORK/huge.json" --output_dir "$WORK/m"
expect_error "this machine has" init --config "$WORK/huge.json" --output_dir "$WORK/m"
expect_error "for the weights, gradients and optimizer state would need" train \
  --model_config "$WORK/huge.json" --tokenizer_name "$TOK" --train_file "$FIXTURES/train/corpus.jsonl"
config vocab 'c["vocab_size"] = 2000000000'
expect_error "vocab_size 2000000000" init --config "$WORK/vocab.json" --output_dir "$WORK/m"
config eps 'c["rms_norm_eps"] = -1'
expect_error "$WORK/eps.json: rms_norm_eps must be a positive finite number, got -1" init --config "$WORK/eps.json" --output_dir "$WORK/m"
config maxpos 'c["max_position_embeddings"] = 0'
expect_error "$WORK/maxpos.json: max_position_embeddings must be positive, got 0" init --config "$WORK/maxpos.json" --output_dir "$WORK/m"
config eos 'c["eos_token_id"] = 5000'
expect_error "$WORK/eos.json: eos_token_id 5000 is outside the vocabulary [0, 768)" init --config "$WORK/eos.json" --output_dir "$WORK/m"
config bos 'c["bos_token_id"] = -3'
expect_error "bos_token_id -3 is outside the vocabulary" init --config "$WORK/bos.json" --output_dir "$WORK/m"
config theta 'c["rope_theta"] = 0'
expect_error "rope_theta must be a positive finite number" init --config "$WORK/theta.json" --output_dir "$WORK/m"
[ ! -e "$WORK/m" ] || fail "a refused init wrote $WORK/m"

# Flags of train.
TRAIN=(train --model_config "$FIXTURES/train/tiny_config.json" --tokenizer_name "$TOK"
       --train_file "$FIXTURES/train/corpus.jsonl" --max_steps 1 --batch_size 8)
expect_error "--max_grad_norm must be a finite number" "${TRAIN[@]}" --max_grad_norm nan
expect_error "--learning_rate must be a finite number" "${TRAIN[@]}" --learning_rate inf
expect_error "--learning_rate must be a finite number" "${TRAIN[@]}" --learning_rate 1e39
expect_error "--weight_decay must be a finite number" "${TRAIN[@]}" --weight_decay inf
expect_error "--adam_eps must be a positive finite number" "${TRAIN[@]}" --adam_eps inf
expect_error "--max_length must be below" "${TRAIN[@]}" --max_length 3000000000
expect_error "--max_length 100000000 with --batch_size 8 (8 rows per data rank and micro-batch): the activations would need" \
  "${TRAIN[@]}" --max_length 100000000

# generate: a KV cache that cannot fit.
cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" "$WORK/ok/"
printf 'Hello\n' > "$WORK/prompts.txt"
expect_error "the KV cache would need" generate --model_name_or_path "$WORK/ok" \
  --prompts "$WORK/prompts.txt" --max_length 2147483647 --output_file "$WORK/gen.jsonl"
[ ! -e "$WORK/gen.jsonl" ] || fail "generate wrote output"
expect_error "top_p must be in (0, 1]" generate --model_name_or_path "$WORK/ok" \
  --prompts "$WORK/prompts.txt" --sample --top_p nan --output_file "$WORK/gen.jsonl"
echo "validation_cli: OK"
