"""magix.load_model_hub and Model: logits bit for bit with the C++ path and within the fixture
tolerance of transformers'; nll and magix.score against `magix score` and transformers."""
import json

import numpy as np
import pytest

import magix
from conftest import FIXTURES, LOGITS_PROBE, MAGIX_BIN, read_safetensors, run

MODEL = FIXTURES / "models" / "llama_gqa"


@pytest.fixture(scope="module")
def model():
    return magix.load_model_hub(MODEL, mesh=magix.create_device_mesh((1, 1)))


def test_logits_equal_cpp_bit_for_bit_and_transformers_within_tolerance(model, tmp_path):
    ref = read_safetensors(MODEL / "reference.safetensors")
    logits = model.logits(ref["input_ids"], attention_mask=ref["attention_mask"])
    assert logits.dtype == np.float32 and logits.shape == ref["logits"].shape == (2, 20, 256)

    # The C++ path (load_decoder + Decoder::logits on the same batch) gives the same bits.
    run([LOGITS_PROBE, MODEL, tmp_path / "logits.f32"])
    cpp = np.fromfile(tmp_path / "logits.f32", dtype=np.float32).reshape(logits.shape)
    assert np.array_equal(logits.view(np.uint32), cpp.view(np.uint32))

    # transformers' logits: the tolerance of tests/model/fixtures_test.cpp.
    want = ref["logits"]
    max_diff = float(np.max(np.abs(logits - want)))
    assert max_diff <= 1e-4 * max(1.0, float(np.max(np.abs(want)))), max_diff
    # Padding is masked: row 1's real positions do not depend on what the padding holds.
    ids = ref["input_ids"].copy()
    ids[1, 16:] = 7
    again = model.logits(ids, attention_mask=ref["attention_mask"])
    assert np.array_equal(again[1, :16], logits[1, :16])


def test_device_argument(model):
    mesh = magix.create_device_mesh((1, 1))
    ids = [[1, 5, 9, 2, 7]]
    on_cpu = magix.load_model_hub(MODEL, mesh=mesh, device="cpu")
    assert np.array_equal(on_cpu.logits(ids), model.logits(ids))
    try:  # a GPU build with a GPU: the same logits within fp32 tolerance; else a clear error
        on_gpu = magix.load_model_hub(MODEL, mesh=mesh, device="cuda")
    except magix.MagixError as e:
        assert "no GPU is visible" in str(e) or "no cuda backend" in str(e), str(e)
    else:
        np.testing.assert_allclose(on_gpu.logits(ids), model.logits(ids), rtol=0, atol=1e-4)


def test_nll_matches_transformers(model):
    ref = read_safetensors(MODEL / "reference.safetensors")
    nll, tokens = model.nll(ref["input_ids"], attention_mask=ref["attention_mask"],
                            return_tokens=True)
    np.testing.assert_array_equal(tokens, ref["tokens_per_example"])
    np.testing.assert_allclose(nll, ref["nll_per_example"], rtol=1e-5)
    assert abs(nll.sum() / tokens.sum() - float(ref["loss"].reshape(-1)[0])) < 1e-5 * 5.87


def test_nll_and_score_equal_the_cli(model, tmp_path):
    # `magix score` on the fixture's examples, all in one batch of 4 rows (pad id 0) ...
    run([MAGIX_BIN, "score", "--model_name_or_path", MODEL, "--input",
         MODEL / "score_input.jsonl", "--output_file", tmp_path / "cli.jsonl", "--batch_size", 4])
    cli = [json.loads(line) for line in (tmp_path / "cli.jsonl").read_text().splitlines()]
    rows = [json.loads(line)["input_ids"]
            for line in (MODEL / "score_input.jsonl").read_text().splitlines()]
    # ... equals Model.nll on the same padded batch, bit for bit (JSON keeps every bit) ...
    T = max(map(len, rows))
    ids = np.zeros((len(rows), T), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    nll = model.nll(ids, attention_mask=mask)
    assert [c["nll"] for c in cli] == nll.tolist()
    # ... and magix.score, which writes the same file.
    summary = magix.score(model_name_or_path=MODEL, input=MODEL / "score_input.jsonl",
                          output_file=tmp_path / "py.jsonl", batch_size=4)
    assert (tmp_path / "py.jsonl").read_text() == (tmp_path / "cli.jsonl").read_text()
    assert summary["examples"] == 4 and summary["tokens"] == sum(len(r) - 1 for r in rows)
    # Both within the fixture tolerance of transformers' (score_expected.jsonl).
    want = [json.loads(line) for line in (MODEL / "score_expected.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(nll, [w["nll"] for w in want], rtol=1e-5)


def test_generate_greedy_continues_with_argmax(model):
    prompt = [1, 108, 92, 161]
    out = model.generate([prompt], max_new_tokens=3, eos_ids=[255])
    assert out[0]["finish"] == "length" and len(out[0]["tokens"]) == 3
    # Each greedy token is the argmax of the logits of the sequence so far.
    seq = list(prompt)
    for token in out[0]["tokens"]:
        assert token == int(np.argmax(model.logits([seq])[0, -1]))
        seq.append(token)


def test_errors_are_python_exceptions_with_magix_messages(tmp_path):
    with pytest.raises(magix.MagixError) as e:
        magix.load_model_hub(tmp_path / "nowhere")
    assert "nowhere" in str(e.value)
    assert issubclass(magix.MagixError, RuntimeError)
    with pytest.raises(magix.MagixError, match="family 'gemma' does not match"):
        magix.load_model_hub(MODEL, family="gemma")
    with pytest.raises(magix.MagixError, match="unknown device 'tpu'"):
        magix.load_model_hub(MODEL, device="tpu")

    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rat'"):
        magix.train(learning_rat=1e-3)
    with pytest.raises(TypeError, match="'batch_size' has the wrong type"):
        magix.train(batch_size="eight")
    with pytest.raises(magix.MagixError, match="--batch_size"):
        magix.train(model_config="x.json", train_file="y.jsonl", batch_size=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'temp'"):
        magix.generate("p.txt", temp=0.5)
    with pytest.raises(TypeError, match="2-D array of integers"):
        magix.load_model_hub(MODEL).logits(np.zeros((1, 2, 3), dtype=np.int32))
