"""Selection: Pareto front, budgets, tie band, and a reason for every loser."""
from __future__ import annotations

from toolkit.pipeline.devices import Budgets, Gates
from toolkit.pipeline.select import Scored, checks_for, pareto_front, select


def _m(size, p95, f1, **kw):
    return {"size_mb": size, "latency_p95_ms": p95, "macro_f1": f1, "ece": 0.02, "ece_recalibrated": 0.02,
            "rss_growth_mb": 1.0, **kw}


def test_front_excludes_dominated():
    items = [Scored("a", "fp32", _m(4, 1.0, 0.98)), Scored("b", "int8", _m(1, 0.5, 0.97)),
             Scored("c", "int8", _m(2, 0.6, 0.96))]  # c is worse than b on everything
    assert pareto_front(items) == {"a", "b"}


def test_tie_band_prefers_smaller():
    items = [Scored("fp32", "fp32", _m(4, 0.100, 0.98)), Scored("int8", "int8", _m(1, 0.105, 0.98))]
    sel, why, rule = select(items, 0.15)
    assert sel == "int8" and "larger" in why["fp32"] and "15%" in rule
    sel, why, _ = select(items, 0.0)
    assert sel == "fp32" and "slower" in why["int8"]


def test_budget_failures_are_reasons_not_silence():
    base = _m(4, 1.0, 0.98)
    slow = _m(1, 50.0, 0.90, macro_f1_delta={"delta": -0.08, "low": -0.1, "high": -0.05})
    checks = checks_for(slow, base, Budgets(latency_p95_ms=10, max_macro_f1_drop=0.01), Gates(), is_baseline=False)
    failed = {c["name"] for c in checks if not c["ok"]}
    assert failed == {"latency_p95_ms", "macro_f1_drop", "macro_f1_delta_ci_low"}
    items = [Scored("slow", "int8", slow, checks)]
    sel, why, _ = select(items, 0.15)
    assert sel is None and "latency_p95_ms" in why["slow"]


def test_speed_key_can_be_the_target_estimate():
    items = [Scored("fp16", "fp16", _m(2, 0.05, 0.98, target_estimate_ms=0.003)),
             Scored("int8", "int8", _m(1, 0.09, 0.98, target_estimate_ms=0.002))]
    assert select(items, 0.15, "latency_p95_ms")[0] == "fp16"
    sel, why, rule = select(items, 0.15, "target_estimate_ms")
    assert sel == "int8" and "roofline" in rule


def test_float_noise_in_f1_is_not_a_trade_off():
    # fp32 "wins" on F1 by 1e-6 (float noise from one flipped tie) but is larger and slower: not on the front
    items = [Scored("fp32", "fp32", _m(4, 1.0, 0.980801)), Scored("int8", "int8", _m(1, 0.5, 0.980800))]
    assert pareto_front(items) == {"int8"}
    items = [Scored("fp32", "fp32", _m(4, 1.0, 0.985)), Scored("int8", "int8", _m(1, 0.5, 0.980))]
    assert pareto_front(items) == {"fp32", "int8"}  # a real F1 difference is a trade-off
