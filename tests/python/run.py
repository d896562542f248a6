"""Runs pytest on tests/python (ctest's python_pytest); exits 77 (skipped) when this interpreter
lacks pytest or numpy, which scripts/setup.sh installs into .venv."""
import sys

try:
    import numpy  # noqa: F401
    import pytest
except ImportError as e:
    print(f"skipped: {e} (run scripts/setup.sh)")
    sys.exit(77)

code = pytest.main(sys.argv[1:])
# No test collected is a failure here, not a pass.
sys.exit(1 if code == pytest.ExitCode.NO_TESTS_COLLECTED else int(code))
