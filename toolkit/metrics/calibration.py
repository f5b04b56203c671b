"""Calibration metrics and temperature scaling, as defined in DESIGN.md ("Definitions").

Every function takes numpy arrays and returns plain Python floats / lists so results go
straight into report.json. ECE is top-label with 15 equal-width bins on (0, 1]:
bin i holds confidences c with (i-1)/15 < c <= i/15, and a confidence of exactly 0 goes
in bin 1, so every sample lands in exactly one bin.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 15
_NLL_CLIP = 1e-12
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


# ----------------------------------------------------------------------------- validation
def check_labels(y: np.ndarray, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer labels in [0, n_classes), 1-D, non-empty; raises ValueError naming the fix."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one sample")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"{name} holds labels in [{lo}, {hi}] but n_classes={n_classes}; labels must be in [0, {n_classes - 1}]"
        )
    return y.astype(np.int64, copy=False)


def _check_probs(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) finite probabilities and n matching labels in [0, K)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probs must be a 2-D array (n_samples, n_classes), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or inf; pass softmax outputs, not raw logits")
    if p.min() < 0.0 or p.max() > 1.0 + 1e-9:
        raise ValueError("probs must lie in [0, 1]; did you pass logits? use softmax(logits) first")
    labels = check_labels(y, p.shape[1])
    if labels.shape[0] != p.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but y has {labels.shape[0]} labels")
    return p, labels


def check_logits(logits: np.ndarray, name: str = "logits") -> np.ndarray:
    """(n, K) finite logits as float64."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_classes), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name} contains NaN or inf")
    return z


def _check_bins(n_bins: int) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    return int(n_bins)


# ----------------------------------------------------------------------------- softmax
def _log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / T), stable: subtract the row max before exponentiating."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax(logits / T) in float64; stable for logits of any magnitude."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite positive number, got {temperature}")
    return np.exp(_log_softmax(check_logits(logits), float(temperature)))


# ----------------------------------------------------------------------------- binning
def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """0-based bin of each confidence: bin i (1-based) is ((i-1)/n, i/n]; 0 goes in bin 1.

    searchsorted on the exact edges (not ceil(c * n)) so c == i/n lands in bin i despite
    floating-point rounding of the product.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges, conf, side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


def _binned(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidence, sum of hits)."""
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hit.astype(np.float64), minlength=n_bins)
    return count, conf_sum, hit_sum


