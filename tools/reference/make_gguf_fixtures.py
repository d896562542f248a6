"""GGUF fixtures for magix's reader: every block type magix dequantizes, with the values the
`gguf` package (llama.cpp's Python reference) dequantizes them to, and metadata of every type.

    /work/refenv/bin/python tools/reference/make_gguf_fixtures.py [--out tests/fixtures/gguf]

Writes quants.gguf (one tensor per type: random quant bytes with finite random f16 scales,
some subnormal) and quants_expected.safetensors (tensor name -> f32 values as
gguf.quants.dequantize returns them), deterministic (fixed seed).
"""
import argparse
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from safetensors.numpy import save_file

# Byte ranges of the f16 scale fields inside one block, per type.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def finite_f16(rng, n):
    v = (rng.standard_normal(n) * 0.05).astype(np.float16)
    v[::7] = np.float16(3e-6)  # subnormal in f16
    v[::11] = -v[::11]
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/gguf")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261207)
    w = gguf.GGUFWriter(os.path.join(args.out, "quants.gguf"), "llama")
    # Metadata of every value type.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -5)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "h\u00e9llo \u2581w\u00f6rld")
    w.add_array("test.strings", ["a", "", "\u0120b"])
    w.add_array("test.ints", [1, -2, 3])
    expected = {}
    for qtype in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1,
                  T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        bv, bb = gguf.GGML_QUANT_SIZES[qtype]
        rows, cols = 3, bv * 2 if bv > 1 else 40
        name = "t." + qtype.name.lower()
        if qtype == T.F32:
            data = rng.standard_normal((rows, cols)).astype(np.float32)
            w.add_tensor(name, data)
            expected[name] = data
            continue
        if qtype == T.F16:
            data = finite_f16(rng, rows * cols).reshape(rows, cols)
            w.add_tensor(name, data)
            expected[name] = data.astype(np.float32)
            continue
        if qtype == T.BF16:
            f = rng.standard_normal(rows * cols).astype(np.float32)
            raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, cols * 2)
        else:
            nblocks = rows * cols // bv
            blocks = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
            for off in F16_FIELDS[qtype]:
                blocks[:, off:off + 2] = finite_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
            raw = blocks.reshape(rows, cols // bv * bb)
        w.add_tensor(name, raw, raw_dtype=qtype)
        expected[name] = dequantize(raw, qtype).astype(np.float32).reshape(rows, cols)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v) for k, v in expected.items()},
              os.path.join(args.out, "quants_expected.safetensors"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
