"""magix.train: the CLI's losses from Python, Python data (a list, a generator, a
datasets.Dataset) like the same JSONL, and a 2x1 mesh under mpirun like 1x1."""
import json
import sys
from pathlib import Path

import pytest

import magix
from conftest import FIXTURES, MAGIX_BIN, cli_flags, mpirun, read_metrics, run

CORPUS = FIXTURES / "train" / "corpus.jsonl"


def records():
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_train_gives_the_cli_losses(tiny_train, tmp_path):
    flags = dict(tiny_train, train_file=str(CORPUS))
    run([MAGIX_BIN, "train", *cli_flags(flags), "--metrics_file", tmp_path / "cli.jsonl"])
    summary = magix.train(**flags, metrics_file=tmp_path / "py.jsonl")
    cli, py = read_metrics(tmp_path / "cli.jsonl"), read_metrics(tmp_path / "py.jsonl")
    assert len(py) == 4 and py == cli  # every step's loss, lr, grad norm and tokens, exactly
    assert summary["losses"] == [row[1] for row in py]
    assert summary["end_step"] == summary["total_steps"] == 4
    assert summary["last_loss"] < summary["first_loss"]


def test_train_lora_gives_the_cli_losses(tiny_train, tmp_path):
    """magix.train_lora: the losses of `magix train-lora` with the same flags, the adapters'
    settings recorded in the checkpoint (use_rslora included)."""
    flags = dict(tiny_train, train_file=str(CORPUS), lora_rank=4, lora_alpha=8.0,
                 use_rslora=True)
    run([MAGIX_BIN, "train-lora", *cli_flags(flags), "--metrics_file", tmp_path / "cli.jsonl"])
    summary = magix.train_lora(**flags, metrics_file=tmp_path / "py.jsonl",
                               checkpoint_dir=tmp_path / "ckpt", save_steps=4)
    cli, py = read_metrics(tmp_path / "cli.jsonl"), read_metrics(tmp_path / "py.jsonl")
    assert len(py) == 4 and py == cli
    assert summary["last_loss"] < summary["first_loss"]
    state = json.loads((tmp_path / "ckpt" / "000004" / "trainer_state.json").read_text())
    assert state["trainable"]["lora_rank"] == 4
    assert state["trainable"]["lora_use_rslora"] is True
    # Without use_rslora the scale, and so the run, differs.
    magix.train_lora(**dict(flags, use_rslora=False), metrics_file=tmp_path / "plain.jsonl")
    assert read_metrics(tmp_path / "plain.jsonl") != py
    with pytest.raises(TypeError, match="unexpected keyword argument 'lora_rnak'"):
        magix.train_lora(**flags, lora_rnak=2)


def test_python_records_train_like_the_same_jsonl(tiny_train, tmp_path):
    magix.train(**tiny_train, train_file=CORPUS, metrics_file=tmp_path / "file.jsonl")
    magix.train(**tiny_train, train_data=records(), metrics_file=tmp_path / "list.jsonl")
    magix.train(**tiny_train, train_data=(r for r in records()),
                metrics_file=tmp_path / "gen.jsonl")
    want = read_metrics(tmp_path / "file.jsonl")
    assert read_metrics(tmp_path / "list.jsonl") == want
    assert read_metrics(tmp_path / "gen.jsonl") == want
    # Another order is other batches: the comparison can tell.
    magix.train(**tiny_train, train_data=records()[::-1], metrics_file=tmp_path / "rev.jsonl")
    assert read_metrics(tmp_path / "rev.jsonl") != want
    with pytest.raises(TypeError, match="record 2 is a str"):
        magix.train(**tiny_train, train_data=[{"text": "a"}, {"text": "b"}, "c"])
    with pytest.raises(TypeError, match="train_data or train_file"):
        magix.train(**tiny_train, train_data=records(), train_file=CORPUS)


