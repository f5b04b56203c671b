"""inc_ptq: Intel Neural Compressor 3.x static int8 (PT2E underneath) with accuracy-aware autotune."""
from __future__ import annotations

import pytest

TOL = 0.01


def test_inc_autotune_int8_within_tolerance(demo_ctx, digits):
    pytest.importorskip("neural_compressor")
    from toolkit.pipeline.evaluate import evaluate
    from toolkit.passes.quantize_inc import IncOptions, inc_ptq

    ctx, base = demo_ctx
    cand = inc_ptq(ctx, base, IncOptions(tuning=True, tolerance=TOL), "inc-int8")
    assert cand.engine == "inc" and cand.precision == "int8" and cand.format == "onnx"
    trials = cand.info["trials"]
    assert trials and trials[0]["act_algo"] == "minmax"
    assert cand.info["chosen"]["within_tolerance"]
    base_m, _, base_out = evaluate(base, digits, ctx.device, None)
    m, _, _ = evaluate(cand, digits, ctx.device, base_out)
    assert base_m["macro_f1"] - m["macro_f1"] <= TOL


def test_inc_without_tuning_from_an_exported_archive(demo_ctx):
    """A parent that is not the baseline goes through the .pt2 archive (INC's .eval() is bypassed)."""
    pytest.importorskip("neural_compressor")
    from toolkit.passes.quantize_inc import IncOptions, inc_ptq

    ctx, base = demo_ctx
    child = base.derive(id="copy", step="noop")
    cand = inc_ptq(ctx, child, IncOptions(tuning=False), "inc-static")
    assert cand.info["tuning"] == "none" and cand.info["val_macro_f1"] >= cand.info["fp32_val_macro_f1"] - TOL


def test_doctor_lists_every_engine():
    from toolkit.pipeline.doctor import doctor

    engines = {e["engine"]: e for e in doctor()["engines"]}
    assert {"ort", "nncf", "pt2e", "inc"} <= set(engines)
    for e in engines.values():
        assert e["ok"] or e["why"]
