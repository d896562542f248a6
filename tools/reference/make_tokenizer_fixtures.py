#!/usr/bin/env python3
"""Fixtures for tests/tokenizer: expected ids, offsets and decodes from HF `tokenizers`.

Run by hand with the reference venv (tokenizers 0.23.3):
    /work/refenv/bin/python tools/reference/make_tokenizer_fixtures.py [--shared ../shared/tokenizers]

Writes into tests/fixtures/tokenizers/:
  trained_bytelevel/, trained_sentencepiece/, trained_metaspace/, trained_misc/, trained_affixes/  small tokenizers
      TRAINED here
      (tokenizer.json + tokenizer_config.json), vocab < 1000
  <name>.jsonl  one line per corpus text: {"text", "ids", "ids_no_special", "offsets" (byte
      offsets [begin, end) into the UTF-8 text, for "ids"), "decoded" (skip_special_tokens=True),
      "decoded_with_special"} for every trained tokenizer and every real one in ../shared/tokenizers.
"""
import argparse
import json
import lzma
import os
import random

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures", "tokenizers"))

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. It's a test, isn't it? We'll see; they'd know.",
    "Hello world! Hello there, hello again. HELLO WORLD. Say hello to my little friend.",
    "def tokenize(text):\n    return [t for t in text.split() if t]\n\nprint(tokenize('a b  c'))\n",
    "for (int i = 0; i < n; ++i) { sum += x[i] * y[i]; }  // dot product\n",
    "Numbers: 1234567890, 3.14159, 2024-01-01, 42, 1000000.",
    "Привет, мир! Как дела? Москва — столица России.",
    "日本語のテキストです。東京は大きい都市です。中文文本也在这里。",
    "مرحبا بالعالم. هذه جملة عربية.",
    "नमस्ते दुनिया। यह एक हिंदी वाक्य है।",
    "สวัสดีชาวโลก นี่คือประโยคภาษาไทย",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️",
    "Tabs\tand\nnewlines\r\nand    many spaces   here.",
    "I'm sure you're right, but he's wrong and we've seen it. I'LL GO, YOU'D STAY.",
]

CORPUS = [
    "",
    " ",
    "Hello world",
    "Hello world!",
    " Hello  world ",
    "hello\n\nworld\n",
    "The quick brown fox jumps over the lazy dog.",
    "It's, isn't, you're, we've, I'm, they'll, he'd; IT'S ISN'T YOU'RE WE'VE I'M THEY'LL HE'D; iT's",
    "Contractions 'S 't 'Re 'vE 'm 'LL 'd and quotes 'quoted' \"double\"",
    "Привет, мир! Как дела?",
    "日本語のテキストです。中文文本也在这里。한국어 텍스트",
    "مرحبا بالعالم. هذه جملة عربية.",
    "नमस्ते दुनिया। यह एक हिंदी वाक्य है।",
    "สวัสดีชาวโลก นี่คือประโยคภาษาไทย",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🧑🏿‍🚀",
    "def f(x):\n    return x ** 2  # square\n\tif x:\n\t\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += x[i] * y[i]; }",
    "a\tb\t\tc\n\nd\r\ne\r\n\r\nf   g    h",
    "   leading and trailing spaces   ",
    "\n\n\n",
    "\t",
    "1234567890 12345678901234567890 3.14159 1,000,000 007",
    "x" * 40,
    "Mixed: café naïve résumé façade Ångström Straße",
    "Combining: cafe\u0301 n\u0303 A\u030a",
    "Special in text: <|eot_id|> and <|begin_of_text|>middle<|end_of_text|>",
    "Turn: <start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "Qwen: <|im_start|>user\nhello<|im_end|>\n<tool_call>{}</tool_call>",
    "Mistral: <s>[INST] hi [/INST]</s> <unk>",
    "Fixture specials: <|bos|>start <mask> mid<mask>end  <mask>  xyz axyz xyz. <|sys|>   after",
    "SP specials: <start> go<mask> [X] a[X]b [X]. end</end>",
    "foo bar and Foo Bar, foo  bar",
    "Symbols: @#$%^&*()_+-=[]{}|;:',.<>/?`~ ©®™ € £ ¥",
    "URL: https://example.com/path?q=1&r=2#frag email@example.org",
    "Zero-width: a\u200bb\u200cc\u200dd\ufeffe",
    "NEL and friends: a\u0085b\u00a0c\u2028d\u3000e",
    "ſ and K and ß and İ",
    "Supplementary: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 𠀀𠀁",
    "wordwithoutanyspacesthatgoesonandonandonforquitealongwhile",
]


def long_text():
    rng = random.Random(1234)
    parts = []
    while sum(len(p) for p in parts) < 1500:
        parts.append(rng.choice(TRAIN_TEXT + CORPUS[2:20]))
    return " ".join(parts)


def char_to_byte_offsets(text):
    table = [0]
    for ch in text:
        table.append(table[-1] + len(ch.encode("utf-8")))
    return table


