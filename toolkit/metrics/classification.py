"""Classification metrics: macro-F1, per-class P/R/F1, bootstrap CIs, parity, slices.

macro-F1 follows DESIGN.md: sklearn ``f1_score(average="macro", zero_division=0)``, always
with ``labels=range(n_classes)`` so a class missing from a split still counts (as F1 = 0)
instead of silently shrinking the average. Point metrics come from scikit-learn; the
bootstrap re-implements only the confusion counts, vectorised, because calling sklearn
1000 times is ~100x slower, and the tests check it against sklearn.
"""
from __future__ import annotations

import numpy as np

from toolkit.metrics.calibration import check_labels, check_logits, ece


# ----------------------------------------------------------------------------- validation
def _check_pair(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Same-length 1-D integer label arrays in [0, n_classes), with at least 2 classes."""
    if int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2 for a classifier, got {n_classes}")
    yt = check_labels(y_true, n_classes, "y_true")
    yp = check_labels(y_pred, n_classes, "y_pred")
    if yt.size != yp.size:
        raise ValueError(f"y_true has {yt.size} labels but y_pred has {yp.size}")
    return yt, yp


def _check_level(level: float, n_resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")


# ----------------------------------------------------------------------------- point metrics
def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, labels: list[str] | None = None
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    The confusion matrix has rows = true class, columns = predicted class.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    yt, yp = _check_pair(y_true, y_pred, n_classes)
    names = _class_names(labels, n_classes)
    classes = list(range(n_classes))
    prec, rec, f1, support = precision_recall_fscore_support(
        yt, yp, labels=classes, average=None, zero_division=0
    )
    per_class = [
        {"label": names[k], "precision": float(prec[k]), "recall": float(rec[k]),
         "f1": float(f1[k]), "support": int(support[k])}
        for k in classes
    ]
    return {
        "accuracy": float(accuracy_score(yt, yp)),
        "macro_f1": macro_f1_score(yt, yp, n_classes),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(yt, yp, labels=classes).astype(int).tolist(),
    }


def _class_names(labels: list[str] | None, n_classes: int) -> list[str]:
    if labels is None:
        return [str(k) for k in range(n_classes)]
    if len(labels) != n_classes:
        raise ValueError(f"labels has {len(labels)} names but n_classes={n_classes}; give one name per class")
    return [str(name) for name in labels]


def macro_f1_score(yt: np.ndarray, yp: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(yt, yp, labels=list(range(n_classes)), average="macro", zero_division=0))


# ----------------------------------------------------------------------------- bootstrap
def _resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement from a seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _macro_f1_batch(yt: np.ndarray, yp: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of every resample at once: one bincount builds all confusion matrices.

    Per class F1 = 2TP / (2TP + FP + FN), 0 when the denominator is 0 (sklearn's
    zero_division=0), averaged over all n_classes.
    """
    b = idx.shape[0]
    k = n_classes
    offsets = (np.arange(b, dtype=np.int64) * k * k)[:, None]
    codes = offsets + yt[idx] * k + yp[idx]
    cm = np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def macro_f1_ci(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
    n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of macro-F1 (seeded, so reports reproduce)."""
    _check_level(level, n_resamples)
    yt, yp = _check_pair(y_true, y_pred, n_classes)
    idx = _resample_indices(yt.size, int(n_resamples), seed)
    return _percentiles(_macro_f1_batch(yt, yp, idx, n_classes), level)


def paired_f1_delta_ci(
    y_true: np.ndarray, pred_candidate: np.ndarray, pred_baseline: np.ndarray, n_classes: int,
    n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
) -> dict:
    """Paired bootstrap CI of macro_f1(candidate) - macro_f1(baseline).

    Both predictors are scored on the same resampled indices, so sample difficulty
    cancels and the interval is much tighter than comparing two independent CIs; this is
    what decides whether a compressed model's F1 drop is real.
    """
    _check_level(level, n_resamples)
    yt, pc = _check_pair(y_true, pred_candidate, n_classes)
    _, pb = _check_pair(y_true, pred_baseline, n_classes)
    idx = _resample_indices(yt.size, int(n_resamples), seed)
    deltas = _macro_f1_batch(yt, pc, idx, n_classes) - _macro_f1_batch(yt, pb, idx, n_classes)
    low, high = _percentiles(deltas, level)
    return {
        "delta": macro_f1_score(yt, pc, n_classes) - macro_f1_score(yt, pb, n_classes),
        "low": low,
        "high": high,
        "n_resamples": int(n_resamples),
        "n_samples": int(yt.size),
    }


# ----------------------------------------------------------------------------- parity
def output_parity(logits: np.ndarray, baseline_logits: np.ndarray) -> dict:
    """How closely a candidate reproduces the fp32 baseline's outputs on the same inputs."""
    z = check_logits(logits, "logits")
    zb = check_logits(baseline_logits, "baseline_logits")
    if z.shape != zb.shape:
        raise ValueError(f"logits shape {z.shape} != baseline_logits shape {zb.shape}; run both on the same inputs")
    return {
        "top1_agreement": float(np.mean(z.argmax(axis=1) == zb.argmax(axis=1))),
        "max_abs_logit_delta": float(np.max(np.abs(z - zb))),
    }


def mean_kl(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(logits)) per row: a continuous measure of how far a candidate's
    outputs moved from the reference (macro-F1 on a few hundred rows moves in steps of one sample)."""
    from toolkit.metrics.calibration import softmax

    p = softmax(np.asarray(ref_logits, dtype=np.float64))
    q = softmax(np.asarray(logits, dtype=np.float64))
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


# ----------------------------------------------------------------------------- slices
def slice_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
    slices: dict[str, np.ndarray], n_classes: int,
) -> dict:
    """Per slice value: sample count, macro-F1 and top-label ECE.

    Within a slice, macro-F1 averages over the classes that occur in that slice (in its
    labels or predictions; sklearn's default), not all n_classes: a slice such as
    "language=fr" that simply has no examples of a rare class should not be scored 0 on
    that class.
    """
    from sklearn.metrics import f1_score

    yt, yp = _check_pair(y_true, y_pred, n_classes)
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (yt.size, n_classes):
        raise ValueError(f"probs must have shape ({yt.size}, {n_classes}), got {p.shape}")
    out: dict = {}
    for name, values in slices.items():
        values = np.asarray(values)
        if values.shape != (yt.size,):
            raise ValueError(f"slice {name!r} has shape {values.shape}; expected one value per sample ({yt.size},)")
        keys = values.astype(str)
        out[str(name)] = {}
        for key in np.unique(keys):
            mask = keys == key
            out[str(name)][str(key)] = {
                "n": int(mask.sum()),
                "macro_f1": float(f1_score(yt[mask], yp[mask], average="macro", zero_division=0)),
                "ece": ece(p[mask], yt[mask]),
            }
    return out


__all__ = [
    "classification_metrics", "macro_f1_ci", "paired_f1_delta_ci", "output_parity", "slice_metrics",
]