def _gaps(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """|accuracy - confidence| per bin and bin counts (gap is 0 for empty bins)."""
    count, conf_sum, hit_sum = _binned(conf, hit, n_bins)
    safe = np.maximum(count, 1.0)
    gap = np.abs(hit_sum / safe - conf_sum / safe)
    return gap, count


def _ece_of(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
    gap, count = _gaps(conf, hit, n_bins)
    return float(np.sum(gap * count) / count.sum())


def _top_label(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (max prob) and whether the argmax is right."""
    return probs.max(axis=1), probs.argmax(axis=1) == y


# ----------------------------------------------------------------------------- metrics
def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Top-label expected calibration error: sum over bins of (count/n) * |acc - conf|."""
    p, labels = _check_probs(probs, y)
    conf, hit = _top_label(p, labels)
    return _ece_of(conf, hit, _check_bins(n_bins))


def mce(probs: np.ndarray, y: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Maximum calibration error: the worst |acc - conf| over non-empty bins."""
    p, labels = _check_probs(probs, y)
    conf, hit = _top_label(p, labels)
    gap, count = _gaps(conf, hit, _check_bins(n_bins))
    return float(gap[count > 0].max())


def classwise_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Mean over classes k of the one-vs-rest ECE of p_k against (y == k).

    Top-label ECE only looks at the argmax; this catches miscalibration of the other
    classes' probabilities, which per-class thresholds depend on.
    """
    p, labels = _check_probs(probs, y)
    n_bins = _check_bins(n_bins)
    per_class = [_ece_of(p[:, k], labels == k, n_bins) for k in range(p.shape[1])]
    return float(np.mean(per_class))


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class; probabilities clipped at 1e-12."""
    p, labels = _check_probs(probs, y)
    picked = p[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.clip(picked, _NLL_CLIP, 1.0))))


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over samples of sum_k (p_k - onehot_k)^2, in [0, 2]."""
    p, labels = _check_probs(probs, y)
    onehot = np.zeros_like(p)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict:
    """Per-bin mean confidence, accuracy and count for a reliability diagram.

    Empty bins have confidence/accuracy None (JSON has no NaN). `ece` is included so a
    plot title can quote the same number as the report.
    """
    p, labels = _check_probs(probs, y)
    n_bins = _check_bins(n_bins)
    conf, hit = _top_label(p, labels)
    count, conf_sum, hit_sum = _binned(conf, hit, n_bins)
    mean = lambda s, c: float(s / c) if c > 0 else None  # noqa: E731
    return {
        "bin_edges": [float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)],
        "confidence": [mean(s, c) for s, c in zip(conf_sum, count)],
        "accuracy": [mean(s, c) for s, c in zip(hit_sum, count)],
        "count": [int(c) for c in count],
        "ece": _ece_of(conf, hit, n_bins),
    }


# ----------------------------------------------------------------------------- temperature
def _nll_logits(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """NLL of softmax(logits / T) in log space, clipped like nll() so the numbers agree."""
    logp = _log_softmax(logits, temperature)[np.arange(y.size), y]
    return float(-np.mean(np.maximum(logp, math.log(_NLL_CLIP))))


def _check_logits_labels(logits: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    z = check_logits(logits, f"logits_{name}")
    labels = check_labels(y, z.shape[1], f"y_{name}")
    if labels.size != z.shape[0]:
        raise ValueError(f"logits_{name} has {z.shape[0]} rows but y_{name} has {labels.size} labels")
    return z, labels


def fit_temperature(logits_val: np.ndarray, y_val: np.ndarray) -> float:
    """Scalar T > 0 minimising validation NLL of softmax(logits / T).

    Optimised over log T (bounded to [0.05, 20]) so the search is scale-free and T stays
    positive. Falls back to 1.0 if the optimum is not strictly better than no scaling, so
    re-calibration can never make the validation NLL worse.
    """
    from scipy.optimize import minimize_scalar

    z, labels = _check_logits_labels(logits_val, y_val, "val")
    objective = lambda log_t: _nll_logits(z, labels, math.exp(log_t))  # noqa: E731
    res = minimize_scalar(objective, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    temperature = float(math.exp(res.x))
    if not math.isfinite(temperature) or objective(res.x) >= _nll_logits(z, labels, 1.0):
        return 1.0
    return temperature


CV_FOLDS = 5
_CV_MIN_PER_FOLD = 2


def fit_temperature_cv(logits_val: np.ndarray, y_val: np.ndarray, folds: int = CV_FOLDS, seed: int = 0) -> dict:
    """T fitted on validation, applied only when it helps on held-out data (k-fold cross-validation).

    Each fold's T is fitted on the other folds and scored on that fold; T (fitted on all of validation)
    is applied only when the pooled held-out NLL is lower than with no scaling. Otherwise temperature is
    1.0 and "reason" says why: an in-sample fit always "improves" validation NLL, and a T that does not
    generalise makes test calibration worse. Folds come from a fixed seed, so identical runs agree.
    """
    z, labels = _check_logits_labels(logits_val, y_val, "val")
    n = labels.size
    fitted = fit_temperature(z, labels)
    out = {"method": f"{folds}-fold cross-validation on the validation split", "folds": folds,
           "fitted_temperature": float(fitted), "cv_nll_t1": None, "cv_nll_fitted": None}
    if n < folds * _CV_MIN_PER_FOLD:
        return {**out, "temperature": 1.0, "applied": False,
                "reason": f"only {n} validation samples: too few for {folds}-fold cross-validation, so T = 1"}
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    nll_t1 = nll_fit = 0.0
    for k, held in enumerate(parts):
        rest = np.concatenate([q for j, q in enumerate(parts) if j != k])
        t_k = fit_temperature(z[rest], labels[rest])
        nll_t1 += _nll_logits(z[held], labels[held], 1.0) * held.size
        nll_fit += _nll_logits(z[held], labels[held], t_k) * held.size
    nll_t1, nll_fit = nll_t1 / n, nll_fit / n
    out.update({"cv_nll_t1": float(nll_t1), "cv_nll_fitted": float(nll_fit)})
    if fitted != 1.0 and nll_fit < nll_t1:
        return {**out, "temperature": float(fitted), "applied": True,
                "reason": f"held-out NLL {nll_t1:.4f} -> {nll_fit:.4f} with fitted T ({folds}-fold CV on validation)"}
    return {**out, "temperature": 1.0, "applied": False,
            "reason": (f"fitted T = {fitted:.3f} does not lower held-out NLL ({nll_t1:.4f} without, {nll_fit:.4f} with; "
                       f"{folds}-fold CV on validation), so T = 1 is shipped")}


def _summary_block(probs: np.ndarray, y: np.ndarray) -> dict:
    return {"ece": ece(probs, y), "mce": mce(probs, y), "nll": nll(probs, y), "brier": brier(probs, y)}


def calibration_summary(
    logits_val: np.ndarray, y_val: np.ndarray, logits_test: np.ndarray, y_test: np.ndarray
) -> dict:
    """Fit T on validation (applied only when it lowers cross-validated NLL), report test calibration before and after.

    Fitting and reporting on different splits keeps the "after" numbers honest; the
    val_ numbers show what the fit itself achieved.
    """
    zv, yv = _check_logits_labels(logits_val, y_val, "val")
    zt, yt = _check_logits_labels(logits_test, y_test, "test")
    if zv.shape[1] != zt.shape[1]:
        raise ValueError(f"logits_val has {zv.shape[1]} classes but logits_test has {zt.shape[1]}")
    fit = fit_temperature_cv(zv, yv)
    t = fit["temperature"]
    before = _summary_block(softmax(zt), yt)
    after = _summary_block(softmax(zt, t), yt)
    out: dict = {"temperature": float(t), "temperature_fit": fit}
    for key in ("ece", "mce", "nll", "brier"):
        out[key] = before[key]
        out[f"{key}_recalibrated"] = after[key]
    out["classwise_ece"] = classwise_ece(softmax(zt), yt)
    out["classwise_ece_recalibrated"] = classwise_ece(softmax(zt, t), yt)
    out["val_nll"] = _nll_logits(zv, yv, 1.0)
    out["val_nll_recalibrated"] = _nll_logits(zv, yv, t)
    return out
