"""toolkit.pipeline.calibrate: the standalone calibration section of one artifact, its CLI and the binary example."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.pipeline.calibrate import calibrate, calibration_report
from toolkit.cli.app import app
from toolkit.core.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
FILES = ("calibration.json", "calibration.md", "reliability.png", "thresholds.png")


def digits_npz(path: Path, digits, extra_slice: bool = False) -> Path:
    """The demo digits' validation and test rows with a `split` array (and slice_* arrays)."""
    x = np.concatenate([digits.val.inputs["x"], digits.test.inputs["x"]])
    y = np.concatenate([digits.val.y, digits.test.y])
    arrays = {"x": x, "y": y, "split": np.array(["val"] * len(digits.val) + ["test"] * len(digits.test))}
    if extra_slice:
        arrays["slice_ink"] = np.concatenate([digits.val.slices["ink"], digits.test.slices["ink"]])
        arrays["slice_half"] = np.where(np.arange(len(y)) % 2 == 0, "even-row", "odd-row")
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory, demo_model):
    """The demo CNN with its final layer (weights and bias) multiplied by 6: same argmax, far too sure of itself."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("overconfident")
    state = {k: v.detach().clone().contiguous() for k, v in demo_model.module.state_dict().items()}
    last = [k for k in state if k.endswith(".weight")][-1]
    state[last] *= 6.0
    state[last[: -len("weight")] + "bias"] *= 6.0
    path = folder / "overconfident.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory, digits):
    return digits_npz(tmp_path_factory.mktemp("data") / "digits.npz", digits, extra_slice=True)


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("metric", ["f2", "precision@", "precision@1.5", "recall@0", "youden@0.9", ""])
def test_bad_metric_is_a_config_error_before_any_work(tmp_path, metric):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="threshold metric"):
        calibrate(tmp_path / "missing.onnx", tmp_path / "missing.npz", metric=metric, out=out)
    assert not out.exists()


def test_missing_artifact_is_a_checkpoint_error(tmp_path, digits_file):
    with pytest.raises(CheckpointError, match="not found"):
        calibrate(tmp_path / "nope.onnx", digits_file, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_canonical_metric_names(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    z = rng.normal(size=(200, 3)) + 2.0 * np.eye(3)[y]
    r = calibration_report(z[:100], y[:100], z[100:], y[100:], metric=" Precision@0.90 ")
    assert r["metric"] == "precision@0.9" and r["thresholds"]["metric"] == "precision@0.9"
    assert len(r["thresholds"]["values"]) == 3


# ----------------------------------------------------------------------------- over-confident model
def test_temperature_fixes_an_overconfident_model(overconfident, digits_file, tmp_path):
    out = tmp_path / "cal"
    r = calibrate(overconfident, digits_file, out=out, model_factory="toolkit.intake.demo:digits_cnn")
    c = r["calibration"]
    assert c["temperature"] > 3.0, c  # the logits were scaled by 6: T undoes most of it
    assert c["val_nll_recalibrated"] < c["val_nll"]
    assert c["ece_recalibrated"] < c["ece"]
    assert c["nll_recalibrated"] < c["nll"]
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    md = (out / "calibration.md").read_text()
    for value in (c["temperature"], c["val_nll"], c["val_nll_recalibrated"], c["ece"], c["ece_recalibrated"]):
        assert f"{value:.4f}" in md
    saved = json.loads((out / "calibration.json").read_text())
    scalars = {k: v for k, v in c.items() if not isinstance(v, dict)}  # nested records compare exactly below
    assert {k: saved["calibration"][k] for k in scalars} == pytest.approx(scalars)
    assert {k: v for k, v in saved["calibration"].items() if isinstance(v, dict)} == \
        {k: v for k, v in c.items() if isinstance(v, dict)}
    assert saved["artifact"]["backend"] == "torch" and saved["artifact"]["measured_on"] == "this host"
    assert not list(tmp_path.glob(".*staging*"))  # staged, then renamed


def test_standalone_slices_thresholds_and_notes(overconfident, digits_file, tmp_path):
    r = calibrate(overconfident, digits_file, metric="youden", out=tmp_path / "cal", model_factory="toolkit.intake.demo:digits_cnn")
    assert set(r["slices"]) == {"ink", "half"}
    for vals in r["slices"].values():
        assert sum(m["n"] for m in vals.values()) == r["splits"]["n_test"]
        for m in vals.values():
            assert 0.0 <= m["macro_f1"] <= 1.0 and 0.0 <= m["ece"] <= 1.0 and 0.0 <= m["ece_before"] <= 1.0
    th = r["thresholds"]
    assert th["tuned_on"] == "validation" and len(th["values"]) == 10 and len(th["test"]["per_class"]) == 10
    lo, hi = r["quality"]["macro_f1_ci"]
    assert lo <= r["quality"]["macro_f1"] <= hi
    # 360 test samples: the CI is wider than 0.02, so the report must say the split is too small to tell
    assert hi - lo > 0.02 and any(n.startswith("too small to tell") for n in r["notes"])
    assert "too small to tell" in (tmp_path / "cal" / "calibration.md").read_text()
    assert len(r["curves"]) == 4  # >4 classes: the 4 weakest are plotted
    assert len(list((tmp_path / "cal").glob("thresholds-class-*.png"))) == 4


def test_output_folder_is_not_overwritten_silently(overconfident, digits_file, tmp_path):
    from toolkit.core.errors import OutputError

    out = tmp_path / "cal"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError):
        calibrate(overconfident, digits_file, out=out, model_factory="toolkit.intake.demo:digits_cnn")
    assert (out / "keep.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- CLI
def test_cli_calibrate_onnx_from_the_demo_run(demo_run, digits, tmp_path):
    onnx = demo_run.run_dir / "candidates" / "onnx-fp32" / "model.onnx"
    data = digits_npz(tmp_path / "digits.npz", digits)
    r = runner.invoke(app, ["calibrate", str(onnx), "--data", str(data), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "ECE" in r.stdout and "Thresholds tuned on validation for f1" in r.stdout
    r = runner.invoke(app, ["calibrate", str(onnx), "--data", str(data), "--out", str(tmp_path / "b"),
                            "--metric", "recall@0.9", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["artifact"]["backend"] == "onnxruntime" and got["metric"] == "recall@0.9"
    for name in FILES:
        assert (tmp_path / "b" / name).exists()
    # the standalone numbers are the ones compress reported for the same artifact and splits
    cand = demo_run.candidate("onnx-fp32").metrics.model_dump()
    assert got["calibration"]["temperature"] == pytest.approx(cand["temperature"], rel=1e-4)
    assert got["calibration"]["ece"] == pytest.approx(cand["ece"], abs=1e-4)
    assert got["quality"]["macro_f1"] == pytest.approx(cand["macro_f1"], abs=1e-9)


def test_cli_bad_metric_is_one_line_exit_2(tmp_path):
    r = runner.invoke(app, ["calibrate", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"), "--metric", "f2"])
    assert r.exit_code == 2
    assert "unknown threshold metric 'f2'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_openvino_ir(demo_run, digits, tmp_path):
    ov = pytest.importorskip("openvino")
    onnx = demo_run.run_dir / "candidates" / "onnx-fp32" / "model.onnx"
    xml = tmp_path / "ir" / "model.xml"
    xml.parent.mkdir()
    ov.save_model(ov.convert_model(str(onnx)), str(xml), compress_to_fp16=False)
    data = digits_npz(tmp_path / "digits.npz", digits)
    r = runner.invoke(app, ["calibrate", str(xml), "--data", str(data), "--out", str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["artifact"]["backend"] == "openvino"
    cand = demo_run.candidate("onnx-fp32").metrics.model_dump()
    assert got["calibration"]["temperature"] == pytest.approx(cand["temperature"], rel=1e-3)


# ----------------------------------------------------------------------------- binary example
def test_binary_threshold_study_example(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "binary_threshold_study.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads((out / "study.json").read_text())
    rows = {r["metric"]: r for r in s["optima"]}
    f1, youden, balanced = rows["f1"], rows["youden"], rows["balanced"]
    # Youden's J = 2 * balanced accuracy - 1: same optimum, related values
    assert youden["threshold"] == balanced["threshold"]
    assert balanced["validation_value"] == pytest.approx((youden["validation_value"] + 1) / 2)
    # F1 ignores true negatives: with 30% positives it picks a higher threshold, trading recall for precision
    assert f1["threshold"] > youden["threshold"]
    assert f1["test_precision"] >= youden["test_precision"] and youden["test_recall"] >= f1["test_recall"]
    assert 0.9 < s["auc_test"] < 1.0  # a real but imperfect detector, so the threshold matters
    assert (out / "study.png").stat().st_size > 0 and (out / "study.md").exists()
    for m in ("f1", "youden", "balanced"):
        for name in FILES:
            assert (out / m / name).stat().st_size > 0, (m, name)
        saved = json.loads((out / m / "calibration.json").read_text())
        assert saved["thresholds"]["values"] == [pytest.approx(rows[m]["threshold"])]
