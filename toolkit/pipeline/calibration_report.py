"""The calibration report of `optkit calibrate`, from logits alone (no model): quality with its bootstrap CI,
the one calibration section (metrics/calibration_section.py, the same compress computes per candidate),
threshold curves for the classes that matter most, slices, and notes where the test split is too small."""
from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.core.errors import ConfigError
from toolkit.output.calibration_page import MAX_PLOTTED_CLASSES

CI_TOO_WIDE = 0.02      # macro-F1 bootstrap CI wider than this: the test split cannot tell small differences apart


def parse_metric(metric: str) -> str:
    """The canonical metric string; a typo is a ConfigError (exit 2), not a traceback."""
    from toolkit.metrics.thresholds import parse_metric as parse

    try:
        return str(parse(metric))
    except ValueError as exc:
        raise ConfigError(f"--metric: {exc}") from exc


def _weakest_classes(per_class_f1: list[float], n_classes: int) -> list[int]:
    if n_classes == 2:
        return [1]  # binary: thresholds are on p(class 1), as in metrics.thresholds
    order = sorted(range(n_classes), key=lambda k: (per_class_f1[k], k))
    return sorted(order[:MAX_PLOTTED_CLASSES]) if n_classes > MAX_PLOTTED_CLASSES else list(range(n_classes))


def calibration_report(logits_val: np.ndarray, y_val: np.ndarray, logits_test: np.ndarray, y_test: np.ndarray,
                       metric: str = "f1", labels: list[str] | None = None,
                       slices: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict:
    """The calibration section from logits alone: T and thresholds fitted on validation, numbers on test."""
    from toolkit.metrics import classification as cls
    from toolkit.metrics import thresholds as thr
    from toolkit.metrics.calibration_section import calibration_section

    metric = parse_metric(metric)
    zv, zt = np.asarray(logits_val, dtype=np.float64), np.asarray(logits_test, dtype=np.float64)
    yv, yt = np.asarray(y_val).astype(np.int64), np.asarray(y_test).astype(np.int64)
    n = zt.shape[1]
    labels = [str(x) for x in labels] if labels is not None else [str(k) for k in range(n)]
    pred = zt.argmax(1)

    quality = cls.classification_metrics(yt, pred, n, labels)
    ci = [float(v) for v in cls.macro_f1_ci(yt, pred, n, seed=seed)]
    section = calibration_section(zv, yv, zt, yt, metric)  # the same arithmetic compress runs per candidate
    probs_t, probs_t_raw = section.probs_test, section.probs_test_raw

    report: dict[str, Any] = {
        "metric": metric,
        "splits": {"fit": "validation (temperature and thresholds)", "report": "test",
                   "n_val": int(yv.size), "n_test": int(yt.size)},
        "labels": labels,
        "quality": {"macro_f1": quality["macro_f1"], "accuracy": quality["accuracy"], "macro_f1_ci": ci,
                    "macro_f1_ci_width": ci[1] - ci[0], "per_class": quality["per_class"]},
        "calibration": section.summary,
        "reliability": section.reliability,
        "thresholds": section.thresholds,
    }
    # curves for the classes whose threshold matters most (binary: the positive class)
    plotted = _weakest_classes([c["f1"] for c in quality["per_class"]], n)
    curves = {}
    for k in plotted:
        yb = (yt == k).astype(np.int64)
        if 0 < yb.sum() < yb.size:
            curves[k] = thr.threshold_curves(probs_t[:, k], yb)
    report["curves"] = [{"class": k, "label": labels[k], "auc": c["roc"]["auc"],
                         "average_precision": c["pr_curve"]["average_precision"]} for k, c in curves.items()]
    if slices:
        after = cls.slice_metrics(yt, pred, probs_t, slices, n)
        before = cls.slice_metrics(yt, pred, probs_t_raw, slices, n)
        for s, vals in after.items():
            for v, m in vals.items():
                m["ece_before"] = before[s][v]["ece"]
        report["slices"] = after
    report["notes"] = _notes(report)
    report["_curves"] = curves  # plotting input; dropped before writing JSON
    return report


def _notes(r: dict) -> list[str]:
    """Where the test split is too small to tell: said plainly instead of left to the reader."""
    notes = []
    lo, hi = r["quality"]["macro_f1_ci"]
    width = hi - lo
    n_test = r["splits"]["n_test"]
    if width > CI_TOO_WIDE:
        notes.append(f"too small to tell: the macro-F1 95% bootstrap CI [{lo:.4f}, {hi:.4f}] is {width:.4f} wide "
                     f"(> {CI_TOO_WIDE}) on {n_test} test samples; differences in macro-F1 smaller than about "
                     f"{width / 2:.3f} (between candidates, thresholds or temperatures) are not evidence")
        tuned = r["thresholds"]["test"]["per_class"]
        plain = r["thresholds"]["test_at_0.5"]["per_class"]
        gain = float(np.mean([a["f1"] for a in tuned]) - np.mean([b["f1"] for b in plain]))
        if abs(gain) < width / 2:
            notes.append(f"too small to tell: tuned thresholds change the mean one-vs-rest test F1 by {gain:+.4f} "
                         f"versus 0.5, within the noise of {n_test} test samples")
    fallbacks = [v for v in r["thresholds"]["validation"] if v["fallback"]]
    for v in fallbacks:
        notes.append(f"class {r['labels'][v['class']]}: threshold fell back to 0.5 ({v.get('reason', 'unattainable')})")
    if r["calibration"]["temperature"] == 1.0:
        notes.append("temperature scaling did not lower the validation NLL, so T = 1 (the logits are left as they are)")
    return notes


__all__ = ["calibration_report", "parse_metric", "CI_TOO_WIDE"]
