"""magix.train's eval_file (the CLI's eval lines, the summary's evals) and magix.score on
conversations (transformers' per-example NLL from tests/fixtures/score_chat)."""
import json
from pathlib import Path

import pytest

import magix
from conftest import FIXTURES, MAGIX_BIN, cli_flags, run

CORPUS = FIXTURES / "train" / "corpus.jsonl"
CHAT = FIXTURES / "score_chat"


def eval_lines(path):
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [(r["step"], r["eval_loss"], r["eval_tokens"]) for r in rows if "eval_loss" in r]


def test_train_eval_file_gives_the_cli_eval_lines(tiny_train, tmp_path):
    flags = dict(tiny_train, train_file=str(CORPUS), eval_file=str(CORPUS), eval_steps=3,
                 per_device_eval_batch_size=5)
    run([MAGIX_BIN, "train", *cli_flags(flags), "--metrics_file", tmp_path / "cli.jsonl"])
    summary = magix.train(**flags, metrics_file=tmp_path / "py.jsonl")
    cli, py = eval_lines(tmp_path / "cli.jsonl"), eval_lines(tmp_path / "py.jsonl")
    assert [e[0] for e in py] == [3, 4] and py == cli
    assert [(e["step"], e["eval_loss"], e["eval_tokens"]) for e in summary["evals"]] == py
    assert summary["eval_loss"] == py[-1][1]
    plain = magix.train(**tiny_train, train_file=str(CORPUS))
    assert plain["losses"] == summary["losses"] and plain["eval_loss"] is None


@pytest.mark.parametrize("train_on", ["all", "assistant"])
def test_score_conversations_match_transformers(train_on):
    want = json.loads((CHAT / "expected.json").read_text())["examples"]
    got = magix.score(model_name_or_path=str(FIXTURES / "models" / "llama_gqa"),
                      tokenizer_name_or_path=str(CHAT / "tokenizer"),
                      input=str(CHAT / "conversations.jsonl"), data_field="messages",
                      use_chat_template=True, train_on=train_on, batch_size=2)
    assert [s["tokens"] for s in got["scores"]] == [w[train_on]["tokens"] for w in want]
    for s, w in zip(got["scores"], want):
        assert s["nll"] == pytest.approx(w[train_on]["nll"], rel=1e-5)
