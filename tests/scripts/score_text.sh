#!/usr/bin/env bash
# magix score on text (--data_field): the same numbers as scoring the ids that magix tokenize
# gives for the same texts (whose ids are checked against HF tokenizers elsewhere), and errors
# that name the file and line.
# Usage: bash score_text.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
TOK="$FIXTURES/tokenizers/trained_bytelevel"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

vocab=$(python3 -c "import json;j=json.load(open('$TOK/tokenizer.json'));print(max([*j['model']['vocab'].values(),*[t['id'] for t in j['added_tokens']]])+1)")
python3 - "$work/config.json" "$vocab" <<'PY'
import json, sys
json.dump({"model_type": "llama", "vocab_size": int(sys.argv[2]), "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "num_key_value_heads": 1, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
           "initializer_range": 0.2}, open(sys.argv[1], "w"))
PY
"$MAGIX" init --config "$work/config.json" --output_dir "$work/model" --seed 3 >/dev/null || fail "init"
cat > "$work/texts.jsonl" <<'TXT'
{"text": "Hello world, this is magix."}
{"text": "  leading spaces and digits 12345 and émoji 🙂"}
{"text": "def f(x):\n    return x * 2\n"}
TXT
"$MAGIX" tokenize --tokenizer_name_or_path "$TOK" --input "$work/texts.jsonl" \
  --output_file "$work/ids.jsonl" >/dev/null 2>&1 || fail "tokenize"
python3 -c "
import json
with open('$work/ids.jsonl') as f, open('$work/input_ids.jsonl', 'w') as g:
    for line in f:
        g.write(json.dumps({'input_ids': json.loads(line)['ids']}) + '\n')
"
"$MAGIX" score --model_name_or_path "$work/model" --input "$work/input_ids.jsonl" \
  --output_file "$work/from_ids.jsonl" >/dev/null || fail "score ids"
"$MAGIX" score --model_name_or_path "$work/model" --tokenizer_name_or_path "$TOK" \
  --input "$work/texts.jsonl" --data_field text --output_file "$work/from_text.jsonl" \
  >/dev/null || fail "score text"
cmp -s "$work/from_ids.jsonl" "$work/from_text.jsonl" || fail "text and id scores differ"
[ "$(wc -l < "$work/from_text.jsonl")" -eq 3 ] || fail "expected 3 lines"

printf '{"text": "fine"}\n{"txt": "no field"}\n' > "$work/bad.jsonl"
err=$("$MAGIX" score --model_name_or_path "$work/model" --tokenizer_name_or_path "$TOK" \
  --input "$work/bad.jsonl" --data_field text --output_file "$work/bad_out.jsonl" 2>&1) \
  && fail "bad record accepted"
echo "$err" | grep -q "bad.jsonl:2" || fail "error does not name file:line: $err"
[ ! -e "$work/bad_out.jsonl" ] || fail "output left behind"
echo "score_text: ok"
