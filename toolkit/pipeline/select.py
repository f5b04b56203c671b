"""Selection: the Pareto front over (size, p95 latency, macro-F1), device budgets and gates, and why.

Rule (stated in every report): among candidates that meet every budget and gate, take the
fastest by host p95 latency; latencies within the profile's tie band of the fastest count
as equal (sub-millisecond timings move by tens of percent run to run), and ties go to the
smaller artifact, then the higher macro-F1.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Scored:
    id: str
    precision: str
    metrics: dict
    checks: list[dict] = dataclasses.field(default_factory=list)  # {name, ok, value, limit, reason}
    on_front: bool = False

    @property
    def eligible(self) -> bool:
        return all(c["ok"] for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [c["reason"] for c in self.checks if not c["ok"]]


# macro-F1 differences below this are float noise (one flipped sample of 360 moves it ~3e-3), not a trade-off
F1_EPS = 1e-4


def dominates(a: dict, b: dict) -> bool:
    """a is no worse than b on size, p95 latency and macro-F1 (within F1_EPS), and better on one."""
    f1_a, f1_b = a["macro_f1"], b["macro_f1"]
    no_worse = a["size_mb"] <= b["size_mb"] and a["latency_p95_ms"] <= b["latency_p95_ms"] and f1_a >= f1_b - F1_EPS
    better = a["size_mb"] < b["size_mb"] or a["latency_p95_ms"] < b["latency_p95_ms"] or f1_a > f1_b + F1_EPS
    return no_worse and better


def pareto_front(items: list[Scored]) -> set[str]:
    return {a.id for a in items if not any(dominates(b.metrics, a.metrics) for b in items if b is not a)}


def _check(name: str, value, limit, ok: bool, unit: str = "", what: str = "") -> dict:
    reason = "" if ok else f"{name}: {value:.4g}{unit} {what or '>'} {limit:.4g}{unit}"
    return {"name": name, "ok": bool(ok), "value": value, "limit": limit, "reason": reason}


def checks_for(metrics: dict, baseline: dict, budgets, gates, is_baseline: bool) -> list[dict]:
    """Budgets (latency, size, memory, F1 drop, ECE) and gates (calibration, slices, CI support)."""
    out: list[dict] = []
    if budgets.latency_p95_ms is not None:
        out.append(_check("latency_p95_ms", metrics["latency_p95_ms"], budgets.latency_p95_ms,
                          metrics["latency_p95_ms"] <= budgets.latency_p95_ms, " ms"))
    if budgets.size_mb is not None:
        out.append(_check("size_mb", metrics["size_mb"], budgets.size_mb, metrics["size_mb"] <= budgets.size_mb, " MB"))
    if budgets.peak_memory_mb is not None:
        out.append(_check("rss_growth_mb", metrics["rss_growth_mb"], budgets.peak_memory_mb,
                          metrics["rss_growth_mb"] <= budgets.peak_memory_mb, " MB"))
    if budgets.max_ece is not None:
        out.append(_check("ece", metrics["ece"], budgets.max_ece, metrics["ece"] <= budgets.max_ece))
    if not is_baseline:
        drop = baseline["macro_f1"] - metrics["macro_f1"]
        out.append(_check("macro_f1_drop", drop, budgets.max_macro_f1_drop, drop <= budgets.max_macro_f1_drop))
        delta = metrics.get("macro_f1_delta")
        if gates.require_ci_support and delta is not None:
            # The paired-bootstrap lower end must stay within the tolerated drop: the data must support the claim.
            low = delta["low"]
            out.append(_check("macro_f1_delta_ci_low", low, -budgets.max_macro_f1_drop,
                              low >= -budgets.max_macro_f1_drop, what="<"))
    if gates.max_ece_recalibrated is not None:
        out.append(_check("ece_recalibrated", metrics["ece_recalibrated"], gates.max_ece_recalibrated,
                          metrics["ece_recalibrated"] <= gates.max_ece_recalibrated))
    if gates.max_calibration_drift is not None and not is_baseline:
        drift = abs(metrics["ece_recalibrated"] - baseline["ece_recalibrated"])
        out.append(_check("calibration_drift", drift, gates.max_calibration_drift, drift <= gates.max_calibration_drift))
    if gates.max_worst_slice_drop is not None and not is_baseline and metrics.get("slices"):
        drop = worst_slice_drop(metrics["slices"], baseline.get("slices") or {})
        if drop is not None:
            out.append(_check("worst_slice_drop", drop, gates.max_worst_slice_drop, drop <= gates.max_worst_slice_drop))
    return out


def worst_slice_drop(slices: dict, base: dict) -> float | None:
    drops = [base[s][v]["macro_f1"] - m["macro_f1"] for s, vals in slices.items() for v, m in vals.items()
             if s in base and v in base[s]]
    return max(drops) if drops else None


def select(items: list[Scored], tie_fraction: float, speed_key: str = "latency_p95_ms") -> tuple[str | None, dict[str, str], str]:
    """Returns (selected id or None, why each other candidate lost, the rule).

    speed_key is the host p95 latency when this host is the device, or the target's roofline
    estimate when the host only stands in (a CPU's fp16/int8 timings say little about a GPU's).
    """
    what = {"latency_p95_ms": "host p95 latency", "target_estimate_ms": "target latency estimate (roofline, from the profile's specs)"}[speed_key]
    rule = (f"fastest by {what} among candidates meeting every budget and gate; values within "
            f"{tie_fraction:.0%} of the fastest tie, broken by smaller size, then higher macro-F1")
    speed = lambda it: it.metrics.get(speed_key) if it.metrics.get(speed_key) is not None else float("inf")  # noqa: E731
    front = pareto_front(items)
    for it in items:
        it.on_front = it.id in front
    eligible = [it for it in items if it.eligible]
    why: dict[str, str] = {}
    for it in items:
        if not it.eligible:
            why[it.id] = "fails " + "; ".join(it.failures)
    if not eligible:
        return None, why, rule
    fastest = min(speed(it) for it in eligible)
    band = fastest * (1 + tie_fraction)
    tied = [it for it in eligible if speed(it) <= band]
    best = min(tied, key=lambda it: (it.metrics["size_mb"], -it.metrics["macro_f1"]))
    b = best.metrics
    for it in eligible:
        if it is best:
            continue
        m = it.metrics
        if dominates(b, m):
            why[it.id] = f"dominated by {best.id} (size {m['size_mb']:.3g} vs {b['size_mb']:.3g} MB, p95 {m['latency_p95_ms']:.3g} vs {b['latency_p95_ms']:.3g} ms, F1 {m['macro_f1']:.4f} vs {b['macro_f1']:.4f})"
        elif it in tied:
            why[it.id] = f"ties on speed ({what} {speed(it):.3g} ms within {tie_fraction:.0%} of {fastest:.3g}) but is larger ({m['size_mb']:.3g} vs {b['size_mb']:.3g} MB)" \
                if m["size_mb"] > b["size_mb"] else f"ties on speed and size, lower macro-F1 ({m['macro_f1']:.4f} vs {b['macro_f1']:.4f})"
        else:
            why[it.id] = f"slower: {what} {speed(it):.3g} ms vs {speed(best):.3g} ms (outside the {tie_fraction:.0%} tie band)"
    return best.id, why, rule
