"""Threshold tuning is exact (brute force agrees), curves agree with scikit-learn."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import precision_recall_curve, roc_auc_score

from toolkit.metrics import thresholds as th
from toolkit.metrics.calibration import softmax


@st.composite
def scores_and_labels(draw, max_n: int = 60, both_classes: bool = True):
    n = draw(st.integers(2, max_n))
    # Rounded scores make ties common, which is where threshold code usually breaks.
    scores = draw(hnp.arrays(np.float64, (n,), elements=st.floats(0, 1).map(lambda v: round(v, 2))))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 1)))
    if both_classes:
        assume(0 < y.sum() < n)
    return scores, y


def brute_force(scores: np.ndarray, y: np.ndarray) -> dict[float, dict[str, float]]:
    """P/R/F1/Youden/balanced at every distinct score, one threshold at a time."""
    out = {}
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & (y == 1))
        fp = np.sum(pred & (y == 0))
        fn = np.sum(~pred & (y == 1))
        tn = np.sum(~pred & (y == 0))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        tpr, tnr = rec, (tn / (tn + fp) if tn + fp else 0.0)
        out[float(t)] = {"precision": prec, "recall": rec, "f1": f1, "youden": tpr + tnr - 1, "balanced": (tpr + tnr) / 2}
    return out


def noisy_scores(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), y


# ----------------------------------------------------------------------------- parse_metric
@pytest.mark.parametrize(
    "text, expected",
    [("f1", ("f1", None)), (" Youden ", ("youden", None)), ("balanced", ("balanced", None)),
     ("precision@0.9", ("precision", 0.9)), ("recall@1", ("recall", 1.0))],
)
def test_parse_metric_accepts(text, expected):
    assert tuple(th.parse_metric(text)) == expected


@pytest.mark.parametrize("text", ["accuracy", "precision", "precision@", "precision@1.5", "recall@0", "f1@0.5", "recall@abc", ""])
def test_parse_metric_rejects_with_clear_message(text):
    with pytest.raises(ValueError, match="threshold metric"):
        th.parse_metric(text)


# ----------------------------------------------------------------------------- best_threshold
@settings(max_examples=60, deadline=None)
@given(scores_and_labels(), st.sampled_from(["f1", "youden", "balanced"]))
def test_best_threshold_equals_brute_force(data, metric):
    scores, y = data
    table = brute_force(scores, y)
    res = th.best_threshold(scores, y, metric)
    best = max(row[metric] for row in table.values())
    assert res["value"] == pytest.approx(best, abs=1e-12)
    assert res["threshold"] in table
    assert table[res["threshold"]][metric] == pytest.approx(best, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(5, 80), elements=st.floats(0, 1)), st.data())
def test_exact_f1_beats_a_grid(scores, data):
    y = data.draw(hnp.arrays(np.int64, scores.shape, elements=st.integers(0, 1)))
    assume(y.sum() > 0)
    grid_best = 0.0
    for t in np.arange(0.0, 1.0001, 0.01):
        pred = scores >= t
        tp, fp, fn = np.sum(pred & (y == 1)), np.sum(pred & (y == 0)), np.sum(~pred & (y == 1))
        grid_best = max(grid_best, 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert th.best_threshold(scores, y, "f1")["value"] >= grid_best - 1e-12


@settings(max_examples=60, deadline=None)
@given(scores_and_labels(), st.sampled_from(["precision", "recall"]), st.sampled_from([0.5, 0.7, 0.9, 1.0]))
def test_constrained_metrics_equal_brute_force(data, name, target):
    scores, y = data
    other = "recall" if name == "precision" else "precision"
    table = brute_force(scores, y)
    feasible = {t: row for t, row in table.items() if row[name] >= target - 1e-12}
    res = th.best_threshold(scores, y, f"{name}@{target}")
    if not feasible:
        assert res["value"] is None and res["threshold"] is None
        assert "no threshold reaches" in res["reason"]
        return
    best = max(row[other] for row in feasible.values())
    assert res["value"] == pytest.approx(best, abs=1e-12)
    assert res[name] >= target - 1e-12  # the constraint holds at the chosen threshold
    assert table[res["threshold"]][other] == pytest.approx(best, abs=1e-12)


def test_precision_at_known_case():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 0, 0])
    res = th.best_threshold(scores, y, "precision@0.75")
    # t=0.6 -> 3 TP, 1 FP: precision 0.75, recall 1.0 (t=0.8 has precision 1 but recall 2/3).
    assert res["threshold"] == 0.6 and res["value"] == 1.0 and res["precision"] == 0.75
    res = th.best_threshold(scores, y, "recall@0.6")
    assert res["threshold"] == 0.8 and res["value"] == 1.0


def test_unattainable_and_degenerate_cases_say_why():
    scores = np.array([0.2, 0.4, 0.6])
    none_pos = th.best_threshold(scores, np.zeros(3, int), "f1")
    assert none_pos["value"] is None and "no positive" in none_pos["reason"]
    no_neg = th.best_threshold(scores, np.ones(3, int), "youden")
    assert no_neg["value"] is None and "no negative" in no_neg["reason"]
    json.dumps(none_pos)


@pytest.mark.parametrize(
    "scores, y, match",
    [(np.array([0.1, np.nan]), np.array([0, 1]), "NaN"),
     (np.array([0.1, 0.2]), np.array([0, 2]), "0/1"),
     (np.array([0.1, 0.2]), np.array([0, 1, 1]), "shape"),
     (np.array([]), np.array([]), "non-empty")],
)
def test_best_threshold_rejects_bad_input(scores, y, match):
    with pytest.raises(ValueError, match=match):
        th.best_threshold(scores, y, "f1")


# ----------------------------------------------------------------------------- curves
@settings(max_examples=40, deadline=None)
@given(scores_and_labels())
def test_threshold_curves_agree_with_sklearn(data):
    scores, y = data
    c = th.threshold_curves(scores, y)
    assert c["roc"]["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    # Mann-Whitney reference: P(score_pos > score_neg) + 0.5 P(tie).
    pos, neg = scores[y == 1], scores[y == 0]
    mw = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) / (len(pos) * len(neg))
    assert c["roc"]["auc"] == pytest.approx(mw, abs=1e-12)
    p, r, t = precision_recall_curve(y, scores)
    np.testing.assert_allclose(c["thresholds"], t)
    np.testing.assert_allclose(c["precision"], p[:-1], atol=1e-12)
    np.testing.assert_allclose(c["recall"], r[:-1], atol=1e-12)
    assert len(c["f1"]) == len(c["thresholds"])
    json.dumps(c)


def test_threshold_curves_need_both_classes():
    with pytest.raises(ValueError, match="both positive and negative"):
        th.threshold_curves(np.array([0.1, 0.9]), np.array([1, 1]))


# ----------------------------------------------------------------------------- per class
def multiclass_split(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5
    return softmax(logits), y


def test_per_class_thresholds_are_one_vs_rest_best_f1():
    probs, y = multiclass_split(600, 4, seed=0)
    ts = th.per_class_thresholds(probs, y, "f1")
    assert len(ts) == 4
    for k, t in enumerate(ts):
        assert t == th.best_threshold(probs[:, k], (y == k).astype(int), "f1")["threshold"]


def test_binary_task_gets_one_threshold_on_positive_class():
    scores, y = noisy_scores(400, seed=1)
    probs = np.c_[1 - scores, scores]
    ts = th.per_class_thresholds(probs, y, "youden")
    assert ts == [th.best_threshold(scores, y, "youden")["threshold"]]
    report = th.thresholded_metrics(probs, y, ts, "youden")
    assert [row["class"] for row in report["per_class"]] == [1]


def test_unattainable_class_falls_back_and_is_flagged():
    probs, y = multiclass_split(300, 3, seed=2)
    y = np.where(y == 2, 0, y)  # class 2 absent from validation
    details = th.tune_thresholds(probs, y, "f1")
    assert [d["fallback"] for d in details] == [False, False, True]
    assert th.per_class_thresholds(probs, y, "f1")[2] == 0.5


def test_thresholded_metrics_on_test_split():
    pv, yv = multiclass_split(800, 3, seed=3)
    pt, yt = multiclass_split(800, 3, seed=4)
    ts = th.per_class_thresholds(pv, yv, "recall@0.8")
    report = th.thresholded_metrics(pt, yt, ts, "recall@0.8")
    assert report["metric"] == "recall@0.8" and len(report["per_class"]) == 3
    for k, row in enumerate(report["per_class"]):
        pred = pt[:, k] >= ts[k]
        tp = np.sum(pred & (yt == k))
        assert row["precision"] == pytest.approx(tp / pred.sum())
        assert row["recall"] == pytest.approx(tp / np.sum(yt == k))
        assert row["value"] == row["precision"]  # recall@X maximises precision
        assert row["constraint_met"] == (row["recall"] >= 0.8)
        assert row["support"] == int(np.sum(yt == k))
    assert report["mean_value"] == pytest.approx(np.mean([r["value"] for r in report["per_class"]]))
    json.dumps(report)
    with pytest.raises(ValueError, match="expected 3"):
        th.thresholded_metrics(pt, yt, ts[:2], "f1")


# ----------------------------------------------------------------------------- plot
def test_plot_threshold_curves_writes_png(tmp_path):
    from toolkit.output.plots_calibration import plot_threshold_curves

    scores, y = noisy_scores(500, seed=0)
    out = plot_threshold_curves(th.threshold_curves(scores, y), tmp_path / "curves.png", "class 1 vs rest")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
