"""Calibration checks on every candidate of a real compress run: metrics, bundle, gates and slices."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from toolkit.core.errors import GateFailed
from toolkit.metrics.calibration import softmax

ROOT = Path(__file__).resolve().parent.parent


def _report(run) -> dict:
    return json.loads((run.run_dir / "report" / "report.json").read_text())


def test_every_candidate_carries_calibration(demo_run):
    report = _report(demo_run)
    n_classes = len(report["data"]["labels"])
    assert len(report["candidates"]) >= 3
    for c in report["candidates"]:
        m = c["metrics"]
        for key in ("ece", "ece_recalibrated", "temperature", "macro_f1_ci", "thresholds"):
            assert key in m, (c["id"], key)
        assert m["temperature"] > 0
        assert 0.0 <= m["ece"] <= 1.0 and 0.0 <= m["ece_recalibrated"] <= 1.0
        low, high = m["macro_f1_ci"]
        assert low <= m["macro_f1"] <= high, c["id"]
        assert m["val_nll_recalibrated"] <= m["val_nll"] + 1e-12, c["id"]  # the re-fit never worsens validation NLL
        th = m["thresholds"]
        assert th["tuned_on"] == "validation" and len(th["values"]) == n_classes
        assert all(0.0 <= t <= 1.0 for t in th["values"])
        assert len(th["test"]["per_class"]) == n_classes


def test_bundle_states_confidence_semantics(demo_run):
    report = _report(demo_run)
    bundle = demo_run.run_dir / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    sel = next(c for c in report["candidates"] if c["id"] == report["selected"])["metrics"]
    conf = manifest["confidence"]
    assert conf["temperature"] == pytest.approx(sel["temperature"])
    assert conf["thresholds"]["values"] == pytest.approx(sel["thresholds"]["values"])
    assert "softmax(logits / temperature)" in conf["probabilities"]
    with np.load(bundle / "fixtures" / "expected.npz") as z:
        logits, probs = z["logits"], z["probabilities"]
        above = z["above_threshold"]
    expected = softmax(logits.astype(np.float64), conf["temperature"])
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(above, probs >= np.asarray(conf["thresholds"]["values"], dtype=np.float32)[None, :])


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory, digits):
    """compress on an .npz with slice_* arrays, a two-step recipe and a profile whose ECE-after-T gate nobody meets."""
    folder = tmp_path_factory.mktemp("strict")
    profile = yaml.safe_load((ROOT / "devices" / "jetson-orin-nano.yaml").read_text())
    profile["name"], profile["aliases"] = "jetson-strict", []
    profile["gates"]["max_ece_recalibrated"] = 0.0001
    profile["bench"].update({"warmup": 2, "iterations": 20})
    device = folder / "jetson-strict.yaml"
    device.write_text(yaml.safe_dump(profile))
    recipe = folder / "small.yaml"
    recipe.write_text(yaml.safe_dump({"name": "small", "description": "export and fp16 only", "seed": 0,
                                      "calibration_size": 100,
                                      "steps": [{"id": "onnx-fp32", "pass": "export_onnx"},
                                                {"id": "onnx-fp16", "pass": "onnx_fp16", "from": "onnx-fp32"}]}))
    x = np.concatenate([digits.val.inputs["x"], digits.test.inputs["x"]])
    y = np.concatenate([digits.val.y, digits.test.y])
    rows = np.arange(len(y))
    data = folder / "digits-sliced.npz"
    np.savez(data, x=x, y=y, split=np.array(["val"] * len(digits.val) + ["test"] * len(digits.test)),
             slice_ink=np.concatenate([digits.val.slices["ink"], digits.test.slices["ink"]]),
             slice_source=np.where(rows % 3 == 0, "scanner-a", "scanner-b"))
    return {"device": device, "recipe": recipe, "data": data, "out": folder / "run"}


def test_tight_gate_fails_every_candidate_visibly(strict_run):
    import toolkit

    with pytest.raises(GateFailed) as info:
        toolkit.compress(None, device=str(strict_run["device"]), recipe=str(strict_run["recipe"]),
                         data=strict_run["data"], out=strict_run["out"])
    assert info.value.exit_code == 3
    report = json.loads((strict_run["out"] / "report" / "report.json").read_text())
    assert report["selected"] is None
    ids = [c["id"] for c in report["candidates"]]
    assert ids == ["torch-fp32", "onnx-fp32", "onnx-fp16"]  # none silently dropped
    for c in report["candidates"]:
        gate = next(k for k in c["checks"] if k["name"] == "ece_recalibrated")
        assert gate["ok"] is False and gate["limit"] == 0.0001
        assert gate["reason"].startswith("ece_recalibrated:") and "> 0.0001" in gate["reason"]
        assert c["eligible"] is False and "ece_recalibrated" in c["why_not"]
    md = (strict_run["out"] / "report" / "report.md").read_text()
    assert "ece_recalibrated FAIL" in md
    assert not (strict_run["out"] / "bundle").exists()


def test_slices_on_every_candidate(strict_run):
    report_path = strict_run["out"] / "report" / "report.json"
    if not report_path.exists():
        pytest.skip("the strict run did not write a report (see test_tight_gate_fails_every_candidate_visibly)")
    report = json.loads(report_path.read_text())
    n_test = report["data"]["n_test"]
    for c in report["candidates"]:
        slices = c["metrics"]["slices"]
        assert set(slices) == {"ink", "source"}, c["id"]
        assert set(slices["source"]) == {"scanner-a", "scanner-b"}
        for name, vals in slices.items():
            assert sum(v["n"] for v in vals.values()) == n_test
            for v in vals.values():
                assert 0.0 <= v["macro_f1"] <= 1.0 and 0.0 <= v["ece"] <= 1.0


def test_cli_exit_code_3_on_gate_failure(strict_run, tmp_path):
    from typer.testing import CliRunner

    from toolkit.cli.app import app

    r = CliRunner().invoke(app, ["compress", "--device", str(strict_run["device"]), "--recipe", str(strict_run["recipe"]),
                                 "--data", str(strict_run["data"]), "--out", str(tmp_path / "run")])
    assert r.exit_code == 3, r.output
    assert "budgets and gates" in r.stderr
