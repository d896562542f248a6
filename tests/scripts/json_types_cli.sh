#!/usr/bin/env bash
# Untrusted JSON files with a field of the wrong type, through the CLI: each command exits
# non-zero with a message naming the file, the key and the types (never a JSON library
# exception's "[json.exception.type_error...]"): config.json (score), tokenizer.json (tokenize),
# adapter_config.json (generate --lora), and a config whose top level is not an object (init).
# Usage: bash json_types_cli.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
export OMP_NUM_THREADS=1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_error <expected text> <command...>: the command fails and stderr holds the text.
expect_error() {
  local want="$1"
  shift
  if "$@" > "$WORK/out.txt" 2> "$WORK/err.txt"; then
    fail "accepted: $*"
  fi
  grep -qF -- "$want" "$WORK/err.txt" || { cat "$WORK/err.txt" >&2; fail "message lacks: $want"; }
  if grep -q "json.exception" "$WORK/err.txt"; then
    cat "$WORK/err.txt" >&2
    fail "a JSON library message: $*"
  fi
}

edit_json() {  # edit_json <file> <python expression on j>
  python3 - "$1" "$2" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
j = json.load(open(path))
exec(expr)
json.dump(j, open(path, "w"))
PY
}

# config.json: "vocab_size" a string.
cp -r "$FIXTURES/models/llama_gqa" "$WORK/model"
edit_json "$WORK/model/config.json" 'j["vocab_size"] = "256"'
expect_error "config.json: \"vocab_size\" must be an integer, found string \"256\"" \
  "$MAGIX" score --model_name_or_path "$WORK/model" \
  --input "$FIXTURES/models/llama_gqa/score_input.jsonl" --output_file "$WORK/scores.jsonl"

# tokenizer.json: an added token's "id" a string.
cp -r "$FIXTURES/tokenizers/trained_bytelevel" "$WORK/tok"
edit_json "$WORK/tok/tokenizer.json" 'j["added_tokens"][0]["id"] = "0"'
printf '{"text": "hello"}\n' > "$WORK/in.jsonl"
expect_error "tokenizer.json: \"added_tokens\"[0]: \"id\" must be an integer, found string \"0\"" \
  "$MAGIX" tokenize --tokenizer_name_or_path "$WORK/tok" --input "$WORK/in.jsonl" \
  --output_file "$WORK/ids.jsonl"

# adapter_config.json: "r" a string, "target_modules" an object.
cp -r "$FIXTURES/lora/qwen2_qv_down/peft" "$WORK/peft"
edit_json "$WORK/peft/adapter_config.json" 'j["r"] = "2"'
printf 'Hello\n' > "$WORK/prompts.txt"
expect_error "adapter_config.json: \"r\" must be an integer, found string \"2\"" \
  "$MAGIX" generate --model_name_or_path "$FIXTURES/models/qwen2" --lora "$WORK/peft" \
  --tokenizer_name_or_path "$FIXTURES/tokenizers/trained_bytelevel" \
  --prompts "$WORK/prompts.txt" --max_new_tokens 2 --output_file "$WORK/gen.jsonl"
edit_json "$WORK/peft/adapter_config.json" 'j["r"] = 2; j["target_modules"] = {"q_proj": 1}'
expect_error "adapter_config.json: \"target_modules\" must be a list of strings, found object" \
  "$MAGIX" generate --model_name_or_path "$FIXTURES/models/qwen2" --lora "$WORK/peft" \
  --tokenizer_name_or_path "$FIXTURES/tokenizers/trained_bytelevel" \
  --prompts "$WORK/prompts.txt" --max_new_tokens 2 --output_file "$WORK/gen.jsonl"

# A config whose top level is a list.
echo '[]' > "$WORK/list.json"
expect_error "a model config must be a JSON object, found list" \
  "$MAGIX" init --config "$WORK/list.json" --output_dir "$WORK/init"
echo "json_types_cli: OK"
