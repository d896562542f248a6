"""examples/python/magix101.py: the C++ example's numbers (examples/magix101.cpp) on 1x1, and
the 1x1 numbers on a 2x1 mesh under mpirun."""
import re
import sys

import pytest

from conftest import EXAMPLE_101, FIXTURES, ROOT, mpirun, run

SCRIPT = ROOT / "examples" / "python" / "magix101.py"
MODEL = FIXTURES / "models" / "llama_gqa"


def parse(text):
    return [tuple(float(x) for x in m) for m in
            re.findall(r"^step \d+ loss (\S+) grad_norm (\S+) tokens (\d+)", text, re.M)]


def test_magix101_py_prints_the_cpp_example_numbers():
    py = run([sys.executable, SCRIPT, MODEL, 1, 1, 3]).stdout
    cpp = run([EXAMPLE_101, MODEL, 1, 1, 3]).stdout
    assert len(parse(py)) == 3
    assert py == cpp  # the same steps, losses and gradient norms to 9 digits


def test_magix101_py_on_a_2x1_mesh_gives_the_1x1_numbers():
    one = parse(run([sys.executable, SCRIPT, MODEL, 1, 1, 3]).stdout)
    p = mpirun(2, sys.executable, SCRIPT, MODEL, 2, 1, 3)
    assert "mesh 2x1" in p.stdout
    two = parse(p.stdout)
    assert len(two) == 3
    for a, b in zip(one, two):
        assert b[0] == pytest.approx(a[0], rel=1e-5) and b[2] == a[2]
        assert b[1] == pytest.approx(a[1], rel=1e-4)
