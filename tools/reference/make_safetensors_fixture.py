#!/usr/bin/env python3
"""Write tests/fixtures/safetensors/reference.safetensors with the real `safetensors` library.

test_io reads it back and checks every value, so that magix's reader agrees with the reference
writer (header layout, dtype names, data order) and with torch's bf16/f16 rounding.

Tensors (values are formulas the C++ test recomputes):
  f32        F32  [2, 3]  float32(i / 3 - 1), i = 0..5 (computed in float64, rounded once)
  bf16       BF16 [3, 4]  torch.bfloat16 of the float32 values bf16_source (round to nearest even)
  bf16_source F32 [3, 4]  float32(i * 0.1 - 0.55) for i = 0..7, then four exact ties:
                          1 + 2^-8, 1 + 3 * 2^-8, -(1 + 2^-8), 2^-120 * (1 + 2^-8)
  bf16_bits  I32  [3, 4]  the 16-bit patterns torch stored for bf16 (0..65535)
  f16        F16  [5]     torch.float16 of [1/3, -2.5, 65504, 2^-24, 0.1]
  f16_bits   I32  [5]     the 16-bit patterns torch stored for f16
  i64        I64  [6]     [-2^62, -1, 0, 1, 2^40 + 7, 2^63 - 1]
  scalar     F32  []      3.5
  empty      F32  [0, 3]
Metadata: {"format": "pt", "source": "magix fixture"}.

Run with the reference venv:
  /work/refenv/bin/python tools/reference/make_safetensors_fixture.py [--out DIR]
The output is deterministic.
"""

import argparse
import os

import torch
from safetensors.torch import save_file


def main():
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures",
                                                     "safetensors"))
    args = parser.parse_args()

    f32 = (torch.arange(6, dtype=torch.float64) / 3 - 1).to(torch.float32).reshape(2, 3)
    src = [i * 0.1 - 0.55 for i in range(8)]
    src += [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-120 * (1 + 2**-8)]
    bf16_source = torch.tensor(src, dtype=torch.float64).to(torch.float32).reshape(3, 4)
    bf16 = bf16_source.to(torch.bfloat16)
    bf16_bits = bf16.view(torch.int16).to(torch.int32) & 0xFFFF
    f16 = torch.tensor([1 / 3, -2.5, 65504.0, 2**-24, 0.1], dtype=torch.float64).to(torch.float16)
    f16_bits = f16.view(torch.int16).to(torch.int32) & 0xFFFF
    i64 = torch.tensor([-(2**62), -1, 0, 1, 2**40 + 7, 2**63 - 1], dtype=torch.int64)
    tensors = {
        "f32": f32,
        "bf16": bf16,
        "bf16_source": bf16_source,
        "bf16_bits": bf16_bits,
        "f16": f16,
        "f16_bits": f16_bits,
        "i64": i64,
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "reference.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "source": "magix fixture"})
    print(path, os.path.getsize(path), "bytes")
    print("bf16_bits", [hex(v) for v in bf16_bits.flatten().tolist()])
    print("f16_bits", [hex(v) for v in f16_bits.flatten().tolist()])


if __name__ == "__main__":
    main()