def test_datasets_dataset_trains_like_the_same_jsonl(tiny_train, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(records())
    magix.train(**tiny_train, train_file=CORPUS, metrics_file=tmp_path / "file.jsonl")
    magix.train(**tiny_train, train_data=ds, metrics_file=tmp_path / "ds.jsonl")
    assert read_metrics(tmp_path / "ds.jsonl") == read_metrics(tmp_path / "file.jsonl")


def test_parquet_and_save_to_disk_train_like_the_same_jsonl(tiny_train, tmp_path):
    """train_file takes any data source (docs/data.md): datasets' to_parquet and save_to_disk
    output, written here, give the JSONL's losses."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(records())
    ds.to_parquet(str(tmp_path / "corpus.parquet"))
    datasets.DatasetDict({"train": ds.select(range(8)), "test": ds}).save_to_disk(
        str(tmp_path / "dict"))
    magix.train(**tiny_train, train_file=CORPUS, metrics_file=tmp_path / "file.jsonl")
    want = read_metrics(tmp_path / "file.jsonl")
    try:
        magix.train(**tiny_train, train_file=tmp_path / "corpus.parquet",
                    metrics_file=tmp_path / "parquet.jsonl")
    except RuntimeError as e:
        if "built without Apache Arrow" in str(e):
            pytest.skip("magix built without Arrow")
        raise
    assert read_metrics(tmp_path / "parquet.jsonl") == want
    magix.train(**tiny_train, train_file=tmp_path / "dict", split="test",
                metrics_file=tmp_path / "dict.jsonl")
    assert read_metrics(tmp_path / "dict.jsonl") == want


TRAIN_SCRIPT = """
import json, sys
import magix
flags = json.loads(sys.argv[1])
records = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
s = magix.train(train_data=records, **flags)
mesh = magix.create_device_mesh(flags["mesh_shape"])
# One write per rank: print's separate writes of each piece interleave between ranks.
sys.stdout.write(f"rank {mesh.world_rank} of {mesh.world_size} mesh {mesh.shape} steps "
                 f"{s['end_step']}\\n")
sys.stdout.flush()
"""


def test_2x1_mesh_under_mpirun_gives_the_1x1_losses(tiny_train, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    flags = dict(tiny_train, metrics_file=str(tmp_path / "1x1.jsonl"), mesh_shape=[1, 1])
    run([sys.executable, script, json.dumps(flags), CORPUS])
    flags = dict(flags, metrics_file=str(tmp_path / "2x1.jsonl"), mesh_shape=[2, 1])
    p = mpirun(2, sys.executable, script, json.dumps(flags), CORPUS)
    assert "rank 0 of 2 mesh [2, 1] steps 4" in p.stdout
    assert "rank 1 of 2 mesh [2, 1] steps 4" in p.stdout
    one, two = read_metrics(tmp_path / "1x1.jsonl"), read_metrics(tmp_path / "2x1.jsonl")
    assert len(two) == 4
    for a, b in zip(one, two):
        assert a[0] == b[0] and a[2] == b[2] and a[4] == b[4]  # step, lr, tokens
        assert b[1] == pytest.approx(a[1], rel=1e-5)  # loss: sums in another order
        assert b[3] == pytest.approx(a[3], rel=1e-4)  # grad norm


CTRL_C_SCRIPT = """
import json, signal, sys
import magix
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts without it
try:
    magix.train(**json.loads(sys.argv[1]))
    print("finished")
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


def test_ctrl_c_stops_training_after_a_step_with_a_checkpoint(tiny_train, tmp_path):
    import signal
    import subprocess
    import time
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    metrics = tmp_path / "metrics.jsonl"
    flags = dict(tiny_train, train_file=str(CORPUS), max_steps=1000000, save_steps=0,
                 checkpoint_dir=str(tmp_path / "ckpt"), metrics_file=str(metrics))
    p = subprocess.Popen([sys.executable, script, json.dumps(flags)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.stat().st_size == 0):
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert out.strip() == "KeyboardInterrupt", err
    steps = len(metrics.read_text().splitlines())
    assert 1 <= steps < 1000000
    # The step it stopped at was saved: the same call resumes from it.
    assert sorted(Path(tmp_path / "ckpt").iterdir())[-1].name == f"{steps:06d}"
