#!/usr/bin/env bash
# Installs every Debian package magix's build, tests and benchmarks need. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  build-essential cmake ninja-build pkg-config git xz-utils python3
  # The Python package (python/): headers and venv for the interpreter, pip for nanobind & co.
  python3-dev python3-venv python3-pip
  # GEMM engine, opened with dlopen at run time (docs/kernels.md): OpenBLAS, OpenMP build.
  # The other candidates measured by bench_gemm: BLIS (OpenMP build) and oneDNN.
  libopenblas0-openmp libblis4-openmp libdnnl2
  # bf16 GEMM engine (linked): oneDNN's matmul primitive, headers and CMake config.
  libdnnl-dev
  libopenmpi-dev openmpi-bin
  nlohmann-json3-dev libpcre2-dev libicu-dev libcli11-dev libfmt-dev libxxhash-dev
  # .jsonl.gz data files (docs/data.md)
  zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Python package's build and test dependencies from PyPI, in .venv (a virtual environment
# of the `python3` on PATH: Debian's, or pyenv's where one is set up), so that neither Debian's
# externally managed Python nor another interpreter's site-packages is touched. scripts/build.sh
# builds the module for .venv/bin/python; the tests run with it.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# tensorboard: tests/scripts/report_cli.sh reads magix's event files with TensorBoard's reader;
# datasets: tests/python trains from a datasets.Dataset like from the same JSONL.
# pyarrow (pinned; cmake/MagixArrow.cmake checks the version): its wheel ships the Apache Arrow
# and Parquet C++ headers and libraries that magix's parquet/arrow data sources link against
# (Debian does not package Arrow).
.venv/bin/python -m pip install --quiet --disable-pip-version-check nanobind numpy pytest \
  tensorboard datasets pyarrow==26.0.1
echo "magix: all build dependencies are installed"
