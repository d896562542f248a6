#!/usr/bin/env bash
# End to end on qwen3, gemma2 and gemma3_text (run by hand, from the repository root, after the
# build; needs mpirun and /work/refenv): each fixture's config with the test tokenizer's
# vocabulary, 12 steps of `magix train` on a 2x2 mesh (FSDP + tensor parallel), `magix export`,
# tools/reference/check_export.py (transformers on the export vs `magix score` on the step); then
# 6 steps of `--bf16` on 1x1 and of `train-lora` on 1x2 from the export. Work folders:
# ${WORK:-/tmp/magix_new_families}/<family>.
set -eu
M=build/bin/magix
FX=tests/fixtures
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
for fam in ${FAMS:-qwen3 gemma2 gemma3_text}; do
  W=${WORK:-/tmp/magix_new_families}/$fam; rm -rf $W; mkdir -p $W
  /work/refenv/bin/python - "$FX/models/$fam/config.json" "$W/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(vocab_size=768, bos_token_id=700, eos_token_id=0, pad_token_id=None)
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
  COMMON=(--tokenizer_name $FX/tokenizers/trained_bytelevel
          --train_file $FX/train/corpus.jsonl --max_length 24 --learning_rate 1e-2 --batch_size 8
          --progress none)
  MODEL=(--model_type $fam --model_config $W/config.json)
  mpirun --oversubscribe -np 4 $M train "${MODEL[@]}" "${COMMON[@]}" --max_steps 12 \
    --save_steps 12 --mesh_shape 2 2 --checkpoint_dir $W/ckpt > $W/train.out 2> $W/train.err
  grep -E "first loss|last loss" $W/train.out | tr '\n' ' '; echo "($fam 2x2)"
  $M export --checkpoint $W/ckpt/000012 --output_dir $W/hf > /dev/null
  /work/refenv/bin/python tools/reference/check_export.py --magix $M --checkpoint $W/ckpt/000012 \
    --export $W/hf --examples 16 2>&1 | grep -v "Loading weights" | tail -3
  $M train "${MODEL[@]}" "${COMMON[@]}" --max_steps 6 --bf16 > $W/bf16.out 2> $W/bf16.err
  grep -E "first loss|last loss" $W/bf16.out | tr '\n' ' '; echo "($fam --bf16 1x1)"
  mpirun --oversubscribe -np 2 $M train-lora --model_type $fam "${COMMON[@]}" --model_name $W/hf --max_steps 6 \
    --mesh_shape 1 2 --lora_rank 4 > $W/lora.out 2> $W/lora.err || { cat $W/lora.err; exit 1; }
  grep -E "first loss|last loss|adapter" $W/lora.out | tr '\n' ' '; echo "($fam train-lora 1x2)"
done
