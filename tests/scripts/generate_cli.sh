#!/usr/bin/env bash
# magix generate: JSONL output in input order, both temperature spellings, reproducible sampling,
# stop strings, chat prompts (no silent fallback to the built-in format), generation_config.json
# defaults (flags given win); bad input fails with a message naming the file (and line), a
# non-zero exit and no output file.
# usage: generate_cli.sh MAGIX FIXTURES_DIR
set -euo pipefail
MAGIX="$1"
FIX="$2"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT

# A small random Llama (vocab 768 > the tokenizer's 705 ids, as padded real vocabularies are)
# with the trained byte-level tokenizer fixture.
cat > "$T/config.json" <<'EOF'
{"model_type": "llama", "vocab_size": 768, "hidden_size": 64, "intermediate_size": 128,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "initializer_range": 1.0,
 "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 700, "eos_token_id": 0,
 "hidden_act": "silu"}
EOF
"$MAGIX" init --config "$T/config.json" --output_dir "$T/model" --seed 5 >/dev/null
cp "$FIX/tokenizers/trained_bytelevel/tokenizer.json" \
   "$FIX/tokenizers/trained_bytelevel/tokenizer_config.json" "$T/model/"
printf 'Hello world\nhéllo wörld 日本\nThe quick brown fox\na\nfoo bar baz\n' > "$T/prompts.txt"
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
with open(f"{t}/prompts.jsonl", "w") as f:
    for line in open(f"{t}/prompts.txt", encoding="utf-8"):
        f.write(json.dumps({"id": 1, "question": line.rstrip("\n")}) + "\n")
PY

gen() { "$MAGIX" generate --model_name_or_path "$T/model" --max_new_tokens 10 "$@" >/dev/null; }

gen --prompts "$T/prompts.txt" --output_file "$T/greedy.jsonl" --batch_size 2
gen --prompts "$T/prompts.jsonl" --data_field question --output_file "$T/greedy_jsonl.jsonl" \
    --batch_size 5 --pad_to_multiple_of 8
gen --prompts "$T/prompts.txt" --output_file "$T/s1.jsonl" --sample --seed 3 --temperature 1.0 \
    --top_k 50 --top_p 0.9
gen --prompts "$T/prompts.txt" --output_file "$T/s2.jsonl" --sample --seed 3 --tempearature 1.0 \
    --top_k 50 --top_p 0.9 --batch_size 1
gen --prompts "$T/prompts.txt" --output_file "$T/s3.jsonl" --sample --seed 4 --temperature 1.0
# The tokenizer has no chat template: --use_chat_template alone is an error naming the way to the
# built-in format (no silent fallback); --chat_template_name builtin asks for it.
if "$MAGIX" generate --model_name_or_path "$T/model" --prompts "$T/prompts.txt" \
    --output_file "$T/nochat.jsonl" --use_chat_template > "$T/nochat.log" 2>&1; then
  echo "FAIL: --use_chat_template without a template was accepted"; exit 1
fi
grep -q -- "--chat_template_name builtin" "$T/nochat.log" \
  || { echo "FAIL: the error does not name --chat_template_name builtin"; cat "$T/nochat.log"; exit 1; }
[ ! -e "$T/nochat.jsonl" ] || { echo "FAIL: output left behind"; exit 1; }
gen --prompts "$T/prompts.txt" --output_file "$T/chat.jsonl" --use_chat_template \
    --chat_template_name builtin --max_length 64

python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
def rows(name):
    return [json.loads(l) for l in open(f"{t}/{name}.jsonl", encoding="utf-8")]
prompts = [l.rstrip("\n") for l in open(f"{t}/prompts.txt", encoding="utf-8")]
greedy = rows("greedy")
assert [r["prompt"] for r in greedy] == prompts, greedy
assert all(set(r) == {"prompt", "generated"} and isinstance(r["generated"], str) for r in greedy)
assert rows("greedy_jsonl") == greedy, "jsonl input / batch size / padding changed greedy output"
assert rows("s1") == rows("s2"), "same seed, other batch size and spelling: other samples"
assert rows("s3") != rows("s1"), "another seed gave the same samples"
assert [r["prompt"] for r in rows("chat")] == prompts
assert not any(n.endswith(".partial") for n in __import__("os").listdir(t))
# A stop string taken from the middle of a greedy output ends that output just before it.
best = max(range(len(greedy)), key=lambda i: len(greedy[i]["generated"]))
text = greedy[best]["generated"]
assert len(text) >= 4, greedy
stop = text[2:4]
open(f"{t}/stop.txt", "w", encoding="utf-8").write(stop)
open(f"{t}/expect_stop.txt", "w", encoding="utf-8").write(text[: text.find(stop)])
print("generate outputs ok")
PY
gen --prompts "$T/prompts.txt" --output_file "$T/stop.jsonl" --stop "$(cat "$T/stop.txt")" \
    --stop "never-appears"
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
greedy = [json.loads(l) for l in open(f"{t}/greedy.jsonl", encoding="utf-8")]
stopped = [json.loads(l) for l in open(f"{t}/stop.jsonl", encoding="utf-8")]
stop = open(f"{t}/stop.txt", encoding="utf-8").read()
for g, s in zip(greedy, stopped):
    i = g["generated"].find(stop)
    want = g["generated"] if i < 0 else g["generated"][:i]
    assert s["generated"] == want, (stop, g, s)
