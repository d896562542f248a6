#!/usr/bin/env bash
# Configures and builds magix into build/ (Release). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python module (python/) when scripts/setup.sh has made .venv; otherwise the C++ only.
python_flags=(-DMAGIX_PYTHON=OFF)
if [ -x .venv/bin/python ]; then
  python_flags=(-DMAGIX_PYTHON=ON -DPython_EXECUTABLE="$PWD/.venv/bin/python")
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${python_flags[@]}" "$@" >/dev/null
cmake --build build -j "$(nproc)"
