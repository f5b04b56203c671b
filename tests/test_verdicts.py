"""Truthful verdicts (issue 14): the three kinds of numbers, capability host matching, stable verdicts,
one decision rule in the bundle, honest distill outcomes, temperature only when it helps."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import yaml

from toolkit.core.paths import DEVICES_DIR
from toolkit.pipeline.devices import Budgets, Gates, load_device
from toolkit.pipeline.select import Scored, checks_for, samples_needed, select


def _m(size, p95, f1, **kw):
    return {"size_mb": size, "latency_p95_ms": p95, "latency_p50_ms": p95 / 2, "macro_f1": f1, "ece": 0.02,
            "ece_recalibrated": 0.02, "rss_growth_mb": 500.0, **kw}


# ----------------------------------------------------------------------------- the three kinds
def test_jetson_report_shows_stand_in_estimate_and_fails_no_budget_on_stand_in(demo_run):
    report = json.loads((demo_run.run_dir / "report" / "report.json").read_text())
    assert report["selection"]["speed_key"] == "target_estimate_ms" and report["selection"]["speed_kind"] == "estimate"
    onnx = [c for c in report["candidates"] if c["format"] == "onnx"]
    assert onnx
    for c in report["candidates"]:
        assert c["measured_on"]["kind"] == "stand-in"          # an x86 host is never the Jetson
        for k in c["checks"]:
            assert not (k["status"] == "fail" and k["kind"] == "stand-in"), (c["id"], k)
            if k["name"] in ("latency_p95_ms", "rss_growth_mb"):
                assert k["status"] == "not checked here" and k["ok"], (c["id"], k)
    for c in onnx:
        est = c["target_estimate"]
        assert est["kind"] == "estimate" and est["device"] == "jetson-orin-nano"
        assert est["estimate_ms"] > 0 and est["bound"] in ("compute", "memory") and "specs from" in est["assumptions"]
    md = (demo_run.run_dir / "report" / "report.md").read_text()
    html = (demo_run.run_dir / "report" / "index.html").read_text()
    for text in (md, html):
        assert "stand-in" in text and "not checked here" in text and "-bound" in text and "roofline lower bound" in text
    assert "target_estimate_ms" in md and "Assumptions" in md and "specs from" in md
    # every loser's reason uses the same key as the pick
    for c in report["candidates"]:
        if c["id"] != report["selected"] and c["eligible"]:
            assert "p95" not in c["why_not"], c["why_not"]  # host p95 (stand-in) never decides
            assert c["why_not"].startswith("ties with") or "estimate" in c["why_not"], c["why_not"]


def test_target_numbers_judge_budgets():
    base = _m(4, 1.0, 0.98)
    slow = _m(1, 50.0, 0.98, macro_f1_delta={"delta": 0.0, "low": 0.0, "high": 0.0, "n_samples": 360})
    checks = checks_for(slow, base, Budgets(latency_p95_ms=10, peak_memory_mb=100), Gates(), False, "target")
    by = {c["name"]: c for c in checks}
    assert by["latency_p95_ms"]["status"] == "fail" and by["latency_p95_ms"]["kind"] == "target"
    assert by["rss_growth_mb"]["status"] == "fail" and by["rss_growth_mb"]["kind"] == "target"


def test_stand_in_numbers_are_not_checked_here():
    base = _m(4, 1.0, 0.98)
    slow = _m(1, 50.0, 0.98, target_estimate_ms=20.0)
    checks = checks_for(slow, base, Budgets(latency_p95_ms=10, peak_memory_mb=100), Gates(), False, "stand-in",
                        device="jetson-orin-nano")
    by = {c["name"]: c for c in checks}
    for name in ("latency_p95_ms", "rss_growth_mb"):
        assert by[name]["ok"] and by[name]["status"] == "not checked here" and "stand-in for jetson-orin-nano" in by[name]["reason"]
    sel, why, _ = select([Scored("slow", "int8", slow, checks)], 0.15, "target_estimate_ms")
    assert sel == "slow"  # a busy stand-in host never sinks a candidate


def test_estimate_judges_the_budget_where_the_profile_says_so():
    base = _m(4, 1.0, 0.98)
    over = _m(1, 0.1, 0.98, target_estimate_ms=20.0)   # fast here, but its lower bound on the target is over budget
    under = _m(1, 50.0, 0.98, target_estimate_ms=2.0)  # slow here (stand-in), within budget by the estimate
    b = Budgets(latency_p95_ms=10)
    c_over = checks_for(over, base, b, Gates(), False, "stand-in", budgets_on_estimate=True)[0]
    c_under = checks_for(under, base, b, Gates(), False, "stand-in", budgets_on_estimate=True)[0]
    assert c_over["name"] == "target_estimate_ms" and c_over["status"] == "fail" and c_over["kind"] == "estimate"
    assert "lower bound" in c_over["reason"]
    assert c_under["status"] == "ok" and c_under["kind"] == "estimate"
    assert load_device("jetson-agx-orin").selection.budgets_on_estimate is True


def test_verdicts_do_not_flip_between_identical_runs():
    """Host p95 jitters within the tie band between runs: the pick and every reason stay the same."""
    rng = np.random.default_rng(0)
    verdicts = set()
    for _ in range(20):
        jitter = lambda v: v * (1 + rng.uniform(-0.05, 0.05))  # noqa: E731
        items = [Scored("fp32", "fp32", _m(4, jitter(1.0), 0.98)), Scored("int8-a", "int8", _m(1, jitter(1.0), 0.98)),
                 Scored("int8-b", "int8", _m(1, jitter(1.0), 0.98)), Scored("fp16", "fp16", _m(2, jitter(3.0), 0.98))]
        sel, why, _ = select(items, 0.15)
        front = frozenset(i.id for i in items if i.on_front)
        verdicts.add((sel, tuple(sorted((k, v.split(" (")[0]) for k, v in why.items())), front))
    assert len(verdicts) == 1, verdicts
    sel, why, front = verdicts.pop()
    assert sel == "int8-a" and dict(why)["int8-b"].startswith("ties with int8-a")  # id breaks the exact tie


def test_samples_needed_when_the_test_split_is_too_small():
    delta = {"delta": -0.005, "low": -0.02, "high": 0.01, "n_samples": 360, "n_resamples": 1000}
    assert samples_needed(delta, 0.01) == 3240                          # 360 * (0.015 / 0.005)^2
    assert samples_needed({**delta, "delta": -0.02}, 0.01) is None      # the point estimate is already over
    base = _m(1, 1, 0.98)
    m = _m(1, 1, 0.975, macro_f1_delta=delta)
    c = next(c for c in checks_for(m, base, Budgets(max_macro_f1_drop=0.01), Gates(), False) if c["name"] == "macro_f1_delta_ci_low")
    assert c["status"] == "fail" and c["samples_needed"] == 3240 and "3240 test samples would be needed" in c["reason"]


# ----------------------------------------------------------------------------- host matching by capability
@pytest.mark.parametrize("flags, cores, machine, device, expected", [
    ({"avx2", "fma"}, 2, "x86_64", "x86-avx512", False),                       # AVX2-only EPYC: not the avx512 class
    ({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}, 2, "x86_64", "x86-avx512", True),
    ({"avx2", "fma"}, 2, "x86_64", "x86-avx2", True),
    ({"avx2", "fma", "avx512f", "avx512_vnni"}, 2, "x86_64", "x86-avx2", False),  # faster kernels than the device
    ({"avx2", "fma"}, 1, "x86_64", "x86-avx2", False),                          # too few cores
    ({"asimd", "asimddp"}, 4, "aarch64", "raspberry-pi-5", True),
    ({"asimd"}, 4, "aarch64", "raspberry-pi-5", False),                         # no dot product
    ({"asimd", "asimddp"}, 12, "aarch64", "jetson-orin-nano", False),           # the GPU runs the model
])
def test_host_matches_by_isa_and_cores(monkeypatch, flags, cores, machine, device, expected):
    from toolkit.core import host

    monkeypatch.setattr(host, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(host, "usable_cores", lambda: cores)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    prof = load_device(device)
    assert prof.host_is_device() is expected
    assert (prof.host_mismatch() is None) is expected


def test_every_profile_matches_by_capability_not_brand():
    for path in sorted(DEVICES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert "host_cpu_matches" not in data, path.name
        prof = load_device(path.stem)
        if any(a.kind == "gpu" for a in prof.accelerators) and prof.backends[0] == "tensorrt":
            assert prof.host_match is None, path.name
        else:
            assert prof.host_match is not None and prof.host_match.isa, path.name


# ----------------------------------------------------------------------------- one decision rule
def test_decide_binary_uses_the_tuned_threshold():
    from toolkit.metrics.thresholds import decide, flags

    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    assert decide(probs, [0.25]).tolist() == [1, 1, 1]
    assert decide(probs, [0.7]).tolist() == [0, 0, 1]
    assert flags(probs, [0.7]).tolist() == [False, False, True]
    three = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert decide(three, [0.9, 0.1, 0.9]).tolist() == [0, 2]              # multi-class: argmax
    with pytest.raises(ValueError, match="thresholds"):
        decide(probs, [0.5, 0.5])


def _binary_task(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A calibrated binary logistic model as ONNX, imbalanced data whose F1-best threshold is not 0.5."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    n = 900
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=0.5, size=n) > 0.8).astype(np.int64)
    w = np.zeros((4, 2), np.float32)
    w[0, 1] = 3.4
    b = np.array([0.0, -3.4 * 0.8], np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["logits"])], "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "binary.onnx")
    np.savez(tmp_path / "binary.npz", x=x, y=y, labels=np.array(["neg", "pos"]))
    recipe = tmp_path / "baseline-only.yaml"
    recipe.write_text(yaml.safe_dump({"name": "baseline-only", "steps": []}))
    dev = yaml.safe_load((DEVICES_DIR / "x86-avx2.yaml").read_text())
    dev.update(name="binary-test", aliases=[], gates={}, budgets={"max_macro_f1_drop": 0.05})
    dev["bench"] = {"threads": 1, "batch_sizes": [1], "warmup": 2, "iterations": 20}
    device = tmp_path / "binary-test.yaml"
    device.write_text(yaml.safe_dump(dev))
    return tmp_path / "binary.onnx", tmp_path / "binary.npz", recipe, device


def test_binary_bundle_decisions_equal_the_reports(tmp_path):
    import onnxruntime as ort

    import toolkit
    from toolkit.intake.data import load_npz
    from toolkit.metrics.calibration import softmax
    from toolkit.metrics.classification import classification_metrics
    from toolkit.metrics.thresholds import decide

    model, data, recipe, device = _binary_task(tmp_path)
    res = toolkit.compress(str(model), data=str(data), recipe=str(recipe), device=str(device), out=tmp_path / "run")
    sel = res.selected
    t, thresholds = sel.metrics.temperature, sel.metrics.thresholds.values
    assert len(thresholds) == 1 and abs(thresholds[0] - 0.5) > 0.02   # the tuned threshold is not the 0.5 fallback
    # the report's quality numbers are the decide() decisions on the whole test split
    ds = load_npz(data, seed=0)
    session = ort.InferenceSession(str(res.bundle_path / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"x": ds.test.inputs["x"]})[0]
    pred = decide(softmax(logits, t), thresholds)
    assert (pred != logits.argmax(1)).any()                          # argmax would decide differently
    assert classification_metrics(ds.test.y, pred, 2)["confusion_matrix"] == sel.metrics.confusion_matrix
    # the fixtures carry the same rule's decisions, and verify re-derives them
    with np.load(res.bundle_path / "fixtures" / "expected.npz") as z:
        assert z["decision"].tolist() == pred[: len(z["decision"])].tolist()
        assert z["above_threshold"].tolist() == (z["decision"] == 1).tolist()
    out = toolkit.verify(res.bundle_path)
    assert out["ok"] and out["decisions_checked"] == len(pred[:8])


# ----------------------------------------------------------------------------- honest distill outcome
def test_distill_without_a_qualifying_student_exits_3_and_bundles_nothing(tmp_path):
    import toolkit
    from toolkit.core.errors import GateFailed

    dev = yaml.safe_load((DEVICES_DIR / "x86-avx2.yaml").read_text())
    dev.update(name="strict-test", aliases=[], gates={}, budgets={"max_macro_f1_drop": 0.0})  # any drop fails
    dev["bench"] = {"threads": 1, "batch_sizes": [1], "warmup": 2, "iterations": 10}
    device = tmp_path / "strict-test.yaml"
    device.write_text(yaml.safe_dump(dev))
    out = tmp_path / "run"
    with pytest.raises(GateFailed) as err:
        toolkit.distill(None, "width:0.1", device=str(device), out=out, epochs=1, ablation=False)
    assert err.value.exit_code == 3 and "nothing was bundled" in str(err.value)
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["selected"] is None and not (out / "bundle").exists()
    teacher = next(c for c in report["candidates"] if c["id"] == "onnx-fp32")
    assert any(k["name"] == "reference" and not k["ok"] for k in teacher["checks"])   # never shipped as the student


# ----------------------------------------------------------------------------- temperature only when it helps
def test_temperature_applied_only_when_held_out_nll_improves():
    from toolkit.metrics import calibration as cal

    rng = np.random.default_rng(1)
    n, k = 600, 4
    calibrated = rng.normal(size=(n, k))
    # labels drawn from softmax(calibrated): T = 1 is right, any fitted T is in-sample noise
    p = cal.softmax(calibrated)
    y_cal = np.array([rng.choice(k, p=row) for row in p])
    fit = cal.fit_temperature_cv(calibrated, y_cal)
    overconfident = calibrated * 4.0                                   # same labels, logits 4x too sharp
    fit_over = cal.fit_temperature_cv(overconfident, y_cal)
    assert fit_over["applied"] and fit_over["temperature"] > 2 and fit_over["cv_nll_fitted"] < fit_over["cv_nll_t1"]
    if not fit["applied"]:
        assert fit["temperature"] == 1.0 and "T = 1" in fit["reason"] and fit["cv_nll_fitted"] >= fit["cv_nll_t1"]
    else:
        assert fit["cv_nll_fitted"] < fit["cv_nll_t1"]
    assert cal.fit_temperature_cv(calibrated, y_cal) == fit              # deterministic folds
    tiny = cal.fit_temperature_cv(calibrated[:6], y_cal[:6])
    assert not tiny["applied"] and tiny["temperature"] == 1.0 and "too few" in tiny["reason"]


def test_demo_bundle_ships_t_equal_1_and_says_why(demo_run):
    sel = demo_run.selected
    fit = sel.metrics.temperature_fit
    manifest = json.loads((demo_run.bundle_path / "manifest.json").read_text())
    card = (demo_run.bundle_path / "MODEL_CARD.md").read_text()
    assert manifest["confidence"]["temperature"] == sel.metrics.temperature
    if fit["applied"]:
        assert fit["cv_nll_fitted"] < fit["cv_nll_t1"]
    else:
        assert sel.metrics.temperature == 1.0 and fit["reason"] in manifest["confidence"]["probabilities"]
        assert "no temperature scaling" in card and fit["reason"] in card
