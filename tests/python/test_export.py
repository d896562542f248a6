"""magix.export: the CLI's files from Python — an HF folder, and a GGUF file that loads again as a
model and scores like the HF folder."""
import json

import magix
from conftest import FIXTURES, MAGIX_BIN, cli_flags, run

CORPUS = FIXTURES / "train" / "corpus.jsonl"


def test_export_hf_and_gguf_like_the_cli(tiny_train, tmp_path, monkeypatch):
    monkeypatch.setenv("MAGIX_CACHE", str(tmp_path / "cache"))
    magix.train(**dict(tiny_train, train_file=str(CORPUS)), checkpoint_dir=tmp_path / "ckpt")
    step = tmp_path / "ckpt" / "000004"
    magix.export(checkpoint=step, output_dir=tmp_path / "hf")
    res = magix.export(checkpoint=step, output_dir=tmp_path / "py.gguf", format="gguf",
                       outtype="q8_0")
    assert res["output_file"] == str(tmp_path / "py.gguf")
    run([MAGIX_BIN, "export", *cli_flags(dict(checkpoint=step, output_dir=tmp_path / "cli.gguf",
                                               format="gguf", outtype="q8_0"))])
    assert (tmp_path / "py.gguf").read_bytes() == (tmp_path / "cli.gguf").read_bytes()
    texts = tmp_path / "texts.jsonl"
    texts.write_text(CORPUS.read_text().splitlines()[0] + "\n")
    nll = {}
    for name, model in [("hf", tmp_path / "hf"), ("gguf", tmp_path / "py.gguf")]:
        out = tmp_path / f"score-{name}.jsonl"
        run([MAGIX_BIN, "score", "--model_name_or_path", model, "--input", texts,
             "--data_field", "text", "--output_file", out])
        nll[name] = json.loads(out.read_text())["mean_nll"]
    assert abs(nll["gguf"] - nll["hf"]) <= 2e-3 * abs(nll["hf"])  # q8_0 rounding
