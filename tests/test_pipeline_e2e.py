"""End to end: `compress --device jetson` on the built-in demo, and what a user opens afterwards."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import toolkit
from toolkit.core.errors import GateFailed

NEED = ["macro_f1", "accuracy", "ece", "latency_p50_ms", "latency_p95_ms", "size_mb"]


def test_report_lists_complete_candidates(demo_run):
    report = json.loads((demo_run.run_dir / "report" / "report.json").read_text())
    cands = report["candidates"]
    assert len(cands) >= 5
    for c in cands:
        assert all(k in c["metrics"] for k in NEED), c["id"]
        assert c["measured_on"]["kind"] == "stand-in" and "this host" in c["measured_on"]["label"]
        assert c["measured_on"]["stand_in_for"] == "jetson-orin-nano"  # an x86 host is never the Jetson
        assert c["lineage"][0] == "baseline"
    assert {c["id"] for c in cands} >= {"torch-fp32", "onnx-fp32", "onnx-fp16", "ort-int8-minmax"}


def test_selected_int8_is_within_one_point_of_fp32(demo_run):
    sel = demo_run.selected
    fp32 = max(c.metrics.macro_f1 for c in demo_run.candidates if c.precision == "fp32")
    assert "int8" in sel.precision
    assert fp32 - sel.metrics.macro_f1 <= 0.01
    assert fp32 > 0.95  # the demo model really learned the digits


def test_metrics_match_sklearn_on_the_run(demo_run, digits):
    from sklearn.metrics import accuracy_score, f1_score

    # the bundle's expected logits come from the selected candidate: re-derive its test metrics from scratch
    sel = demo_run.selected.metrics
    cm = np.asarray(sel.confusion_matrix)
    y_true = np.repeat(np.arange(10), cm.sum(1))
    y_pred = np.concatenate([np.repeat(np.arange(10), row) for row in cm])
    assert sel.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert sel.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert cm.sum() == len(digits.test)


def test_plan_skips_what_jetson_cannot_run(demo_run):
    plan = {p.id: p for p in demo_run.report.plan}
    assert plan["nncf-int8"].status == "skip" and "openvino" in plan["nncf-int8"].reason
    assert demo_run.report.target_builds, "TensorRT build commands for the target"
    assert all(b.command.startswith("trtexec --onnx=") for b in demo_run.report.target_builds)


def test_report_files_a_person_opens(demo_run):
    rep = demo_run.run_dir / "report"
    html = (rep / "index.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    assert not re.search(r'<(img|script|link)[^>]+(src|href)="(http|/)', html), "index.html must be self-contained"
    md = (rep / "report.md").read_text()
    assert demo_run.report.selected in md and "measured on this host" in md
    for name in ("tradeoff.png", "confusion.png", "reliability.png", "thresholds.png"):
        assert (rep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((demo_run.run_dir / "run.json").read_text())
    assert run["inputs"]["checkpoint"] == "builtin:digits-cnn" and run["versions"]["torch"].startswith("2.13")


def test_bundle_verifies_and_catches_a_flipped_byte(demo_run, tmp_path):
    bundle = shutil.copytree(demo_run.run_dir / "bundle", tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["io"]["inputs"][0]["shape"][0] == "batch"
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert "\ntrtexec --onnx=model.onnx --saveEngine=" in (bundle / "build_engine.sh").read_text()
    assert toolkit.verify(bundle)["ok"]
    model = bundle / manifest["model"]["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(GateFailed, match="sha256 does not match"):
        toolkit.verify(bundle)


def test_verify_catches_wrong_expected_outputs(demo_run, tmp_path):
    """A bundle whose hashes (and manifest digest) are consistent but whose fixtures lie is still caught by re-running them."""
    from toolkit.output.manifest import seal
    from toolkit.core.artifacts import file_sha256

    bundle = shutil.copytree(demo_run.run_dir / "bundle", tmp_path / "b")
    exp = dict(np.load(bundle / "fixtures" / "expected.npz"))
    exp["logits"] = exp["logits"] + 1.0
    np.savez(bundle / "fixtures" / "expected.npz", **exp)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"]["fixtures/expected.npz"] = file_sha256(bundle / "fixtures" / "expected.npz")
    (bundle / "manifest.json").write_text(json.dumps(seal(manifest)))
    with pytest.raises(GateFailed, match="fixture outputs differ"):
        toolkit.verify(bundle)


def test_text_encoder_end_to_end(text_model_files, tmp_path):
    """A model with input_ids + attention_mask goes through export, int8 and selection on x86."""
    weights, factory, data = text_model_files
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: text\ncalibration_size: 32\nsteps:\n"
                      "  - {id: onnx-fp32, pass: export_onnx}\n"
                      "  - {id: ort-int8-dynamic, pass: ort_dynamic_int8, from: onnx-fp32}\n"
                      "  - {id: ov-fp32, pass: openvino_ir, from: onnx-fp32}\n")
    result = toolkit.compress(weights, model_factory=factory, data=data, device="x86-avx512", recipe=recipe,
                              out=tmp_path / "run")
    ids = {c.id for c in result.candidates}
    assert ids == {"torch-fp32", "onnx-fp32", "ort-int8-dynamic", "ov-fp32"}
    io = result.report.io
    assert [t["name"] for t in io["inputs"]] == ["input_ids", "attention_mask"]
    assert io["inputs"][0]["shape"] == ["batch", "sequence"]
    onnx_row = result.candidate("onnx-fp32").metrics
    assert onnx_row.max_abs_logit_delta < 1e-3 and onnx_row.top1_agreement == 1.0
    assert toolkit.verify(result.run_dir / "bundle")["ok"]
