#!/usr/bin/env bash
# magix generate --mesh_shape D M under mpirun writes the same JSONL as one process, greedy and
# sampled: data ranks take batches in turn (7 prompts in batches of 3: on 2 data ranks the
# second round leaves data rank 1 without a batch), the model axis splits heads, MLP and vocabulary.
# Usage: bash generate_cli_mesh.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIX="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cat > "$T/config.json" <<'JSON'
{"model_type": "llama", "vocab_size": 768, "hidden_size": 64, "intermediate_size": 128,
 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "initializer_range": 1.0,
 "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 700, "eos_token_id": 0,
 "hidden_act": "silu"}
JSON
"$MAGIX" init --config "$T/config.json" --output_dir "$T/model" --seed 9 >/dev/null || exit 1
cp "$FIX/tokenizers/trained_bytelevel/tokenizer.json" \
   "$FIX/tokenizers/trained_bytelevel/tokenizer_config.json" "$T/model/"
printf 'Hello world\nhéllo wörld 日本\nThe quick brown fox\na\nfoo bar baz\nxyz\n42 is the answer\n' \
  > "$T/prompts.txt"
run() {  # run NP D M OUT [flags...]
  local np=$1 d=$2 m=$3 out=$4; shift 4
  timeout 60 mpirun --oversubscribe -np "$np" "$MAGIX" generate --prompts "$T/prompts.txt" \
    --model_name_or_path "$T/model" --max_new_tokens 8 --batch_size 3 --mesh_shape "$d" "$m" \
    --output_file "$out" "$@" >"$T/log" 2>&1 || { echo "FAIL: mesh $d x $m $*"; cat "$T/log"; return 1; }
}
"$MAGIX" generate --prompts "$T/prompts.txt" --model_name_or_path "$T/model" --max_new_tokens 8 \
  --batch_size 3 --output_file "$T/one.jsonl" >/dev/null || { echo "FAIL: 1 process"; exit 1; }
"$MAGIX" generate --prompts "$T/prompts.txt" --model_name_or_path "$T/model" --max_new_tokens 8 \
  --batch_size 3 --output_file "$T/one_s.jsonl" --sample --seed 5 --temperature 1.0 >/dev/null \
  || { echo "FAIL: 1 process, sampled"; exit 1; }
fail=0
for spec in "2 2 1" "2 1 2" "4 2 2"; do
  set -- $spec
  np=$1 d=$2 m=$3
  run "$np" "$d" "$m" "$T/mesh.jsonl" || { fail=1; continue; }
  run "$np" "$d" "$m" "$T/mesh_s.jsonl" --sample --seed 5 --temperature 1.0 || { fail=1; continue; }
  if cmp -s "$T/one.jsonl" "$T/mesh.jsonl" && cmp -s "$T/one_s.jsonl" "$T/mesh_s.jsonl"; then
    echo "mesh $d x $m: same output as one process ($(wc -l < "$T/mesh.jsonl") lines)"
  else
    echo "FAIL: mesh $d x $m output differs"; diff "$T/one.jsonl" "$T/mesh.jsonl"
    diff "$T/one_s.jsonl" "$T/mesh_s.jsonl"; fail=1
  fi
done
exit $fail
