#!/usr/bin/env bash
# docs/cli.md is what tools/gen_cli_docs.sh writes from this binary's --help: every flag of
# every subcommand is documented, and a flag added, removed or reworded without regenerating
# the file fails here.
# Usage: bash cli_docs.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
ROOT="$(cd "$2/../.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

bash "$ROOT/tools/gen_cli_docs.sh" "$MAGIX" - > "$WORK/cli.md" || fail "gen_cli_docs.sh failed"
[ -f "$ROOT/docs/cli.md" ] || fail "docs/cli.md is missing: run tools/gen_cli_docs.sh <magix>"
if ! diff -u "$ROOT/docs/cli.md" "$WORK/cli.md" > "$WORK/diff.txt"; then
  head -40 "$WORK/diff.txt" >&2
  fail "docs/cli.md is out of date with --help: run tools/gen_cli_docs.sh $MAGIX"
fi

# Independently of the generator: every subcommand and every long flag of its --help appears
# in the file.
subs=$("$MAGIX" --help | awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1}')
[ -n "$subs" ] || fail "no subcommands found in magix --help"
for cmd in $subs; do
  grep -q "^## magix $cmd\$" "$ROOT/docs/cli.md" || fail "docs/cli.md has no section for $cmd"
  for f in $("$MAGIX" "$cmd" --help | grep -oE -- '--[a-z][a-z0-9_-]*' | sort -u); do
    grep -q -- "$f" "$ROOT/docs/cli.md" || fail "docs/cli.md does not mention $cmd $f"
  done
done
echo "cli_docs: OK"
