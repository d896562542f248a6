#!/usr/bin/env bash
# `cmake --install` gives a prefix with libmagix.so, include/magix/, the magix command and
# magixConfig.cmake; examples/ then builds as an outside project with find_package(magix) and
# runs: magix101 on the llama_gqa fixture gives the same losses as the in-tree build.
# Usage: bash cmake_package.sh <magix binary> <fixtures dir>
set -u
MAGIX="$1"
FIXTURES="$2"
BUILD="$(cd "$(dirname "$MAGIX")/.." && pwd)"
ROOT="$(cd "$FIXTURES/../.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$BUILD" --prefix "$WORK/prefix" > "$WORK/install.log" 2>&1 \
  || fail "cmake --install: $(tail -5 "$WORK/install.log")"
for f in lib/libmagix.so include/magix/magix.hpp bin/magix lib/cmake/magix/magixConfig.cmake \
         lib/cmake/magix/magixConfigVersion.cmake lib/cmake/magix/magixTargets.cmake; do
  [ -e "$WORK/prefix/$f" ] || fail "the install has no $f"
done
# Nothing from src/ is needed: the installed headers include only magix/, std, fmt, nlohmann.
grep -rhoE '#include "[^"]+"' "$WORK/prefix/include/magix" | grep -v '"magix/' \
  && fail "an installed header includes something outside magix/"
"$WORK/prefix/bin/magix" --version | grep -q "magix" || fail "the installed command does not run"

# The examples as a consumer writes them: find_package(magix) + magix::magix, nothing else.
cmake -S "$ROOT/examples" -B "$WORK/ex" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" > "$WORK/configure.log" 2>&1 \
  || fail "configuring examples/ against the install: $(tail -20 "$WORK/configure.log")"
cmake --build "$WORK/ex" > "$WORK/build.log" 2>&1 || fail "building examples/: $(tail -20 "$WORK/build.log")"
ldd "$WORK/ex/magix101" | grep -q "$WORK/prefix/lib/libmagix.so" \
  || fail "magix101 does not use the installed libmagix.so: $(ldd "$WORK/ex/magix101")"

"$WORK/ex/magix101" "$FIXTURES/models/llama_gqa" 1 1 3 > "$WORK/outside.txt" 2>&1 \
  || fail "the outside magix101 failed: $(cat "$WORK/outside.txt")"
"$BUILD/bin/magix101" "$FIXTURES/models/llama_gqa" 1 1 3 > "$WORK/inside.txt" 2>&1 \
  || fail "the in-tree magix101 failed: $(cat "$WORK/inside.txt")"
grep -qi "loss" "$WORK/outside.txt" || fail "magix101 printed no loss: $(cat "$WORK/outside.txt")"
diff "$WORK/inside.txt" "$WORK/outside.txt" > /dev/null \
  || fail "losses differ between the installed and the in-tree library"
echo "cmake_package: OK"
