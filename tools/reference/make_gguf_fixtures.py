"""GGUF fixtures for magix's reader: every block type magix dequantizes, with the values the
`gguf` package (llama.cpp's Python reference) dequantizes them to, and metadata of every type.

    /work/refenv/bin/python tools/reference/make_gguf_fixtures.py [--out tests/fixtures/gguf]

Writes quants.gguf (one tensor per type: random quant bytes with finite random f16 scales,
some subnormal) and quants_expected.safetensors (tensor name -> f32 values as
gguf.quants.dequantize returns them), deterministic (fixed seed).

Also tiny_llama.gguf: a 2-layer llama (hidden 256, 4 heads, 2 KV heads) whose tensors use every
block type (K-quants as random blocks with small scales, the others quantized from random
weights by the gguf package), with the byte-level BPE tokenizer of
tests/fixtures/tokenizers/trained_bytelevel in its metadata (tokens, merges, control tokens,
add_bos_token) and a chat template; and tiny_llama_expected.{json,safetensors}: what
transformers makes of that file (token ids of texts, logits of two sequences, greedy ids).
"""
import json
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
    tiny_llama(args.out, rng)
    print("wrote", args.out)


TEXTS = [
    "Hello world! The quick brown fox.",
    "  two leading spaces, digits 12345, and <|endoftext|> inside",
    "caf\u00e9 \u00fcber \U0001f642 tabs\tand\nnewlines",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|endoftext|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def random_k_blocks(rng, qtype, rows, cols):
    bv, bb = gguf.GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // bv
    blocks = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scale = (rng.uniform(0.5, 1.0, nblocks) * 4e-4).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(nblocks, 2)
    return blocks.reshape(rows, cols // bv * bb)


def tiny_llama(out, rng):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from safetensors.torch import save_file as save_torch

    tokj = json.load(open("tests/fixtures/tokenizers/trained_bytelevel/tokenizer.json"))
    vocab = tokj["model"]["vocab"]
    added = tokj["added_tokens"]
    n = max(max(vocab.values()), max(a["id"] for a in added)) + 1
    tokens = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    for a in added:
        tokens[a["id"]] = a["content"]
    assert all(t is not None for t in tokens)
    types = [1] * n
    for a in added:
        if a["special"]:
            types[a["id"]] = 3
    merges = [" ".join(m) if isinstance(m, list) else m for m in tokj["model"]["merges"]]
    hidden, inter, heads, kv, layers = 256, 512, 4, 2, 2
    path = os.path.join(out, "tiny_llama.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(700)
    w.add_eos_token_id(0)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)

    def quantized(name, rows, cols, qtype, scale=0.05):
        if qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
            w.add_tensor(name, random_k_blocks(rng, qtype, rows, cols), raw_dtype=qtype)
            return
        data = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(name, data)
        elif qtype == T.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    quantized("token_embd.weight", n, hidden, T.Q8_0, 0.5)
    plan = [
        {"attn_q": T.Q4_K, "attn_k": T.Q5_K, "attn_v": T.Q6_K, "attn_output": T.Q4_0,
         "ffn_gate": T.Q5_0, "ffn_up": T.Q5_1, "ffn_down": T.Q2_K},
        {"attn_q": T.Q8_0, "attn_k": T.F16, "attn_v": T.BF16, "attn_output": T.Q3_K,
         "ffn_gate": T.Q4_1, "ffn_up": T.F32, "ffn_down": T.Q6_K},
    ]
    shapes = {"attn_q": (hidden, hidden), "attn_k": (kv * hidden // heads, hidden),
              "attn_v": (kv * hidden // heads, hidden), "attn_output": (hidden, hidden),
              "ffn_gate": (inter, hidden), "ffn_up": (inter, hidden), "ffn_down": (hidden, inter)}
    for l in range(layers):
        w.add_tensor(f"blk.{l}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        for t, qtype in plan[l].items():
            rows, cols = shapes[t]
            if qtype == T.BF16:
                f = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
                w.add_tensor(f"blk.{l}.{t}.weight", gguf.quants.quantize(f, T.BF16), raw_dtype=T.BF16)
            else:
                quantized(f"blk.{l}.{t}.weight", rows, cols, qtype)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
    quantized("output.weight", n, hidden, T.Q6_K)  # random blocks, small scales
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(out, gguf_file="tiny_llama.gguf")
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file="tiny_llama.gguf",
                                                 dtype=torch.float32).eval()
    expected = {"texts": [], "generation": {}}
    tensors = {}
    for i, text in enumerate(TEXTS):
        ids = tok(text).input_ids
        expected["texts"].append({"text": text, "ids": ids,
                                  "decoded": tok.decode(ids, skip_special_tokens=True)})
        if i < 2:
            with torch.no_grad():
                tensors[f"logits.{i}"] = model(torch.tensor([ids])).logits[0].contiguous()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hello world"}],
                                     add_generation_prompt=True, tokenize=False)
    ids = tok(prompt).input_ids
    with torch.no_grad():
        g = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=16, do_sample=False,
                           eos_token_id=None, pad_token_id=0, output_scores=True,
                           return_dict_in_generate=True)
    # (The mask is explicit: the prompt holds the pad id, which transformers would mask.)
    # Kept up to the first step whose top-2 logit margin is under 1e-3: a random model has
    # near-ties that fp32 rounding may break either way.
    new = g.sequences[0, len(ids):].tolist()
    margins = [float(torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]) for s in g.scores]
    keep = next((i for i, m in enumerate(margins) if m < 1e-3), len(new))
    print("greedy margins", [round(m, 5) for m in margins], "kept", keep)
    expected["generation"] = {"prompt": "Hello world", "templated": prompt, "prompt_ids": ids,
                              "generated_ids": new[:keep], "margins": margins[:keep]}
    expected["config"] = {k: getattr(model.config, k) for k in
                          ["hidden_size", "num_hidden_layers", "num_attention_heads",
                           "num_key_value_heads", "vocab_size", "tie_word_embeddings"]}
    json.dump(expected, open(os.path.join(out, "tiny_llama_expected.json"), "w"), indent=1)
    save_torch(tensors, os.path.join(out, "tiny_llama_expected.safetensors"))


if __name__ == "__main__":
    main()
