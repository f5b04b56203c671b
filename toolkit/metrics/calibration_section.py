"""The one calibration section: temperature, ECE/MCE/NLL/Brier before and after it, reliability bins and
per-class thresholds, from validation and test logits. compress (pipeline/evaluate.py) and
`optkit calibrate` (pipeline/calibrate.py) both call `calibration_section`, so the two can never disagree.

Definitions are DESIGN.md's: T and thresholds are fitted on validation, every number is on test.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from toolkit.metrics import calibration as cal
from toolkit.metrics import thresholds as thr


@dataclasses.dataclass(frozen=True)
class CalibrationSection:
    summary: dict            # metrics.calibration.calibration_summary: T, before/after ECE, MCE, NLL, Brier, ...
    reliability: dict        # {"before": bins, "after": bins} on test
    thresholds: dict         # metric, values, tuned_on, applied_to, classes, validation rows, test, test_at_0.5
    probs_val: np.ndarray    # softmax(logits / T)
    probs_test: np.ndarray
    probs_test_raw: np.ndarray  # softmax(logits), T = 1

    @property
    def temperature(self) -> float:
        return float(self.summary["temperature"])


def calibration_section(logits_val: np.ndarray, y_val: np.ndarray, logits_test: np.ndarray, y_test: np.ndarray,
                        metric: str = "f1") -> CalibrationSection:
    """Fit T (validation NLL) and one-vs-rest thresholds for `metric` on softmax(logits / T), report on test."""
    summary = cal.calibration_summary(logits_val, y_val, logits_test, y_test)
    t = summary["temperature"]
    probs_v, probs_t, probs_raw = cal.softmax(logits_val, t), cal.softmax(logits_test, t), cal.softmax(logits_test)
    tuned = thr.tune_thresholds(probs_v, y_val, metric)
    values = [float(v) for v in thr.per_class_thresholds(probs_v, y_val, metric)]
    thresholds = {
        "metric": str(thr.parse_metric(metric)), "values": values, "tuned_on": "validation",
        "applied_to": "softmax(logits / temperature)",
        "classes": [r["class"] for r in tuned],
        "validation": tuned,
        "test": thr.thresholded_metrics(probs_t, y_test, values, metric),
        "test_at_0.5": thr.thresholded_metrics(probs_t, y_test, [0.5] * len(values), metric),
    }
    reliability = {"before": cal.reliability_bins(probs_raw, y_test), "after": cal.reliability_bins(probs_t, y_test)}
    return CalibrationSection(summary, reliability, thresholds, probs_v, probs_t, probs_raw)


__all__ = ["CalibrationSection", "calibration_section"]
