#!/usr/bin/env bash
# Quick start on a fresh Debian machine (as root): installs what the build needs, builds magix,
# and runs the offline demo (`magix demo`): a tokenizer and a synthetic chat dataset made on the
# spot, a small Llama trained from scratch with assistant-only loss, a checkpoint, generations
# for held-out prompts and their exact-match accuracy. Everything lands in ./magix_demo
# (MAGIX_DEMO_DIR to choose another folder; a previous demo there is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build/bin/magix demo --work_dir "${MAGIX_DEMO_DIR:-magix_demo}" --overwrite
