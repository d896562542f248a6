"""magix.Tokenizer against HF tokenizers' ids and texts (tests/fixtures/tokenizers), and
apply_chat_template against transformers' renders (tests/fixtures/chat_templates)."""
import json
import lzma
import shutil

import pytest

import magix
from conftest import FIXTURES, SHARED


def cases(path):
    # split("\n"), not splitlines(): texts hold U+2028 and other line separators.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")
            if line.strip()]


def test_encode_decode_match_hf_tokenizers():
    tok = magix.Tokenizer.from_pretrained(FIXTURES / "tokenizers" / "trained_bytelevel")
    rows = cases(FIXTURES / "tokenizers" / "trained_bytelevel.jsonl")
    assert len(rows) > 10
    for r in rows:
        assert tok.encode(r["text"]) == r["ids"], r["text"]
        assert tok.encode(r["text"], add_special_tokens=False) == r["ids_no_special"]
        assert tok.decode(r["ids"]) == r["decoded"]
        assert tok.decode(r["ids"], skip_special_tokens=False) == r["decoded_with_special"]
    assert tok.token_to_id("<|bos|>") == 700 and tok.id_to_token(700) == "<|bos|>"
    assert tok.vocab_size > 700
    with pytest.raises(magix.MagixError):
        magix.Tokenizer.from_pretrained(FIXTURES / "no_such_tokenizer")


def test_apply_chat_template_matches_transformers(tmp_path):
    rows = [r for r in cases(FIXTURES / "chat_templates" / "conversations.jsonl")
            if "tokenizer" in r]
    names = sorted({r["tokenizer"] for r in rows})
    if not all((SHARED / "tokenizers" / n / "tokenizer_config.json").exists() for n in names):
        pytest.skip(f"no real tokenizer configs in {SHARED / 'tokenizers'}")
    # The real tokenizers (shared/ keeps tokenizer.json compressed).
    toks = {}
    for n in names:
        folder = tmp_path / n
        shutil.copytree(SHARED / "tokenizers" / n, folder)
        packed = folder / "tokenizer.json.xz"
        if packed.exists():
            (folder / "tokenizer.json").write_bytes(lzma.decompress(packed.read_bytes()))
        toks[n] = magix.Tokenizer.from_pretrained(folder)
    for r in rows:
        def render():
            return toks[r["tokenizer"]].apply_chat_template(
                r["messages"], add_generation_prompt=r["add_generation_prompt"], **r["extra"])
        if "error" in r:  # the template raises: a MagixError carrying its message
            with pytest.raises(magix.MagixError):
                render()
        else:
            assert render() == r["output"], (r["tokenizer"], r["messages"])
    assert len(rows) > 20


def test_no_chat_template_is_an_error_unless_builtin():
    tok = magix.Tokenizer.from_pretrained(FIXTURES / "train" / "gqa_tokenizer")
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(magix.MagixError, match='chat_template="builtin"'):
        tok.apply_chat_template(messages)
    assert tok.apply_chat_template(messages, chat_template="builtin") == "<|user|>\nhi[SEP]"
