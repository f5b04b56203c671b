"""Selection: the Pareto front over (size, speed, macro-F1), device budgets and gates, and why.

Rule (stated in every report): among candidates that meet every budget and gate, take the
fastest by the run's one speed key; speeds within the profile's tie band of the fastest count
as equal (sub-millisecond timings move by tens of percent run to run), and ties go to the
smaller artifact, then the higher macro-F1, then the id (so identical runs give identical verdicts).

The speed key is host p95 when this host is the device (numbers of kind "target"), else the
target's roofline estimate (kind "estimate"); the front, the pick, every loser's reason and the
trade-off plot all use it. Budgets are judged on target numbers only: a stand-in's latency or
memory is "not checked here" (shown, never failing), unless the profile allows the estimate.
"""
from __future__ import annotations

import dataclasses
import math


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


@dataclasses.dataclass(frozen=True)
class SpeedKey:
    """The one speed quantity of a run (metrics field), its kind (result.NumberKind) and how reports name it."""
    field: str
    kind: str
    label: str


SPEED_KEYS = {
    "target": SpeedKey("latency_p95_ms", "target", "p95 latency measured on the target"),
    "estimate": SpeedKey("target_estimate_ms", "estimate", "target latency estimate (roofline lower bound, from the profile's specs)"),
}


def speed_key_for(host_is_device: bool) -> SpeedKey:
    """Host timings rank only where they are target numbers; elsewhere the target's estimate does."""
    return SPEED_KEYS["target" if host_is_device else "estimate"]


def _speed(m: dict, key: str) -> float:
    v = m.get(key)
    return float(v) if v is not None else math.inf  # no number of this kind: never counts as faster


def _ms(v: float) -> str:
    return "no estimate" if math.isinf(v) else f"{v:.3g} ms"


def dominates(a: dict, b: dict, key: str = "latency_p95_ms", tie_fraction: float = 0.0) -> bool:
    """a is no worse than b on size, speed (`key`, within the tie band) and macro-F1 (within F1_EPS), and better on one.

    Speeds within the tie band are equal here as in select(): otherwise run-to-run noise would move
    candidates on and off the front between identical runs.
    """
    f1_a, f1_b = a["macro_f1"], b["macro_f1"]
    s_a, s_b = _speed(a, key), _speed(b, key)
    band = 1 + tie_fraction
    speed_no_worse = s_a <= s_b * band or s_a == s_b
    speed_better = s_a * band < s_b
    no_worse = a["size_mb"] <= b["size_mb"] and speed_no_worse and f1_a >= f1_b - F1_EPS
    better = a["size_mb"] < b["size_mb"] or speed_better or f1_a > f1_b + F1_EPS
    return no_worse and better


def pareto_front(items: list[Scored], key: str = "latency_p95_ms", tie_fraction: float = 0.0) -> set[str]:
    return {a.id for a in items if not any(dominates(b.metrics, a.metrics, key, tie_fraction) for b in items if b is not a)}


def _check(name: str, value, limit, ok: bool, unit: str = "", what: str = "", kind: str | None = None) -> dict:
    reason = "" if ok else f"{name}: {value:.4g}{unit} {what or '>'} {limit:.4g}{unit}"
    return {"name": name, "ok": bool(ok), "status": "ok" if ok else "fail", "kind": kind, "value": value,
            "limit": limit, "reason": reason}


def _not_checked(name: str, value, limit, why: str) -> dict:
    """A budget this host cannot judge: shown as such, never failing the candidate."""
    return {"name": name, "ok": True, "status": "not checked here", "kind": "stand-in", "value": value, "limit": limit,
            "reason": f"{name}: not checked here ({why})"}


def samples_needed(delta: dict, max_drop: float) -> int | None:
    """Test samples for the paired-bootstrap CI's lower end to clear -max_drop at the observed delta.

    The CI's half-width shrinks as 1/sqrt(n): n_needed = n * (half_width / (delta + max_drop))^2. None when
    the point estimate itself is beyond the tolerated drop (no test split supports that).
    """
    margin = delta["delta"] + max_drop
    half = (delta["high"] - delta["low"]) / 2
    if margin <= 0 or half <= 0 or not delta.get("n_samples"):
        return None
    return int(math.ceil(delta["n_samples"] * (half / margin) ** 2))


