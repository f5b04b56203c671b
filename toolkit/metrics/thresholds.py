"""Decision thresholds tuned on validation, reported on test (DESIGN.md "Definitions").

A sample is predicted positive when ``score >= threshold``. Tuning is exact: every distinct
score is evaluated as a threshold in one pass (sort once, cumulative sums give TP/FP at
every cut), so the optimum is never missed between grid points. Curves for plots and AUC
come from scikit-learn (precision_recall_curve, roc_curve, average_precision_score).

Metrics: "f1", "youden" (TPR - FPR), "balanced" (balanced accuracy, (TPR + TNR) / 2),
"precision@X" (maximise recall subject to precision >= X) and "recall@X" (maximise
precision subject to recall >= X), with X in (0, 1].
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

_PLAIN = ("f1", "youden", "balanced")
_CONSTRAINED = ("precision", "recall")
_FALLBACK_THRESHOLD = 0.5
_TOL = 1e-12


class MetricSpec(NamedTuple):
    """A parsed threshold metric: name is f1 | youden | balanced | precision | recall."""

    name: str
    target: float | None = None

    def __str__(self) -> str:
        return self.name if self.target is None else f"{self.name}@{self.target:g}"


def parse_metric(s: str | MetricSpec) -> MetricSpec:
    """Validate a metric string such as "f1" or "precision@0.9" (a recipe/CLI typo fails here)."""
    if isinstance(s, MetricSpec):
        return s
    if not isinstance(s, str):
        raise ValueError(f"threshold metric must be a string, got {type(s).__name__}")
    text = s.strip().lower()
    if text in _PLAIN:
        return MetricSpec(text)
    name, sep, target = text.partition("@")
    if sep and name in _CONSTRAINED:
        try:
            x = float(target)
        except ValueError:
            x = math.nan
        if math.isfinite(x) and 0.0 < x <= 1.0:
            return MetricSpec(name, x)
        raise ValueError(f"threshold metric {s!r}: the target after '@' must be a number in (0, 1], e.g. {name}@0.9")
    raise ValueError(
        f"unknown threshold metric {s!r}; use one of f1, youden, balanced, precision@X, recall@X (X in (0, 1], e.g. 0.9)"
    )


# ----------------------------------------------------------------------------- validation
def _check_binary(scores: np.ndarray, y_binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y_binary)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or inf")
    if y.shape != s.shape:
        raise ValueError(f"y_binary has shape {y.shape} but scores has shape {s.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y_binary must hold only 0/1 (or False/True)")
    return s, y.astype(np.int64)


def _check_probs_labels(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from toolkit.metrics.calibration import check_labels

    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be a 2-D array (n_samples, n_classes >= 2), got shape {p.shape}")
    labels = check_labels(y, p.shape[1])
    if labels.size != p.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but y has {labels.size} labels")
    return p, labels


# ----------------------------------------------------------------------------- counting
def _counts_at_all_thresholds(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) and TP, FP when predicting positive for score >= each."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group].astype(np.float64)
    fp = (last_of_group + 1) - tp
    return s_sorted[last_of_group], tp, fp


def _div(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """a / b with 0 where b == 0 (sklearn's zero_division=0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _rates(tp: np.ndarray, fp: np.ndarray, pos: float, neg: float) -> dict[str, np.ndarray]:
    """Precision, recall, F1, Youden J and balanced accuracy from counts (vectorised)."""
    fn = pos - tp
    recall = _div(tp, pos)
    fpr = _div(fp, neg)
    return {
        "precision": _div(tp, tp + fp),
        "recall": recall,
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "youden": recall - fpr,
        "balanced": (recall + (1.0 - fpr)) / 2.0,
    }


def _objective(spec: MetricSpec) -> str:
    """The quantity a metric maximises (precision@X maximises recall, and vice versa)."""
    return {"precision": "recall", "recall": "precision"}.get(spec.name, spec.name)


def _unattainable_reason(spec: MetricSpec, pos: float, neg: float) -> str | None:
    if pos == 0:
        return "no positive samples, so the threshold cannot be tuned"
    if spec.name in ("youden", "balanced") and neg == 0:
        return f"no negative samples, so {spec.name} (which needs a false-positive rate) is undefined"
    return None


# ----------------------------------------------------------------------------- tuning
def best_threshold(scores: np.ndarray, y_binary: np.ndarray, metric: str) -> dict:
    """The threshold (one of the scores) that maximises `metric`, exactly.

    Ties go to the higher threshold (fewer positives) for f1/youden/balanced; for
    precision@X/recall@X ties in the maximised quantity go to the better constrained one.
    If no threshold can satisfy the metric, value and threshold are None and "reason" says why.
    """
    spec = parse_metric(metric)
    s, y = _check_binary(scores, y_binary)
    pos, neg = float(y.sum()), float(y.size - y.sum())
    result: dict = {"metric": str(spec), "threshold": None, "value": None}
    reason = _unattainable_reason(spec, pos, neg)
    if reason is not None:
        return {**result, "reason": reason}
    thresholds, tp, fp = _counts_at_all_thresholds(s, y)
    rates = _rates(tp, fp, pos, neg)
    i = _pick(spec, rates)
    if i is None:
        best = float(rates[spec.name].max())
        return {**result, "reason": f"no threshold reaches {spec.name} >= {spec.target:g} (best is {best:.4f})"}
    return {
        **result,
        "threshold": float(thresholds[i]),
        "value": float(rates[_objective(spec)][i]),
        "precision": float(rates["precision"][i]),
        "recall": float(rates["recall"][i]),
        "f1": float(rates["f1"][i]),
    }


def _pick(spec: MetricSpec, rates: dict[str, np.ndarray]) -> int | None:
    """Index of the best threshold (arrays are in descending-threshold order), or None."""
    if spec.target is None:
        return int(np.argmax(rates[spec.name]))  # first max = highest threshold
    feasible = np.flatnonzero(rates[spec.name] >= spec.target - _TOL)
    if feasible.size == 0:
        return None
    goal, constrained = rates[_objective(spec)][feasible], rates[spec.name][feasible]
    # lexsort: last key is primary; negate to sort descending; position breaks final ties.
    order = np.lexsort((feasible, -constrained, -goal))
    return int(feasible[order[0]])


def _one_vs_rest(probs: np.ndarray, y: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, scores, binary labels): one pair for binary tasks (the positive class 1), else one per class."""
    classes = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    return [(k, probs[:, k], (y == k).astype(np.int64)) for k in classes]


def tune_thresholds(probs_val: np.ndarray, y_val: np.ndarray, metric: str) -> list[dict]:
    """best_threshold per class on validation, with "fallback": True where it was unattainable."""
    spec = parse_metric(metric)
    p, y = _check_probs_labels(probs_val, y_val)
    out = []
    for k, scores, yb in _one_vs_rest(p, y):
        res = best_threshold(scores, yb, str(spec))
        out.append({"class": k, **res, "fallback": res["threshold"] is None})
    return out


def per_class_thresholds(probs_val: np.ndarray, y_val: np.ndarray, metric: str) -> list[float]:
    """One-vs-rest thresholds per class; a single threshold on p(class 1) for binary tasks.

    Where a class's metric is unattainable on validation (e.g. no positives), the threshold
    falls back to 0.5, the plain decision rule for a calibrated probability; call
    tune_thresholds() to see which classes fell back and why.
    """
    return [_FALLBACK_THRESHOLD if r["fallback"] else r["threshold"] for r in tune_thresholds(probs_val, y_val, metric)]


def thresholded_metrics(probs_test: np.ndarray, y_test: np.ndarray, thresholds: list[float], metric: str) -> dict:
    """Per class P/R/F1 and the tuned metric's value on test at validation-tuned thresholds.

    For precision@X / recall@X, "value" is the maximised quantity and "constraint_met"
    says whether the constraint tuned on validation still holds on test.
    """
    spec = parse_metric(metric)
    p, y = _check_probs_labels(probs_test, y_test)
    pairs = _one_vs_rest(p, y)
    if len(thresholds) != len(pairs):
        raise ValueError(
            f"got {len(thresholds)} thresholds for {p.shape[1]} classes; "
            f"expected {len(pairs)} (one for binary tasks, else one per class)"
        )
    per_class = [_at_threshold(spec, k, scores, yb, float(t)) for (k, scores, yb), t in zip(pairs, thresholds)]
    values = [c["value"] for c in per_class if c["value"] is not None]
    return {
        "metric": str(spec),
        "per_class": per_class,
        "mean_value": float(np.mean(values)) if values else None,
        "n_samples": int(y.size),
    }


def _at_threshold(spec: MetricSpec, k: int, scores: np.ndarray, yb: np.ndarray, t: float) -> dict:
    pred = scores >= t
    tp = np.array([float(np.sum(pred & (yb == 1)))])
    fp = np.array([float(np.sum(pred & (yb == 0)))])
    pos, neg = float(yb.sum()), float(yb.size - yb.sum())
    rates = {name: float(v[0]) for name, v in _rates(tp, fp, pos, neg).items()}
    undefined = _unattainable_reason(spec, pos, neg) is not None
    entry = {
        "class": k, "threshold": t, "support": int(pos),
        "precision": rates["precision"], "recall": rates["recall"], "f1": rates["f1"],
        "value": None if undefined else rates[_objective(spec)],
    }
    if spec.target is not None:
        entry["constraint_met"] = bool(rates[spec.name] >= spec.target - _TOL) and not undefined
    return entry


# ----------------------------------------------------------------------------- curves
def threshold_curves(scores: np.ndarray, y_binary: np.ndarray) -> dict:
    """P/R/F1 at every distinct threshold (ascending), the PR curve and the ROC curve.

    Needs both classes present: ROC and average precision are undefined otherwise.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    s, y = _check_binary(scores, y_binary)
    pos, neg = float(y.sum()), float(y.size - y.sum())
    if pos == 0 or neg == 0:
        raise ValueError("threshold_curves needs both positive and negative samples in y_binary")
    thresholds, tp, fp = _counts_at_all_thresholds(s, y)
    rates = _rates(tp, fp, pos, neg)
    precision, recall, _ = precision_recall_curve(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    as_list = lambda a: [float(v) for v in a]  # noqa: E731
    return {
        "thresholds": as_list(thresholds[::-1]),
        "precision": as_list(rates["precision"][::-1]),
        "recall": as_list(rates["recall"][::-1]),
        "f1": as_list(rates["f1"][::-1]),
        "pr_curve": {
            "precision": as_list(precision), "recall": as_list(recall),
            "average_precision": float(average_precision_score(y, s)),
        },
        "roc": {"fpr": as_list(fpr), "tpr": as_list(tpr), "auc": float(auc(fpr, tpr))},
    }


# ----------------------------------------------------------------------------- the decision rule
DECISION_RULE = ("binary: class 1 when p(class 1) >= thresholds[0], else class 0; multi-class: argmax of the "
                 "probabilities (each class k is also flagged, one-vs-rest, when p_k >= thresholds[k])")


def _check_decision_inputs(probs: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be a 2-D array (n_samples, n_classes >= 2), got shape {p.shape}")
    expected = 1 if p.shape[1] == 2 else p.shape[1]
    if t.size != expected:
        raise ValueError(f"got {t.size} thresholds for {p.shape[1]} classes; expected {expected} "
                         "(one for binary tasks, else one per class)")
    return p, t


def decide(probs: np.ndarray, thresholds) -> np.ndarray:
    """The one decision rule (DECISION_RULE) that evaluate, the bundle's fixtures, verify and predict all apply.

    Binary tasks use the validation-tuned threshold on p(class 1): that is what tuning it is for. Multi-class
    tasks decide by argmax (per-class one-vs-rest thresholds are flags, see flags(), not a single class).
    """
    p, t = _check_decision_inputs(probs, thresholds)
    if p.shape[1] == 2:
        return (p[:, 1] >= t[0]).astype(np.int64)
    return p.argmax(1).astype(np.int64)


def flags(probs: np.ndarray, thresholds) -> np.ndarray:
    """One-vs-rest flags: (n,) for binary (p(class 1) >= threshold, equal to decide()), else (n, K)."""
    p, t = _check_decision_inputs(probs, thresholds)
    if p.shape[1] == 2:
        return p[:, 1] >= t[0]
    return p >= t[None, :]
