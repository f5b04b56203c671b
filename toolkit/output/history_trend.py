"""Regression detection over the nightly history (history.py stores it): one finding per series, a
robust noise band (median + k x 1.4826 x MAD, with a relative floor), and the CI check."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from toolkit.core.errors import ConfigError

# The series key and the metrics where bigger is better (a regression is then a drop). history.py
# imports these names back, so this module imports the store only inside functions (no import cycle).
SERIES_FIELDS = ("model", "backend", "precision", "batch", "device", "host_key")
HIGHER_IS_BETTER = frozenset({"throughput_per_s"})

# Consistency constant: 1.4826 * MAD estimates the standard deviation of normal data.
MAD_TO_SIGMA = 1.4826


def noise_band(previous: list[float], *, min_relative: float, mad_k: float) -> tuple[float, float]:
    """(baseline median, band half-width) from previous points.

    The band is the larger of a robust noise estimate (k x 1.4826 x MAD, a sigma estimate
    that one wild night cannot inflate the way a standard deviation would) and a relative
    floor: with 3 quiet nights the MAD can be ~0, and sub-millisecond timings still move by
    several percent, so a floor stops every 2% wobble from paging someone.
    """
    med = statistics.median(previous)
    mad = statistics.median(abs(v - med) for v in previous)
    return med, max(mad_k * MAD_TO_SIGMA * mad, min_relative * abs(med))


def series_key_dict(key: tuple) -> dict[str, Any]:
    return dict(zip(SERIES_FIELDS, key))


def assess(
    db_path: str | Path,
    window: int = 5,
    metric: str = "latency_p50_ms",
    min_relative: float = 0.10,
    mad_k: float = 3.0,
) -> list[dict[str, Any]]:
    """One finding per series, with status "regression", "ok" or "not enough history".

    The latest point of each series is compared with up to `window` points before it:
    regression if latest > median(prev) + max(mad_k*1.4826*MAD(prev), min_relative*median(prev))
    (mirrored for throughput, where lower is worse). Fewer than 2 previous points cannot
    give a noise estimate, so such series are reported, not judged.
    """
    from toolkit.output.history import check_metric, series_points

    check_metric(metric)
    if window < 2:
        raise ConfigError(f"window={window}: needs at least 2 previous runs to estimate noise; use --window 2 or more")
    from toolkit.core.bounds import check_float

    # finite and bounded: NaN would compare False everywhere and flag nothing, silently
    check_float("--min-relative", min_relative, 0, 100)
    check_float("mad_k", mad_k, 0, 1000)
    higher_better = metric in HIGHER_IS_BETTER
    findings = []
    for key, pts in sorted(series_points(db_path, metric).items(), key=lambda kv: tuple(map(str, kv[0]))):
        latest = pts[-1]
        prev = [p["value"] for p in pts[:-1][-window:]]
        finding: dict[str, Any] = {
            "series": series_key_dict(key),
            "metric": metric,
            "latest": latest["value"],
            "latest_run_id": latest["run_id"],
            "latest_timestamp": latest["timestamp"],
            "git_revision": latest["git_revision"],
            "model_sha256": latest["model_sha256"],
            "threads": latest["threads"],
            "measured_on": latest["measured_on"],
            "n_previous": len(prev),
            "baseline_median": None,
            "band": None,
            "threshold": None,
            "ratio": None,
        }
        if len(prev) < 2:
            finding["status"] = "not enough history"
            findings.append(finding)
            continue
        med, band = noise_band(prev, min_relative=min_relative, mad_k=mad_k)
        threshold = med - band if higher_better else med + band
        worse = latest["value"] < threshold if higher_better else latest["value"] > threshold
        finding.update(
            baseline_median=med,
            band=band,
            threshold=threshold,
            ratio=(latest["value"] / med) if med else None,
            status="regression" if worse else "ok",
        )
        findings.append(finding)
    return findings


def detect_regressions(
    db_path: str | Path,
    window: int = 5,
    metric: str = "latency_p50_ms",
    min_relative: float = 0.10,
    mad_k: float = 3.0,
) -> list[dict[str, Any]]:
    """Only the regressed series (empty list = nothing got worse), so `if detect_regressions(...)`
    is the CI check. Series without enough history are in `assess()` and the nightly report.
    """
    return [
        f for f in assess(db_path, window=window, metric=metric, min_relative=min_relative, mad_k=mad_k)
        if f["status"] == "regression"
    ]


__all__ = ["noise_band", "series_key_dict", "assess", "detect_regressions", "MAD_TO_SIGMA"]