def checks_for(metrics: dict, baseline: dict, budgets, gates, is_baseline: bool, measured_kind: str = "target",
               budgets_on_estimate: bool = False, device: str = "the device", contention: str = "") -> list[dict]:
    """Budgets (latency, size, memory, F1 drop, ECE) and gates (calibration, slices, CI support).

    measured_kind is the host measurement's result.NumberKind: latency and memory budgets are judged on
    "target" numbers; on a stand-in, latency is judged on the target estimate when the profile allows
    (budgets_on_estimate: a lower bound over budget is a certain failure) and is otherwise not checked here.
    Size, quality and calibration are properties of the artifact and the data, the same on any host.
    """
    out: list[dict] = []
    on_target = measured_kind == "target"
    stand_in = f"measured on a stand-in for {device}"
    if budgets.latency_p95_ms is not None:
        est = metrics.get("target_estimate_ms")
        if on_target:
            c = _check("latency_p95_ms", metrics["latency_p95_ms"], budgets.latency_p95_ms,
                       metrics["latency_p95_ms"] <= budgets.latency_p95_ms, " ms", kind="target")
            if not c["ok"] and contention:  # measured_on.contended (pipeline/measure.py): say the neighbours may be why
                robust = metrics.get("latency_p95_quietest_round_ms")
                c["reason"] += (f" on a contended host ({contention}); p50 {metrics['latency_p50_ms']:.4g} ms"
                                + (f", quietest-round p95 {robust:.4g} ms" if robust is not None else "")
                                + ": re-measure on a quiet host")
            out.append(c)
        elif budgets_on_estimate and est is not None:
            c = _check("target_estimate_ms", est, budgets.latency_p95_ms, est <= budgets.latency_p95_ms, " ms",
                       kind="estimate")
            c["reason"] = c["reason"] and c["reason"] + " (roofline lower bound for the target: it cannot be met)"
            out.append(c)
        else:
            out.append(_not_checked("latency_p95_ms", metrics["latency_p95_ms"], budgets.latency_p95_ms,
                                    f"{metrics['latency_p95_ms']:.4g} ms {stand_in}" +
                                    ("; no target estimate" if est is None else "; the profile does not judge budgets on the estimate")))
    if budgets.size_mb is not None:
        out.append(_check("size_mb", metrics["size_mb"], budgets.size_mb, metrics["size_mb"] <= budgets.size_mb, " MB"))
    if budgets.peak_memory_mb is not None:
        if on_target:
            out.append(_check("rss_growth_mb", metrics["rss_growth_mb"], budgets.peak_memory_mb,
                              metrics["rss_growth_mb"] <= budgets.peak_memory_mb, " MB", kind="target"))
        else:
            out.append(_not_checked("rss_growth_mb", metrics["rss_growth_mb"], budgets.peak_memory_mb,
                                    f"{metrics['rss_growth_mb']:.4g} MB RSS {stand_in}; memory has no estimate"))
    if budgets.max_ece is not None:
        out.append(_check("ece", metrics["ece"], budgets.max_ece, metrics["ece"] <= budgets.max_ece))
    if not is_baseline:
        drop = baseline["macro_f1"] - metrics["macro_f1"]
        out.append(_check("macro_f1_drop", drop, budgets.max_macro_f1_drop, drop <= budgets.max_macro_f1_drop))
        delta = metrics.get("macro_f1_delta")
        if gates.require_ci_support and delta is not None:
            # The paired-bootstrap lower end must stay within the tolerated drop: the data must support the claim.
            low = delta["low"]
            c = _check("macro_f1_delta_ci_low", low, -budgets.max_macro_f1_drop, low >= -budgets.max_macro_f1_drop,
                       what="<")
            if not c["ok"]:  # say whether more test data would settle it, and how much
                need = samples_needed(delta, budgets.max_macro_f1_drop)
                c["samples_needed"] = need
                c["reason"] += (f"; the test split ({delta.get('n_samples')} samples) is too small to support the "
                                f"{budgets.max_macro_f1_drop:g} F1 budget at this delta: about {need} test samples would be needed"
                                if need is not None else "; the observed drop itself exceeds the budget (more data would not help)")
            out.append(c)
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

    speed_key (see speed_key_for) is used for the front, the pick and every reason alike. Reasons are
    decided in a fixed order (tie band first, then dominance, then speed) and the last tie-break is the
    id, so identical runs give identical verdicts.
    """
    what = next((k.label for k in SPEED_KEYS.values() if k.field == speed_key), speed_key)
    rule = (f"fastest by {what} among candidates meeting every budget and gate; values within "
            f"{tie_fraction:.0%} of the fastest tie, broken by smaller size, then higher macro-F1, then id")
    speed = lambda it: _speed(it.metrics, speed_key)  # noqa: E731
    front = pareto_front(items, speed_key, tie_fraction)
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
    best = min(tied, key=lambda it: (it.metrics["size_mb"], -it.metrics["macro_f1"], it.id))
    b = best.metrics
    for it in eligible:
        if it is best:
            continue
        m = it.metrics
        if it in tied:
            why[it.id] = (f"ties on speed ({what} {_ms(speed(it))} within {tie_fraction:.0%} of {_ms(fastest)}) but is "
                          f"larger ({m['size_mb']:.3g} vs {b['size_mb']:.3g} MB)" if m["size_mb"] > b["size_mb"] else
                          f"ties on speed and size with {best.id}, lower macro-F1 ({m['macro_f1']:.4f} vs {b['macro_f1']:.4f})"
                          if m["macro_f1"] < b["macro_f1"] else f"ties with {best.id} on speed, size and macro-F1; "
                          f"{best.id} comes first by id")
        elif dominates(b, m, speed_key, tie_fraction):
            why[it.id] = (f"dominated by {best.id} (size {m['size_mb']:.3g} vs {b['size_mb']:.3g} MB, {what} "
                          f"{_ms(speed(it))} vs {_ms(speed(best))}, F1 {m['macro_f1']:.4f} vs {b['macro_f1']:.4f})")
        else:
            why[it.id] = f"slower: {what} {_ms(speed(it))} vs {_ms(speed(best))} (outside the {tie_fraction:.0%} tie band)"
    return best.id, why, rule
