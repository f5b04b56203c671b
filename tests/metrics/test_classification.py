"""Classification metrics agree with scikit-learn; bootstrap CIs are fast, seeded and sane."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import f1_score, precision_recall_fscore_support

from toolkit.metrics import classification as clf
from toolkit.metrics.calibration import ece, softmax


@st.composite
def label_pairs(draw, max_n: int = 80, max_k: int = 7):
    k = draw(st.integers(2, max_k))
    n = draw(st.integers(1, max_n))
    labels = st.integers(0, k - 1)
    yt = draw(hnp.arrays(np.int64, (n,), elements=labels))
    yp = draw(hnp.arrays(np.int64, (n,), elements=labels))
    return yt, yp, k


def noisy_predictions(n: int, k: int, accuracy: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < accuracy, y, rng.integers(0, k, n))
    return y, pred


# ----------------------------------------------------------------------------- point metrics
@settings(max_examples=50, deadline=None)
@given(label_pairs())
def test_metrics_equal_sklearn_on_random_labels(data):
    yt, yp, k = data
    m = clf.classification_metrics(yt, yp, k)
    labels = list(range(k))
    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=labels, zero_division=0)
    assert m["macro_f1"] == pytest.approx(f1_score(yt, yp, labels=labels, average="macro", zero_division=0))
    assert len(m["per_class"]) == k  # absent classes still reported
    for c, row in enumerate(m["per_class"]):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[c], r[c], f[c], s[c]))
    assert m["accuracy"] == pytest.approx(np.mean(yt == yp))
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (k, k) and cm.sum() == len(yt)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(yt, minlength=k))  # rows = true


def test_absent_class_counts_as_zero_f1():
    # Class 2 never occurs: macro-F1 averages over 3 classes, not 2.
    m = clf.classification_metrics(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1]), 3, labels=["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert [row["label"] for row in m["per_class"]] == ["a", "b", "c"]
    assert m["per_class"][2]["support"] == 0
    json.dumps(m)


@pytest.mark.parametrize(
    "yt, yp, k, labels, match",
    [
        (np.array([0, 1]), np.array([0]), 2, None, "y_pred has 1"),
        (np.array([0, 5]), np.array([0, 1]), 2, None, "n_classes=2"),
        (np.array([0, 1]), np.array([0, 1]), 2, ["only-one"], "one name per class"),
        (np.array([]), np.array([]), 2, None, "empty"),
        (np.array([0.5, 1]), np.array([0, 1]), 2, None, "integer"),
        (np.array([0, 0]), np.array([0, 0]), 1, None, ">= 2"),
    ],
)
def test_bad_input_raises_value_error(yt, yp, k, labels, match):
    with pytest.raises(ValueError, match=match):
        clf.classification_metrics(yt, yp, k, labels=labels)


# ----------------------------------------------------------------------------- bootstrap
def test_batched_bootstrap_f1_equals_sklearn_per_resample():
    y, pred = noisy_predictions(60, 5, 0.6, seed=2)
    idx = np.random.default_rng(0).integers(0, 60, size=(25, 60))
    batch = clf._macro_f1_batch(y, pred, idx, 5)
    for b in range(25):
        expected = f1_score(y[idx[b]], pred[idx[b]], labels=range(5), average="macro", zero_division=0)
        assert batch[b] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_ci_contains_point_and_is_reproducible(seed):
    y, pred = noisy_predictions(400, 10, 0.7, seed=seed)
    point = clf.classification_metrics(y, pred, 10)["macro_f1"]
    low, high = clf.macro_f1_ci(y, pred, 10, seed=seed)
    assert low < point < high
    assert high - low < 0.2
    assert clf.macro_f1_ci(y, pred, 10, seed=seed) == (low, high)
    assert clf.macro_f1_ci(y, pred, 10, seed=seed + 100) != (low, high)


def test_macro_f1_ci_wider_at_higher_level():
    y, pred = noisy_predictions(300, 4, 0.7, seed=8)
    lo90, hi90 = clf.macro_f1_ci(y, pred, 4, level=0.90)
    lo99, hi99 = clf.macro_f1_ci(y, pred, 4, level=0.99)
    assert lo99 <= lo90 and hi99 >= hi90 and (hi99 - lo99) > (hi90 - lo90)


def test_macro_f1_ci_is_fast():
    y, pred = noisy_predictions(400, 10, 0.7, seed=0)
    clf.macro_f1_ci(y, pred, 10)  # warm up imports
    start = time.perf_counter()
    clf.macro_f1_ci(y, pred, 10, n_resamples=1000)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("bad", [{"level": 1.0}, {"level": 0.0}, {"n_resamples": 0}])
def test_ci_rejects_bad_settings(bad):
    y, pred = noisy_predictions(20, 3, 0.7, seed=0)
    with pytest.raises(ValueError):
        clf.macro_f1_ci(y, pred, 3, **bad)


def test_paired_delta_of_predictor_against_itself_is_exactly_zero():
    y, pred = noisy_predictions(400, 10, 0.7, seed=5)
    d = clf.paired_f1_delta_ci(y, pred, pred.copy(), 10)
    assert d == {"delta": 0.0, "low": 0.0, "high": 0.0, "n_resamples": 1000, "n_samples": 400}


def test_paired_delta_detects_a_real_drop_and_is_tighter_than_unpaired():
    y, base = noisy_predictions(800, 5, 0.85, seed=6)
    rng = np.random.default_rng(7)
    worse = np.where(rng.random(800) < 0.10, (base + 1) % 5, base)  # break ~10% of predictions
    d = clf.paired_f1_delta_ci(y, worse, base, 5, seed=3)
    f_worse = clf.classification_metrics(y, worse, 5)["macro_f1"]
    f_base = clf.classification_metrics(y, base, 5)["macro_f1"]
    assert d["delta"] == pytest.approx(f_worse - f_base)
    assert d["low"] <= d["delta"] <= d["high"] < 0  # the drop is significant
    lo_b, hi_b = clf.macro_f1_ci(y, base, 5, seed=3)
    assert d["high"] - d["low"] < hi_b - lo_b
    assert clf.paired_f1_delta_ci(y, worse, base, 5, seed=3) == d


# ----------------------------------------------------------------------------- parity, slices
def test_output_parity():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 4))
    same = clf.output_parity(base.copy(), base)
    assert same == {"top1_agreement": 1.0, "max_abs_logit_delta": 0.0}
    shifted = base.copy()
    shifted[0] = -shifted[0] * 10  # flips the argmax of row 0
    p = clf.output_parity(shifted, base)
    assert p["top1_agreement"] == pytest.approx(49 / 50)
    assert p["max_abs_logit_delta"] == pytest.approx(np.max(np.abs(shifted - base)))
    with pytest.raises(ValueError, match="same inputs"):
        clf.output_parity(base[:10], base)


def test_slice_metrics_per_value():
    rng = np.random.default_rng(1)
    n, k = 300, 4
    y, pred = noisy_predictions(n, k, 0.8, seed=1)
    probs = softmax(rng.normal(size=(n, k)) + 3 * np.eye(k)[pred])
    lang = np.where(np.arange(n) < 100, "fr", "en")
    length = np.arange(n) % 3
    out = clf.slice_metrics(y, pred, probs, {"lang": lang, "len": length}, k)
    assert set(out) == {"lang", "len"}
    assert set(out["lang"]) == {"en", "fr"} and set(out["len"]) == {"0", "1", "2"}
    fr = out["lang"]["fr"]
    assert fr["n"] == 100
    assert fr["macro_f1"] == pytest.approx(f1_score(y[:100], pred[:100], average="macro", zero_division=0))
    assert fr["ece"] == pytest.approx(ece(probs[:100], y[:100]))
    assert sum(v["n"] for v in out["len"].values()) == n
    json.dumps(out)
    with pytest.raises(ValueError, match="slice 'bad'"):
        clf.slice_metrics(y, pred, probs, {"bad": lang[:10]}, k)


# ----------------------------------------------------------------------------- plot
def test_plot_confusion_writes_png(tmp_path):
    from toolkit.output.plots_calibration import plot_confusion

    y, pred = noisy_predictions(500, 6, 0.7, seed=0)
    m = clf.classification_metrics(y, pred, 6, labels=[f"class-{i}" for i in range(6)])
    out = plot_confusion(m["confusion_matrix"], [r["label"] for r in m["per_class"]], tmp_path / "cm.png", "test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
