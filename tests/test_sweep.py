"""optkit sweep with the local executor: the sweep file's validation (before any compute), run folders, one
history, the nightly report, reuse on a re-run, a failed combination reported with its reason and exit code 3."""
from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from toolkit.core.errors import ConfigError, OutputError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "tiny-static": [{"id": "onnx-fp32", "pass": "export_onnx"},
                    {"id": "ort-int8-minmax", "pass": "ort_static_int8", "from": "onnx-fp32",
                     "options": {"calibration": "minmax", "per_channel": True, "activations": "uint8"}}],
    "tiny-dynamic": [{"id": "onnx-fp32", "pass": "export_onnx"},
                     {"id": "ort-int8-dynamic", "pass": "ort_dynamic_int8", "from": "onnx-fp32"}],
}


def write_digits_npz(path: Path, digits) -> Path:
    x = np.concatenate([digits.val.inputs["x"], digits.test.inputs["x"]])
    y = np.concatenate([digits.val.y, digits.test.y])
    split = np.array(["val"] * len(digits.val) + ["test"] * len(digits.test))
    np.savez(path, x=x, y=y, split=split, labels=np.array(digits.labels))
    return path


def tiny_onnx(path: Path, digits) -> Path:
    """A small MLP on the digits, trained for a moment and exported to ONNX (its own architecture, no factory)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x, y = torch.from_numpy(digits.val.inputs["x"]), torch.from_numpy(digits.val.y).long()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.onnx.export(model.eval(), (x[:2],), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def make_sweep_inputs(tmp: Path, digits, demo_model, models: int = 2, recipes=("tiny-static", "tiny-dynamic"),
                      out: str = "out", **extra) -> Path:
    """A sweep file in tmp: the demo CNN (safetensors + factory) and an ONNX MLP, tiny recipes, a quick x86 profile."""
    from safetensors.torch import save_file

    tmp.mkdir(parents=True, exist_ok=True)
    data = write_digits_npz(tmp / "digits.npz", digits)
    if not (tmp / "cnn.safetensors").exists():
        save_file({k: v.contiguous() for k, v in demo_model.module.state_dict().items()}, str(tmp / "cnn.safetensors"))
    entries = [{"name": "cnn", "checkpoint": "cnn.safetensors", "model_factory": "toolkit.intake.demo:digits_cnn",
                "data": data.name}]
    if models > 1:
        if not (tmp / "mlp.onnx").exists():
            tiny_onnx(tmp / "mlp.onnx", digits)
        entries.append({"name": "mlp", "checkpoint": "mlp.onnx", "data": data.name})
    for name in recipes:
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "calibration_size": 64, "steps": RECIPES[name]}))
    device = yaml.safe_load((ROOT / "devices" / "x86-avx512.yaml").read_text())
    device.update(name="x86-quick", aliases=[])
    device["bench"].update(warmup=2, iterations=20, batch_sizes=[1, 4], threads=1)
    (tmp / "x86-quick.yaml").write_text(yaml.safe_dump(device))
    spec = {"models": entries, "recipes": [f"{n}.yaml" for n in recipes], "devices": ["x86-quick.yaml"], "out": out,
            **extra}
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp / "sweep.yaml"


def _edit(path: Path, **changes) -> Path:
    spec = yaml.safe_load(path.read_text())
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------- validation, before any compute

@pytest.fixture
def sweep_file(tmp_path, digits, demo_model):
    return make_sweep_inputs(tmp_path, digits, demo_model, models=1)


def test_a_valid_file_lists_every_combination(sweep_file):
    from toolkit.pipeline.sweep import load_sweep

    s = load_sweep(sweep_file)
    assert [c.id for c in s.combinations] == ["cnn-tiny-static-x86-quick", "cnn-tiny-dynamic-x86-quick"]
    assert s.history == s.out / "history.db" and s.out == (sweep_file.parent / "out").resolve()
    assert all(Path(c.checkpoint).is_absolute() and Path(c.data).is_absolute() for c in s.combinations)
    assert not s.out.exists()  # validation writes nothing


@pytest.mark.parametrize("change, words", [
    ({"colour": "red"}, "colour: unknown key"),
    ({"devices": ["no-such-device"]}, "devices.0"),
    ({"recipes": ["no-such-recipe"]}, "recipes.0"),
    ({"recipes": ["tiny-static.yaml", "tiny-static.yaml"]}, "listed twice: tiny-static"),
    ({"devices": ["x86", "x86-avx512"]}, "listed twice: x86-avx512"),
    ({"models": [{"name": "a", "checkpoint": "missing.pt2", "data": "digits.npz"}]}, "models.0.checkpoint"),
    ({"models": [{"name": "a", "checkpoint": "cnn.safetensors", "data": "nope.npz"}]}, "models.0.data"),
    ({"models": [{"name": "a", "checkpoint": "cnn.safetensors"}]}, "models.0.data: missing"),
    ({"models": [{"name": "a"}, {"name": "a"}]}, "listed twice: a"),
    ({"models": [{"name": "a", "chekpoint": "x"}]}, "models.0.chekpoint: unknown key"),
    ({"models": [{"name": "a", "trust_checkpoint": True}]}, "trust is never read from a file"),
    ({"nightly": {"metric": "speed"}}, "nightly.metric"),
    ({"models": [{"name": "a", "checkpoint": "cnn.safetensors", "data": "digits.npz", "tokenizer": "nope"}]},
     "models.0.tokenizer"),
    ({"history": "no/such/folder/bench.db"}, "history: folder"),
    ({"devices": [{"profile": "x86-quick.yaml", "measure_on": "ssh://pi:pw@board.local"}]},
     "devices.0: measure_on ssh://pi:pw@board.local: passwords in the address are refused"),
    ({"devices": [{"profile": "x86-quick.yaml", "measure_on": "ssh://pi@board", "ssh_key": "no-key"}]}, "devices.0"),
    ({"devices": [{"profile": "x86-quick.yaml"}]}, "devices.0.measure_on"),
])
def test_every_mistake_is_one_line_naming_the_file_and_key(sweep_file, change, words):
    from toolkit.pipeline.sweep import load_sweep

    with pytest.raises(ConfigError) as err:
        load_sweep(_edit(sweep_file, **change))
    msg = str(err.value)
    assert words in msg and str(sweep_file) in msg and "\n" not in msg


def test_a_folder_no_sweep_wrote_is_refused(sweep_file):
    from toolkit.pipeline.sweep import load_sweep

    (sweep_file.parent / "out").mkdir()
    (sweep_file.parent / "out" / "mine.txt").write_text("user file")
    with pytest.raises(OutputError, match="no optkit sweep wrote"):
        load_sweep(sweep_file)


def test_executors_are_a_registry(sweep_file):
    from toolkit.pipeline.executors import get_executor, names

    assert names() == ["local", "ray"]
    with pytest.raises(ConfigError, match="unknown executor 'slurm'"):
        get_executor("slurm")
    with pytest.raises(ConfigError, match="only the ray executor"):
        get_executor("local", address="auto")


# --------------------------------------------------------------------------- running it (local executor)

def test_local_sweep_end_to_end_then_reused(tmp_path, digits, demo_model):
    from toolkit.cli.app import app
    from toolkit.core.result import load_report
    from toolkit.output import history

    sweep = make_sweep_inputs(tmp_path, digits, demo_model, models=1)
    r = CliRunner().invoke(app, ["sweep", str(sweep), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["ok"] and summary["n_ok"] == 2 and summary["executor"] == "local"
    out = Path(summary["out"])
    for row in summary["combinations"]:
        assert row["status"] == "ok" and row["node"] == socket.gethostname()
        report = load_report(out / "runs" / row["id"] / "report" / "report.json")
        assert report.selected == row["selected"]
        # the summary says where its p50 was timed: the selected candidate's own kind of number
        assert row["latency_kind"] == report.candidate(row["selected"]).measured_on.kind in ("target", "stand-in")
        assert {c.measured_on.node for c in report.candidates} == {socket.gethostname()}
        assert row["artifacts"]["onnx-fp32"] and row["metrics"]["onnx-fp32"]["macro_f1"] > 0.8
    first = summary["combinations"][0]
    assert first["history"]["run_id"] == 1
    # one history: every candidate of every combination timed at batch 1 and 4, each measurement with its node
    with sqlite3.connect(out / "history.db") as con:
        n_rows, = con.execute("SELECT COUNT(*) FROM results").fetchone()
        extras = [json.loads(e) for e, in con.execute("SELECT extra FROM results")]
    assert n_rows == 2 * 3 * 2 and {e["node"] for e in extras} == {socket.gethostname()}
    assert len(history.runs(out / "history.db")) == 2
    assert summary["nightly"]["html"] and Path(summary["nightly"]["html"]).exists()
    assert (out / "sweep.json").exists()

    # a re-run reuses the finished run folders and does not record them twice
    r2 = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert r2.exit_code == 0, r2.output
    assert r2.output.count("reused finished run folder") == 2
    assert len(history.runs(out / "history.db")) == 2
    assert all(len(line) <= 80 for line in r2.output.splitlines() if line.startswith(("combination", "cnn-", "---")))


def test_a_failed_combination_is_named_and_the_others_finish(tmp_path, digits, demo_model):
    from toolkit.cli.app import app

    sweep = make_sweep_inputs(tmp_path, digits, demo_model, models=1, recipes=("tiny-dynamic",))
    bad = tmp_path / "bad.npz"  # 7x7 images: valid data, but not what the CNN takes
    np.savez(bad, x=np.random.default_rng(0).random((60, 1, 7, 7), dtype=np.float32), y=np.arange(60) % 10)
    spec = yaml.safe_load(sweep.read_text())
    spec["models"].append({**spec["models"][0], "name": "broken", "data": "bad.npz"})
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = CliRunner().invoke(app, ["sweep", str(sweep), "--json"])
    assert r.exit_code == 3
    summary = json.loads(r.stdout)
    by_id = {c["id"]: c for c in summary["combinations"]}
    assert by_id["cnn-tiny-dynamic-x86-quick"]["status"] == "ok"
    broken = by_id["broken-tiny-dynamic-x86-quick"]
    assert broken["status"] == "failed" and broken["reason"].startswith("build: ")
    assert summary["failures"] == [{"id": broken["id"], "reason": broken["reason"]}]
    r2 = CliRunner().invoke(app, ["sweep", str(sweep)])  # without --json: the guard's one line names it, exit 3
    assert r2.exit_code == 3 and "broken-tiny-dynamic-x86-quick: build:" in r2.output
    shutil.rmtree(tmp_path / "out")
