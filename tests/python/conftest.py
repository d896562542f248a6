"""Paths for the Python tests: the build tree's magix command, C++ example and probe (from
ctest's environment, else build/), the fixtures and shared/."""
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("MAGIX_FIXTURES", ROOT / "tests" / "fixtures"))
SHARED = Path(os.environ.get("MAGIX_SHARED", ROOT.parent / "shared"))
MAGIX_BIN = os.environ.get("MAGIX_BIN", str(ROOT / "build" / "bin" / "magix"))
EXAMPLE_101 = os.environ.get("MAGIX_EXAMPLE_101", str(ROOT / "build" / "bin" / "magix101"))
LOGITS_PROBE = os.environ.get("MAGIX_LOGITS_PROBE",
                              str(ROOT / "build" / "bin" / "python_logits_probe"))
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMP_NUM_THREADS": "1"}


def read_safetensors(path):
    """{name: ndarray} of a safetensors file (F32, I64 and I32 tensors)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    dtypes = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "F64": np.float64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in dtypes:
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(body[begin:end], dtype=dtypes[info["dtype"]]).reshape(
            info["shape"])
    return out


def run(cmd, env=None, **kw):
    """Runs a command; fails the test with its output when it fails."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([str(c) for c in cmd], env=full_env, capture_output=True, text=True,
                       **kw)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def mpirun(np_, *cmd):
    return run(["mpirun", "--oversubscribe", "-np", np_, *cmd], env=MPI_ENV)


def read_metrics(path):
    """Per step: (step, loss, lr, grad_norm, tokens) of a metrics JSONL (timings dropped)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"], r["tokens"]) for r in rows]


@pytest.fixture
def tiny_train():
    """`magix train` flags of a short run from random weights on the training fixture."""
    return dict(model_config=str(FIXTURES / "train" / "tiny_config.json"),
                tokenizer_name=str(FIXTURES / "tokenizers" / "trained_bytelevel"),
                max_length=24, learning_rate=1e-2, batch_size=8, max_steps=4, log_steps=100,
                progress="none")


def cli_flags(flags):
    """The same flags on the command line."""
    out = []
    for k, v in flags.items():
        if isinstance(v, bool):
            out += [f"--{k}"] if v else []
        elif isinstance(v, (list, tuple)):
            out += [f"--{k}", *map(str, v)]
        else:
            out += [f"--{k}", str(v)]
    return out
