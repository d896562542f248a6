#!/usr/bin/env bash
# magix init + magix score: a random model from a config, scores of the llama_gqa fixture
# against transformers' numbers, and clean errors on bad input.
# Usage: bash init_score.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
MODEL="$FIXTURES/models/llama_gqa"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_error <substring> <command...>: the command must exit non-zero, print the substring
# on stderr and leave no output file behind.
expect_error() {
  local want="$1"; shift
  rm -f "$WORK/out.jsonl"
  if "$@" > "$WORK/stdout" 2> "$WORK/stderr"; then fail "expected an error from: $*"; fi
  grep -qF -- "$want" "$WORK/stderr" || fail "stderr of '$*' lacks '$want': $(cat "$WORK/stderr")"
  [ ! -e "$WORK/out.jsonl" ] || fail "a failed score left $WORK/out.jsonl behind"
}

# --- score the fixture model against transformers (relative tolerance 1e-5 on nll) ---------
for bs in 1 3; do
  "$MAGIX" score --model_name_or_path "$MODEL" --input "$MODEL/score_input.jsonl" \
    --output_file "$WORK/scores.jsonl" --batch-size $bs > "$WORK/summary" \
    || fail "magix score failed (batch size $bs)"
  grep -q "examples: 4" "$WORK/summary" || fail "summary: $(cat "$WORK/summary")"
  python3 - "$WORK/scores.jsonl" "$MODEL/score_expected.jsonl" <<'PY' || fail "scores differ (batch size $bs)"
import json, math, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [json.loads(l) for l in open(sys.argv[2])]
assert len(got) == len(want), (len(got), len(want))
for g, w in zip(got, want):
    assert set(g) == {"index", "tokens", "nll", "mean_nll", "ppl"}, g
    assert g["index"] == w["index"] and g["tokens"] == w["tokens"], (g, w)
    for k in ("nll", "mean_nll", "ppl"):
        assert math.isclose(g[k], w[k], rel_tol=1e-5), (k, g, w)
PY
done

# --- init: deterministic, loadable, refuses to overwrite ----------------------------------
cat > "$WORK/config.json" <<'JSON'
{"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "rms_norm_eps": 1e-5, "initializer_range": 0.02, "tie_word_embeddings": false}
JSON
"$MAGIX" init --config "$WORK/config.json" --output_dir "$WORK/m1" --seed 3 > /dev/null || fail "init"
"$MAGIX" init --config "$WORK/config.json" --output-dir "$WORK/m2" --seed 3 > /dev/null || fail "init 2"
"$MAGIX" init --config "$WORK/config.json" --output_dir "$WORK/m3" --seed 4 > /dev/null || fail "init 3"
"$MAGIX" init --config "$WORK/config.json" --output_dir "$WORK/mb" --seed 3 --dtype bfloat16 > /dev/null || fail "init bf16"
[ -f "$WORK/m1/config.json" ] && [ -f "$WORK/m1/model.safetensors" ] || fail "init wrote no model"
cmp -s "$WORK/m1/model.safetensors" "$WORK/m2/model.safetensors" || fail "same seed, different weights"
cmp -s "$WORK/m1/model.safetensors" "$WORK/m3/model.safetensors" && fail "different seeds, same weights"
grep -q '"dtype": "bfloat16"' "$WORK/mb/config.json" || fail "bf16 config lacks dtype"
expect_error "already holds model files" "$MAGIX" init --config "$WORK/config.json" --output_dir "$WORK/m1" --seed 3
"$MAGIX" init --config "$WORK/config.json" --output_dir "$WORK/m1" --seed 3 --overwrite > /dev/null || fail "--overwrite"
echo '{"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4, "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}' > "$WORK/bad_config.json"
expect_error "rope type 'dynamic'" "$MAGIX" init --config "$WORK/bad_config.json" --output_dir "$WORK/bad" --seed 1
[ ! -e "$WORK/bad/config.json" ] || fail "failed init left a config.json"

# A random model of vocab 64 scores near log(64) per token.
printf '{"input_ids": [1, 5, 9, 33, 2]}\n{"input_ids": [7, 7]}\n' > "$WORK/in.jsonl"
for m in m1 mb; do
  "$MAGIX" score --model_name_or_path "$WORK/$m" --input "$WORK/in.jsonl" --output_file "$WORK/s.jsonl" > /dev/null || fail "score $m"
  python3 - "$WORK/s.jsonl" <<'PY' || fail "scores of the random model $m"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["tokens"] for r in rows] == [4, 1], rows
for r in rows:
    assert abs(r["mean_nll"] - math.log(64)) < 0.5, r
    assert math.isclose(r["ppl"], math.exp(r["mean_nll"]), rel_tol=1e-9), r
PY
done

# --- bad input: one clear error naming file and line, no output file ---------------------
score() { "$MAGIX" score --model_name_or_path "$MODEL" --output_file "$WORK/out.jsonl" --input "$@"; }
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 2\n' > "$WORK/bad1.jsonl"
expect_error "bad1.jsonl:2: invalid JSON" score "$WORK/bad1.jsonl"
printf '{"input_ids": [1, 2, 3]}\n{"text": "hi"}\n' > "$WORK/bad2.jsonl"
expect_error "bad2.jsonl:2: no \"input_ids\"" score "$WORK/bad2.jsonl"
printf '{"input_ids": [1, "a"]}\n' > "$WORK/bad3.jsonl"
expect_error "bad3.jsonl:1: \"input_ids\" holds a non-integer" score "$WORK/bad3.jsonl"
printf '\n{"input_ids": [1, 256]}\n' > "$WORK/bad4.jsonl"
expect_error "bad4.jsonl:2: token id 256 is outside the vocabulary" score "$WORK/bad4.jsonl"
printf '{"input_ids": [5]}\n' > "$WORK/bad5.jsonl"
expect_error "bad5.jsonl:1: needs at least 2 tokens" score "$WORK/bad5.jsonl"
printf '{"input_ids": 5}\n' > "$WORK/bad6.jsonl"
expect_error "bad6.jsonl:1: \"input_ids\" must be a list" score "$WORK/bad6.jsonl"
expect_error "cannot open --input" score "$WORK/missing.jsonl"
expect_error "batch_size must be positive" score "$MODEL/score_input.jsonl" --batch_size 0
echo "init_score: OK"