print("stop strings ok")
PY

# Bad input: non-zero exit, a message naming the file (and line), no output file.
expect_fail() {  # expect_fail TEXT ARGS...: the command fails and stderr contains TEXT
  local text="$1"; shift
  rm -f "$T/bad.jsonl" "$T/bad.jsonl.partial"
  if "$MAGIX" generate --output_file "$T/bad.jsonl" "$@" \
      >"$T/out.log" 2>"$T/err.log"; then
    echo "FAIL: succeeded: $*"; exit 1
  fi
  grep -qF -- "$text" "$T/err.log" || { echo "FAIL: no '$text' in:"; cat "$T/err.log"; exit 1; }
  [ ! -e "$T/bad.jsonl" ] && [ ! -e "$T/bad.jsonl.partial" ] || { echo "FAIL: output left"; exit 1; }
}
expect_fail "$T/missing.txt" --model_name_or_path "$T/model" --prompts "$T/missing.txt"
printf '{"prompt": "ok"}\n{"prompt": "broken\n' > "$T/broken.jsonl"
expect_fail "broken.jsonl:2" --model_name_or_path "$T/model" --prompts "$T/broken.jsonl"
printf '{"prompt": "ok"}\n{"prompt": 7}\n' > "$T/notext.jsonl"
expect_fail "notext.jsonl:2" --model_name_or_path "$T/model" --prompts "$T/notext.jsonl"
expect_fail "prompts.jsonl:1" --model_name_or_path "$T/model" --prompts "$T/prompts.jsonl" --data_field prompt
: > "$T/empty.txt"
expect_fail "holds no prompts" --model_name_or_path "$T/model" --prompts "$T/empty.txt"
expect_fail "top_p" --model_name_or_path "$T/model" --prompts "$T/prompts.txt" --sample --top_p 1.5
expect_fail "temperature" --model_name_or_path "$T/model" --prompts "$T/prompts.txt" --sample --temperature 0
expect_fail "--model_type gemma" --model_name_or_path "$T/model" --prompts "$T/prompts.txt" --model_type gemma
expect_fail "$T/nowhere" --prompts "$T/prompts.txt" --model_name_or_path "$T/nowhere"
if "$MAGIX" generate --prompts "$T/prompts.txt" --model_name_or_path "$T/model" \
    --output_file "$T/no/such/dir/out.jsonl" >/dev/null 2>"$T/err.log"; then
  echo "FAIL: wrote into a missing folder"; exit 1
fi
grep -qF "does not exist" "$T/err.log" || { cat "$T/err.log"; exit 1; }
echo "bad input ok"

# generation_config.json in the model folder gives defaults; flags given on the command line win.
printf '{"max_new_tokens": 2, "eos_token_id": [701, 702]}\n' > "$T/model/generation_config.json"
"$MAGIX" generate --model_name_or_path "$T/model" --prompts "$T/prompts.txt" \
  --output_file "$T/gc_file.jsonl" > "$T/gc_file.out" 2> "$T/gc_file.err" \
  || { echo "FAIL: generate with generation_config.json"; cat "$T/gc_file.err"; exit 1; }
grep -q "generate: defaults from $T/model/generation_config.json: max_new_tokens 2, eos_token_id \[701, 702\]" \
  "$T/gc_file.err" || { echo "FAIL: the defaults taken are not logged"; cat "$T/gc_file.err"; exit 1; }
"$MAGIX" generate --model_name_or_path "$T/model" --prompts "$T/prompts.txt" --max_new_tokens 6 \
  --output_file "$T/gc_flag.jsonl" > "$T/gc_flag.out" 2> "$T/gc_flag.err" \
  || { echo "FAIL: generate with a flag over generation_config.json"; exit 1; }
file_tokens=$(sed -n 's/^generated tokens: //p' "$T/gc_file.out")
flag_tokens=$(sed -n 's/^generated tokens: //p' "$T/gc_flag.out")
[ "$file_tokens" -le 10 ] && [ "$flag_tokens" -gt 10 ] \
  || { echo "FAIL: generated tokens: $file_tokens with the file's limit, $flag_tokens with the flag"; exit 1; }
grep -q "max_new_tokens" "$T/gc_flag.err" && { echo "FAIL: a given flag was replaced"; exit 1; }
echo "generation_config ok"
