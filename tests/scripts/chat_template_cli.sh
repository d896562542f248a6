#!/usr/bin/env bash
# magix chat-template: renders JSONL conversations, reports rejected ones, fails cleanly on bad input.
# usage: chat_template_cli.sh MAGIX FIXTURES_DIR
set -euo pipefail
MAGIX="$1"
FIX="$2/chat_templates"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT

# A tokenizer folder with the ChatML template (ours) and one with the Mistral-style template.
python3 - "$FIX" "$T" <<'PY'
import json, os, sys
fix, t = sys.argv[1], sys.argv[2]
for name in ("chatml", "mistral_inst"):
    os.makedirs(f"{t}/{name}")
    src = open(f"{fix}/templates/{name}.jinja").read()
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template": src}, open(f"{t}/{name}/tokenizer_config.json", "w"))
os.makedirs(f"{t}/plain")
json.dump({"eos_token": "</s>"}, open(f"{t}/plain/tokenizer_config.json", "w"))
with open(f"{t}/in.jsonl", "w") as f:
    f.write(json.dumps({"messages": [{"role": "user", "content": "Hi é"}], "add_generation_prompt": True}) + "\n")
    f.write("\n")
    f.write(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    f.write(json.dumps({"messages": [{"role": "user", "content": "1"}, {"role": "user", "content": "2"}]}) + "\n")
PY

"$MAGIX" chat-template --tokenizer_name_or_path "$T/chatml" --input "$T/in.jsonl" --output_file "$T/chatml.jsonl"
"$MAGIX" chat-template --tokenizer-name-or-path "$T/mistral_inst" --input "$T/in.jsonl" --output-file "$T/mistral.jsonl"
# No template: an error naming the built-in format's option (no silent fallback), then asked for.
if "$MAGIX" chat-template --tokenizer_name_or_path "$T/plain" --input "$T/in.jsonl" \
    --output_file "$T/plain.jsonl" 2> "$T/plain_err.txt"; then
  echo "FAIL: a tokenizer without a template was rendered"; exit 1
fi
grep -q -- "--chat_template_name builtin" "$T/plain_err.txt" || { cat "$T/plain_err.txt"; exit 1; }
"$MAGIX" chat-template --tokenizer_name_or_path "$T/plain" --input "$T/in.jsonl" --output_file "$T/plain.jsonl" \
  --chat_template_name builtin

python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
def rows(name):
    return [json.loads(l) for l in open(f"{t}/{name}.jsonl")]
chatml = rows("chatml")
assert chatml == [
    {"text": "<|im_start|>user\nHi é<|im_end|>\n<|im_start|>assistant\n"},
    {"text": "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"},
    {"text": "<|im_start|>user\n1<|im_end|>\n<|im_start|>user\n2<|im_end|>\n"},
], chatml
mistral = rows("mistral")
assert mistral == [
    {"text": "<s>[INST] Hi é [/INST]"},
    {"text": "<s>[INST] a [/INST]b</s>"},
    {"error": "Conversation roles must alternate user/assistant/user/assistant/..."},
], mistral
plain = rows("plain")
assert plain == [
    {"text": "<|user|>\nHi é</s><|assistant|>\n"},
    {"text": "<|user|>\na</s>\n<|assistant|>\nb</s>"},
    {"text": "<|user|>\n1</s>\n<|user|>\n2</s>"},
], plain
PY

# Invalid JSON: non-zero exit, the message names file and line, no output left behind.
printf '{"messages": [{"role": "user", "content": "ok"}]}\n{not json\n' > "$T/bad.jsonl"
if "$MAGIX" chat-template --tokenizer_name_or_path "$T/chatml" --input "$T/bad.jsonl" --output_file "$T/bad_out.jsonl" 2> "$T/err.txt"; then
  echo "expected failure on invalid JSON"; exit 1
fi
grep -q "bad.jsonl:2: invalid JSON" "$T/err.txt" || { cat "$T/err.txt"; exit 1; }
test ! -e "$T/bad_out.jsonl" && test ! -e "$T/bad_out.jsonl.tmp"

# A template syntax error names its line and column.
python3 -c "import json; json.dump({'chat_template': 'ok\n  {{ 1 + }}'}, open('$T/broken.json', 'w'))"
mkdir "$T/broken" && mv "$T/broken.json" "$T/broken/tokenizer_config.json"
if "$MAGIX" chat-template --tokenizer_name_or_path "$T/broken" --input "$T/in.jsonl" --output_file "$T/o.jsonl" 2> "$T/err.txt"; then
  echo "expected failure on a template syntax error"; exit 1
fi
grep -q "line 2, column 10" "$T/err.txt" || { cat "$T/err.txt"; exit 1; }

# A missing folder is a clear error.
if "$MAGIX" chat-template --tokenizer_name_or_path "$T/nope" --input "$T/in.jsonl" --output_file "$T/o.jsonl" 2> "$T/err.txt"; then
  echo "expected failure on a missing tokenizer"; exit 1
fi
"$MAGIX" chat-template --help | grep -q -- "--chat_template_name"
echo "chat_template_cli: OK"