def expected_lines(tok, corpus):
    lines = []
    for text in corpus:
        enc = tok.encode(text, add_special_tokens=True)
        nos = tok.encode(text, add_special_tokens=False)
        table = char_to_byte_offsets(text)
        offsets = [[table[b], table[e]] for (b, e) in enc.offsets]
        lines.append({
            "text": text,
            "ids": enc.ids,
            "ids_no_special": nos.ids,
            "offsets": offsets,
            "decoded": tok.decode(enc.ids, skip_special_tokens=True),
            "decoded_with_special": tok.decode(enc.ids, skip_special_tokens=False),
        })
    return lines


def train_bytelevel():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(TRAIN_TEXT * 3, trainer)
    tok.add_special_tokens([
        AddedToken("<|bos|>", special=True, normalized=False),
        AddedToken("<mask>", special=True, lstrip=True, rstrip=True, normalized=False),
        AddedToken("<|sys|>", special=True, rstrip=True, normalized=False),
    ])
    tok.add_tokens([
        AddedToken("xyz", single_word=True, special=False, normalized=True),
        AddedToken("foo bar", special=False, normalized=True),
    ])
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True, add_prefix_space=False),
        processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", bos)]),
    ])
    config = {"bos_token": "<|bos|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
              "add_bos_token": True}
    return tok, config


def sentencepiece_json(trained):
    """Rebuilds a trained BPE as Llama-2 style: <unk> <s> </s>, then all 256 byte tokens."""
    j = json.loads(trained.to_str())
    vocab = j["model"]["vocab"]
    order = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in ("<unk>", "<s>", "</s>")]
    new_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        new_vocab[f"<0x{b:02X}>"] = len(new_vocab)
    for t in order:
        if t not in new_vocab:
            new_vocab[t] = len(new_vocab)
    j["model"]["vocab"] = new_vocab
    j["model"]["byte_fallback"] = True
    j["model"]["fuse_unk"] = True
    j["model"]["unk_token"] = "<unk>"
    j["added_tokens"] = []
    return j


def train_sentencepiece():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=520, min_frequency=1, show_progress=False, limit_alphabet=90,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(TRAIN_TEXT * 3, trainer)
    j = sentencepiece_json(tok)
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([
        AddedToken("<unk>", special=True, normalized=False),
        AddedToken("<s>", special=True, normalized=False),
        AddedToken("</s>", special=True, normalized=False),
        AddedToken("<start>", special=True, normalized=False, rstrip=True),
        AddedToken("</end>", special=True, normalized=False, lstrip=True),
        AddedToken("<mask>", special=True, normalized=False, lstrip=True),
        AddedToken("<start_of_turn>", special=True, normalized=False),
    ])
    tok.add_tokens([AddedToken("[X]", single_word=True, special=False, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}
    return tok, config


def metaspace_variant(sp_tok):
    """The SentencePiece-style model with a Metaspace pre-tokenizer/decoder instead of the normalizer."""
    j = json.loads(sp_tok.to_str())
    j["normalizer"] = None
    tok = Tokenizer.from_str(json.dumps(j))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                  prepend_scheme="first")])
    return tok


def train_misc():
    """Less common components: NFKC + Lowercase + Strip, Whitespace + Digits, BertProcessing, no decoder."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, show_progress=False, limit_alphabet=60,
                                  special_tokens=["[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(TRAIN_TEXT * 3, trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    return tok, {"unk_token": "[UNK]"}


def train_affixes():
    """continuing_subword_prefix / end_of_word_suffix (WordPiece-like BPE), Whitespace pre-tokenizer."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, show_progress=False, limit_alphabet=60,
                                  special_tokens=["[UNK]"], continuing_subword_prefix="##",
                                  end_of_word_suffix="</w>")
    tok.train_from_iterator(TRAIN_TEXT * 3, trainer)
    return tok, {"unk_token": "[UNK]"}


def write_tokenizer_dir(name, tok, config):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)


def write_jsonl(name, lines):
    with open(os.path.join(OUT, name + ".jsonl"), "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared", "tokenizers"))
    args = ap.parse_args()
    assert tokenizers.__version__ == "0.23.3", tokenizers.__version__
    os.makedirs(OUT, exist_ok=True)
    corpus = CORPUS + [long_text()]

    bl, bl_config = train_bytelevel()
    sp, sp_config = train_sentencepiece()
    ms = metaspace_variant(sp)
    misc, misc_config = train_misc()
    affixes, affixes_config = train_affixes()
    for name, tok, config in [("trained_bytelevel", bl, bl_config), ("trained_sentencepiece", sp, sp_config),
                              ("trained_metaspace", ms, sp_config), ("trained_misc", misc, misc_config),
                              ("trained_affixes", affixes, affixes_config)]:
        write_tokenizer_dir(name, tok, config)
        tok = Tokenizer.from_file(os.path.join(OUT, name, "tokenizer.json"))  # what the C++ side reads
        write_jsonl(name, expected_lines(tok, corpus))
        print(name, "vocab", tok.get_vocab_size())

    for name in sorted(os.listdir(args.shared)):
        path = os.path.join(args.shared, name, "tokenizer.json.xz")
        if not os.path.exists(path):
            continue
        with lzma.open(path, "rt", encoding="utf-8") as f:
            tok = Tokenizer.from_str(f.read())
        write_jsonl(name, expected_lines(tok, corpus))
        print(name, "vocab", tok.get_vocab_size())


if __name__ == "__main__":
    main()
