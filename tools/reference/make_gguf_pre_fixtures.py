#!/usr/bin/env python3
"""GGUF byte-level BPE tokenizers with each `tokenizer.ggml.pre` split that magix knows, and the
token ids transformers makes of them (its GGUF tokenizer mapping picks the split by that name).

    /work/refenv/bin/python tools/reference/make_gguf_pre_fixtures.py [--out tests/fixtures/gguf]

Writes bpe_pre_<name>.gguf (tokenizer-only llama files: a byte-level vocabulary whose merges
join exactly the strings some splits keep together and others cut apart -- a case change inside
a word, digit runs, contractions, combining marks, a slash before a newline -- a few
hyperparameters, no tensors) for every name in PRES, and bpe_pre_expected.json:
{name: [{text, ids}]} for TEXTS. Deterministic.
"""
import argparse
import json
import os

import gguf

# One name per split transformers 5.23 maps (gguf_tokenizer_mapping.GGUF_PRE_TOKENIZER_SPLITS),
# and one it does not know (GPT-2's byte-level split).
PRES = ["llama-bpe", "qwen2", "qwen35", "tekken", "gpt-4o", "llama4", "not-a-known-pre"]
TEXTS = [
    "HelloWorld and CamelCaseWords, ALLCAPS then lower",
    "digits 1234567 and 89, x2y3",
    "don't I'M we'll they've It's",
    "path/to/file\n\nnext line\r\nand a/b/\n",
    "cafe\u0301 nai\u0308ve \u00e9t\u00e9 \u0645\u0631\u062d\u0628\u0627  two  spaces",
]


# Strings the merges build, left to right, each from the pieces before it.
JOINED = ["123", "1234", "456", "89", " 1", " 12", "oW", "eC", "lW", "n't", "'s", "I'M", "'ll",
          "/\n", "\n\n", "/f", "e\u0301", "i\u0308", "  ", "ALL", "LC"]


def byte_alphabet():
    """GPT-2's byte-to-character table (byte-level BPE spells every byte as one character)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocabulary():
    """The 256 byte characters, then one token per merge of JOINED's strings."""
    alphabet = byte_alphabet()
    tokens = [alphabet[b] for b in range(256)]
    known, merges = set(tokens), []
    for text in JOINED:
        pieces = [alphabet[b] for b in text.encode("utf-8")]
        while len(pieces) > 1:
            joined = pieces[0] + pieces[1]
            if joined not in known:
                merges.append(pieces[0] + " " + pieces[1])
                tokens.append(joined)
                known.add(joined)
            pieces = [joined] + pieces[2:]
    return tokens, merges


def write(path, pre, tokens, types, merges):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("bpe pre " + pre)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(16)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    from transformers import AutoTokenizer
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/gguf")
    args = ap.parse_args()
    tokens, merges = vocabulary()
    types = [1] * len(tokens)
    tokens.append("<|endoftext|>")
    types.append(3)
    expected = {}
    for pre in PRES:
        fname = f"bpe_pre_{pre}.gguf"
        write(os.path.join(args.out, fname), pre, tokens, types, merges)
        tok = AutoTokenizer.from_pretrained(args.out, gguf_file=fname)
        expected[pre] = [{"text": t, "ids": tok(t).input_ids} for t in TEXTS]
    # The splits must differ on these texts, or the fixture could not tell them apart.
    distinct = {json.dumps([e["ids"] for e in v]) for v in expected.values()}
    print(f"{len(PRES)} names, {len(distinct)} distinct tokenizations")
    with open(os.path.join(args.out, "bpe_pre_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
