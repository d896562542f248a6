#!/usr/bin/env bash
# magix tokenize against the trained byte-level fixture (ids from HF tokenizers 0.23.3):
# encode with/without special tokens, decode, bad lines, atomic output.
# Usage: tokenize_cli.sh <magix> <fixtures-dir>
set -euo pipefail
magix="$1"
fixtures="$2"
tok="$fixtures/tokenizers/trained_bytelevel"
expected="$fixtures/tokenizers/trained_bytelevel.jsonl"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$magix" tokenize --help > "$tmp/help.txt"
grep -q -- "--tokenizer_name_or_path" "$tmp/help.txt"

# Inputs: the fixture texts under the field "content".
python3 - "$expected" "$tmp/in.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as out:
    for line in f:
        out.write(json.dumps({"content": json.loads(line)["text"]}) + "\n")
PY

"$magix" tokenize --tokenizer_name_or_path "$tok" --input "$tmp/in.jsonl" --data_field content \
  --output_file "$tmp/ids.jsonl"
"$magix" tokenize --tokenizer-name-or-path "$tok" --input "$tmp/in.jsonl" --data-field content \
  --add_special_tokens false --output_file "$tmp/ids_nospecial.jsonl"
"$magix" tokenize --tokenizer_name_or_path "$tok" --input "$tmp/ids.jsonl" --decode \
  --output_file "$tmp/text.jsonl"
"$magix" tokenize --tokenizer_name_or_path "$tok" --input "$tmp/ids.jsonl" --decode \
  --skip_special_tokens true --output_file "$tmp/text_skip.jsonl"

python3 - "$expected" "$tmp" <<'PY'
import json, sys
exp = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
d = sys.argv[2]
def load(name):
    return [json.loads(l) for l in open(f"{d}/{name}", encoding="utf-8")]
ids, nos, text, skip = load("ids.jsonl"), load("ids_nospecial.jsonl"), load("text.jsonl"), load("text_skip.jsonl")
assert len(ids) == len(exp) == len(nos) == len(text) == len(skip), (len(ids), len(exp))
for e, a, b, t, s in zip(exp, ids, nos, text, skip):
    assert a["ids"] == e["ids"], (e["text"][:60], a["ids"][:20], e["ids"][:20])
    assert b["ids"] == e["ids_no_special"], e["text"][:60]
    assert t["text"] == e["decoded_with_special"], (t["text"][:60], e["decoded_with_special"][:60])
    assert s["text"] == e["decoded"], e["text"][:60]
print(f"tokenize_cli: {len(exp)} lines match HF tokenizers")
PY

# A bad line: an error naming the file and line, non-zero exit, no output file left behind.
printf '{"content": "ok"}\n{"content": 5}\n' > "$tmp/bad.jsonl"
if "$magix" tokenize --tokenizer_name_or_path "$tok" --input "$tmp/bad.jsonl" --data_field content \
     --output_file "$tmp/bad_out.jsonl" 2> "$tmp/err.txt"; then
  echo "FAIL: bad line accepted"; exit 1
fi
grep -q "bad.jsonl:2" "$tmp/err.txt" || { echo "FAIL: message does not name the line:"; cat "$tmp/err.txt"; exit 1; }
[ ! -e "$tmp/bad_out.jsonl" ] && [ ! -e "$tmp/bad_out.jsonl.tmp" ] || { echo "FAIL: output left behind"; exit 1; }

printf '{"ids": [1, 2, 99999999]}\n' > "$tmp/bad_ids.jsonl"
if "$magix" tokenize --tokenizer_name_or_path "$tok" --input "$tmp/bad_ids.jsonl" --decode \
     --output_file "$tmp/bad_ids_out.jsonl" 2> "$tmp/err2.txt"; then
  echo "FAIL: out-of-range id accepted"; exit 1
fi
grep -q "bad_ids.jsonl:1" "$tmp/err2.txt" || { echo "FAIL:"; cat "$tmp/err2.txt"; exit 1; }

printf 'not json\n' > "$tmp/bad_json.jsonl"
if "$magix" tokenize --tokenizer_name_or_path "$tok" --input "$tmp/bad_json.jsonl" \
     --output_file "$tmp/o.jsonl" 2> "$tmp/err3.txt"; then
  echo "FAIL: invalid JSON accepted"; exit 1
fi
grep -q "bad_json.jsonl:1" "$tmp/err3.txt" || { echo "FAIL:"; cat "$tmp/err3.txt"; exit 1; }

if "$magix" tokenize --tokenizer_name_or_path "$tmp/nowhere" --input "$tmp/in.jsonl" \
     --output_file "$tmp/o.jsonl" 2> "$tmp/err4.txt"; then
  echo "FAIL: missing tokenizer accepted"; exit 1
fi
echo "tokenize_cli: OK"
