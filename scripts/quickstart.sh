#!/usr/bin/env bash
# Quick start on a fresh Debian machine (as root): installs what the build needs, builds magix,
# and runs the two demos.
#  1. `magix demo` (offline): a tokenizer and a synthetic chat dataset made on the spot, a small
#     Llama trained from scratch with assistant-only loss, a checkpoint, generations for held-out
#     prompts and their exact-match accuracy. In ./magix_demo (MAGIX_DEMO_DIR to choose another
#     folder; a previous demo there is replaced).
#  2. `magix demo --model smollm2`: a real pretrained model, SmolLM2-135M-Instruct (GGUF, fetched
#     once by scripts/fetch_smollm2.sh into magix's cache), LoRA-fine-tuned to write dates in ISO
#     8601 form, with held-out accuracy before and after, and exported as GGUF and HF. In
#     ./magix_demo_smollm2 (MAGIX_SMOLLM2_DEMO_DIR). Skipped with a message when the model
#     cannot be fetched (offline), or with MAGIX_SKIP_SMOLLM2=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build/bin/magix demo --work_dir "${MAGIX_DEMO_DIR:-magix_demo}" --overwrite
if [ -n "${MAGIX_SKIP_SMOLLM2:-}" ]; then
  exit 0
fi
if ! gguf="$(bash scripts/fetch_smollm2.sh)"; then
  echo "quickstart: the tiny demo above ran; the SmolLM2 demo was skipped (its model could not" >&2
  echo "quickstart: be fetched). Run scripts/fetch_smollm2.sh, then: build/bin/magix demo --model smollm2" >&2
  exit 0
fi
echo
build/bin/magix demo --model smollm2 --gguf "$gguf" --bf16 \
  --work_dir "${MAGIX_SMOLLM2_DEMO_DIR:-magix_demo_smollm2}" --overwrite
