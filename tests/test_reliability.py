"""Reliability: bad inputs fail cleanly, nothing half-written, kills resume, one writer, caches verified."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from toolkit.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
SMALL_RECIPE = ("name: small\ncalibration_size: 64\nsteps:\n  - {id: onnx-fp32, pass: export_onnx}\n"
                "  - {id: onnx-fp16, pass: onnx_fp16, from: onnx-fp32}\n"
                "  - {id: ort-int8-minmax, pass: ort_static_int8, from: onnx-fp32}\n"
                "  - {id: ort-int8-dynamic, pass: ort_dynamic_int8, from: onnx-fp32}\n")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


class _Canary:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, demo_model):
    """A workspace of inputs, good and bad, that every bad-input case reads from."""
    from safetensors.torch import save_file

    from toolkit.intake.demo import digits_dataset

    w = tmp_path_factory.mktemp("ws")
    d = digits_dataset()
    x, y = np.concatenate([d.val.inputs["x"], d.test.inputs["x"]]), np.concatenate([d.val.y, d.test.y])
    state = {k: v.contiguous() for k, v in demo_model.module.state_dict().items()}
    save_file(state, str(w / "good.safetensors"))
    np.savez(w / "good.npz", x=x, y=y)
    bad_state = dict(state)
    bad_state.pop("0.bias")
    save_file(bad_state, str(w / "mismatch.safetensors"))
    nan_state = {k: v.clone() for k, v in state.items()}
    nan_state["8.bias"][0] = float("inf")
    save_file(nan_state, str(w / "nan.safetensors"))
    torch.save({"w": _Canary(str(w / "CANARY"))}, w / "evil.pt")
    torch.jit.save(torch.jit.trace(demo_model.module, torch.from_numpy(x[:2])), str(w / "script.pt"))
    (w / "garbage.pt2").write_bytes(b"PK\x03\x04 not really")
    (w / "model.h5").write_bytes(b"hdf")
    np.savez(w / "noy.npz", x=x)
    np.savez(w / "floaty.npz", x=x, y=y.astype(np.float32))
    np.savez(w / "rows.npz", x=x, y=y[:-1])
    nanx = x.copy()
    nanx[0, 0, 0, 0] = np.nan
    np.savez(w / "nanx.npz", x=nanx, y=y)
    np.savez(w / "tiny.npz", x=x[:10], y=y[:10])
    np.savez(w / "const.npz", x=np.ones_like(x), y=y)
    np.savez(w / "wrongshape.npz", x=x.reshape(len(x), -1), y=y)
    np.savez(w / "ints.npz", x=(x * 16).astype(np.int64), y=y)
    np.savez(w / "fewclasses.npz", x=x, y=y % 3, labels=np.array(["a", "b", "c"]))
    np.savez(w / "strings.npz", x=np.array(["a"] * len(y)), y=y)
    (w / "notnpz.npz").write_text("hello")
    (w / "typo.yaml").write_text("name: typo\nstepz: []\n")
    (w / "unknownpass.yaml").write_text("name: u\nsteps:\n  - {id: a, pass: quantise}\n")
    (w / "wrongtype.yaml").write_text("name: t\nseed: [1]\nsteps:\n  - {id: a, pass: export_onnx}\n")
    (w / "unsafe.yaml").write_text("name: !!python/object/apply:os.system ['touch PWNED']\nsteps: []\n")
    (w / "badopt.yaml").write_text("name: b\nsteps:\n  - {id: a, pass: export_onnx}\n"
                                   "  - {id: q, pass: ort_static_int8, from: a, options: {per_chanel: true}}\n")
    (w / "baddev.yaml").write_text((ROOT / "devices/jetson-orin-nano.yaml").read_text() + "\nturbo: true\n")
    (w / "negthreads.yaml").write_text((ROOT / "devices/jetson-orin-nano.yaml").read_text().replace("bench:", "bench:\n  threads: -1\n  _x:", 1))
    (w / "full").mkdir()
    (w / "full" / "keep.txt").write_text("user data")
    (w / "realdir").mkdir()
    os.symlink(w / "realdir", w / "link")
    (w / "afile").write_text("x")
    return w


# (id, argv with {w} for the workspace, expected words in the one-line error)
BAD = [
    ("unknown-device", ["--device", "jetsn"], "unknown device 'jetsn'"),
    ("device-unknown-key", ["--device", "{w}/baddev.yaml"], "turbo: unknown key"),
    ("device-wrong-type", ["--device", "{w}/negthreads.yaml"], "bench"),
    ("recipe-typo", ["--recipe", "{w}/typo.yaml"], "stepz: unknown key"),
    ("recipe-unknown-pass", ["--recipe", "{w}/unknownpass.yaml"], "unknown pass 'quantise'"),
    ("recipe-wrong-type", ["--recipe", "{w}/wrongtype.yaml"], "seed"),
    ("recipe-unsafe-tag", ["--recipe", "{w}/unsafe.yaml"], "not valid YAML"),
    ("recipe-bad-option", ["--recipe", "{w}/badopt.yaml"], "per_chanel: unknown key"),
    ("recipe-missing", ["--recipe", "nosuch"], "unknown recipe 'nosuch'"),
    ("checkpoint-missing", ["{w}/none.pt2"], "checkpoint not found"),
    ("checkpoint-garbage", ["{w}/garbage.pt2"], "not a loadable torch.export archive"),
    ("checkpoint-suffix", ["{w}/model.h5"], "unsupported checkpoint type"),
    ("checkpoint-folder", ["{w}/realdir"], "is a folder"),
    ("state-dict-no-factory", ["{w}/good.safetensors", "--data", "{w}/good.npz"], "--model-factory"),
    ("factory-format", ["{w}/good.safetensors", "--model-factory", "nocolon"], "must look like"),
    ("factory-module", ["{w}/good.safetensors", "--model-factory", "nosuchmod:f"], "cannot import nosuchmod"),
    ("factory-function", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:nope"], "has no function nope"),
    ("state-dict-mismatch", ["{w}/mismatch.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn"], "missing keys: 0.bias"),
    ("nan-weights", ["{w}/nan.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn"], "NaN/Inf in 8.bias"),
    ("code-pickle", ["{w}/evil.pt", "--model-factory", "toolkit.intake.demo:digits_cnn"], "pickled code"),
    ("torchscript", ["{w}/script.pt"], "TorchScript"),
    ("builtin-unknown", ["builtin:resnet"], "unknown built-in model"),
    ("data-missing", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/no.npz"], "data file not found"),
    ("data-not-npz", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/notnpz.npz"], "not a readable .npz"),
    ("data-no-y", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/noy.npz"], "no 'y' array"),
    ("data-float-y", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/floaty.npz"], "1-D integer"),
    ("data-rows", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/rows.npz"], "rows but 'y' has"),
    ("data-nan", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/nanx.npz"], "NaN or Inf"),
    ("data-too-small", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/tiny.npz"], "need at least 20"),
    ("data-constant", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/const.npz"], "is constant"),
    ("data-wrong-shape", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/wrongshape.npz"], "does not accept the data's inputs"),
    ("data-wrong-dtype", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/ints.npz"], "does not accept the data's inputs"),
    ("data-class-count", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/fewclasses.npz"], "3 classes"),
    ("data-strings", ["{w}/good.safetensors", "--model-factory", "toolkit.intake.demo:digits_cnn", "--data", "{w}/strings.npz"], "use float32 or int64"),
    ("out-not-empty", ["--out", "{w}/full"], "not empty"),
    ("out-symlink", ["--out", "{w}/link"], "symbolic link"),
    ("out-under-a-file", ["--out", "{w}/afile/run"], "afile"),
    ("threshold-metric", ["--threshold-metric", "precision@two"], "precision@two"),
]


@pytest.mark.parametrize("case,argv,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_cleanly(ws, case, argv, words):
    before = tree_digest(ws)
    args = [a.replace("{w}", str(ws)) for a in argv]
    if "--out" not in args:
        args += ["--out", str(ws / "out-never-written")]
    if "--data" not in args and args and not args[0].startswith(("-", "builtin:")):
        args += ["--data", str(ws / "good.npz")]  # a checkpoint needs data; a missing --data is said before it is opened
    r = runner.invoke(app, ["compress", *args])
    assert r.exit_code != 0 and r.exit_code in (2, 3, 4), (case, r.exit_code, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err        # one line
    assert err.startswith("error:") and words in err, err
    assert tree_digest(ws) == before              # nothing written, nothing half-written
    assert not (ws / "CANARY").exists() and not Path("PWNED").exists()


def test_misnamed_inputs_of_a_two_input_model_are_refused(text_model_files, tmp_path):
    weights, factory, data = text_model_files
    z = dict(np.load(data))
    z["ids"] = z.pop("input_ids")
    np.savez(tmp_path / "bad.npz", **z)
    r = runner.invoke(app, ["compress", str(weights), "--model-factory", factory, "--data", str(tmp_path / "bad.npz"),
                            "--device", "x86-avx512", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "['ids'] are not inputs of the model's forward(input_ids, attention_mask)" in r.stderr
    assert not (tmp_path / "o").exists()


def test_at_least_thirty_distinct_bad_inputs():
    assert len({b[0] for b in BAD}) >= 30


def _optkit(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "toolkit.cli.app", *args], cwd=str(ROOT), env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _artifact_hashes(run: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(run).items() if k.startswith(("candidates/", "bundle/model", "bundle/fixtures"))}


@pytest.fixture(scope="module")
def small_recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "small.yaml"
    path.write_text(SMALL_RECIPE)
    return path


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, small_recipe, demo_model):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = _optkit("compress", "--recipe", str(small_recipe), "--out", str(out))
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return out


@pytest.mark.parametrize("stage", ["baseline", "pass:onnx-fp32", "pass:ort-int8-minmax", "evaluate:onnx-fp16",
                                   "bundle", "promote"])
def test_kill_then_resume_gives_the_same_artifacts(tmp_path, small_recipe, reference_run, stage):
    out = tmp_path / "run"
    p = _optkit("compress", "--recipe", str(small_recipe), "--out", str(out), env={"OPTKIT_FAULT_AT": stage})
    assert p.wait(timeout=300) == -signal.SIGKILL
    assert not out.exists()  # killed before the rename: no half-written result where users look
    p = _optkit("compress", "--recipe", str(small_recipe), "--out", str(out), "--resume")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert "resuming the interrupted run" in p.stdout.read()
    assert runner.invoke(app, ["verify", str(out / "bundle")]).exit_code == 0
    assert _artifact_hashes(out) == _artifact_hashes(reference_run)
    assert not list(tmp_path.glob(".run.optkit-*"))  # staging and lock are gone


def test_sigterm_leaves_nothing_partial(tmp_path, small_recipe, demo_model):
    out = tmp_path / "run"
    p = _optkit("compress", "--recipe", str(small_recipe), "--out", str(out))
    staging = tmp_path / ".run.optkit-staging"
    deadline = time.time() + 120
    while not (staging / "candidates").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) != 0
    assert not out.exists() and not staging.exists() and not list(tmp_path.glob(".run.optkit.lock"))


def test_two_concurrent_runs_one_is_refused(tmp_path, small_recipe, demo_model):
    out = tmp_path / "run"
    procs = [_optkit("compress", "--recipe", str(small_recipe), "--out", str(out)) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    errs = [p.stderr.read() for p in procs]
    assert sorted(codes) == [0, 2], errs
    refused = errs[codes.index(2)]
    assert "another optkit run" in refused or "not empty" in refused
    assert runner.invoke(app, ["verify", str(out / "bundle")]).exit_code == 0


def _stable_metrics(report: dict) -> dict:
    # timings and memory move run to run; every other metric must be bit-identical
    timed = lambda k: k.startswith("latency_") or k in ("throughput", "rss_growth_mb")  # noqa: E731
    return {c["id"]: {k: v for k, v in c["metrics"].items() if not timed(k)} for c in report["candidates"]}


def test_corrupt_cache_entry_is_rebuilt_and_report_unchanged(tmp_path, small_recipe, reference_run):
    cache = Path(os.environ["OPTKIT_CACHE_DIR"]) / "passes"
    # every cached ort-int8-minmax entry (other tests cached some with other settings): one is this run's
    victims = [p.parent / "model.onnx" for p in cache.glob("*/.optkit-step.json")
               if json.loads(p.read_text())["candidate"]["id"] == "ort-int8-minmax"]
    assert victims
    for victim in victims:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    out = tmp_path / "run"
    p = _optkit("compress", "--recipe", str(small_recipe), "--out", str(out))
    assert p.wait(timeout=300) == 0
    assert "corrupt or foreign" in p.stdout.read()
    new = json.loads((out / "report/report.json").read_text())
    ref = json.loads((reference_run / "report/report.json").read_text())
    assert _stable_metrics(new) == _stable_metrics(ref)
    assert "built" in {s["status"] for s in new["plan"]}


def test_same_seed_gives_bit_identical_artifacts(tmp_path, small_recipe, reference_run):
    """A fresh cache (the demo retrains, every pass rebuilds) reproduces the reference byte for byte."""
    out = tmp_path / "run"
    p = _optkit("compress", "--recipe", str(small_recipe), "--out", str(out), env={"OPTKIT_CACHE_DIR": str(tmp_path / "c")})
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert _artifact_hashes(out) == _artifact_hashes(reference_run)
    new = json.loads((out / "report/report.json").read_text())
    ref = json.loads((reference_run / "report/report.json").read_text())
    assert _stable_metrics(new) == _stable_metrics(ref)
    assert {s["status"] for s in new["plan"]} == {"built"}
