"""Calibration metrics against naive references, and temperature scaling on known cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.metrics import calibration as cal

N_BINS = 15


# ----------------------------------------------------------------------------- references
def naive_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Loop reference straight from the definition: bin i is ((i-1)/n, i/n], 0 goes in bin 1."""
    n = len(y)
    total = 0.0
    for i in range(1, n_bins + 1):
        lo, hi = (i - 1) / n_bins, i / n_bins
        members = []
        for row, label in zip(probs, y):
            c = max(row)
            if (lo < c <= hi) or (i == 1 and c == 0.0):
                members.append((c, int(np.argmax(row)) == label))
        if members:
            conf = sum(m[0] for m in members) / len(members)
            acc = sum(m[1] for m in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def naive_nll(probs, y):
    return -sum(math.log(max(p[t], 1e-12)) for p, t in zip(probs, y)) / len(y)


def naive_brier(probs, y):
    out = 0.0
    for p, t in zip(probs, y):
        out += sum((p[k] - (1.0 if k == t else 0.0)) ** 2 for k in range(len(p)))
    return out / len(y)


@st.composite
def probs_and_labels(draw, max_n: int = 60, max_k: int = 6):
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(2, max_k))
    logits = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-8, 8)))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return cal.softmax(logits), y


def overconfident_split(n: int, seed: int, k: int = 5, scale: float = 5.0):
    """Informative logits multiplied by `scale`, with 25% label noise: confidently wrong often."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.0
    noisy = rng.random(n) < 0.25
    y = np.where(noisy, rng.integers(0, k, n), y)
    return logits * scale, y


# ----------------------------------------------------------------------------- softmax
def test_softmax_is_stable_and_normalised():
    z = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    p = cal.softmax(z)
    assert p.dtype == np.float64
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, atol=1e-12)
    np.testing.assert_allclose(cal.softmax(z, 2.0), cal.softmax(z / 2.0), atol=1e-12)


def test_softmax_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        cal.softmax(np.zeros((2, 3)), temperature=0.0)


# ----------------------------------------------------------------------------- ECE
@settings(max_examples=80, deadline=None)
@given(probs_and_labels())
def test_ece_matches_naive_reference_and_is_bounded(data):
    probs, y = data
    value = cal.ece(probs, y)
    assert value == pytest.approx(naive_ece(probs, y), abs=1e-12)
    assert 0.0 <= value <= 1.0


@settings(max_examples=60, deadline=None)
@given(probs_and_labels(), st.randoms(use_true_random=False))
def test_ece_is_invariant_to_sample_order(data, rnd):
    probs, y = data
    perm = list(range(len(y)))
    rnd.shuffle(perm)
    assert cal.ece(probs[perm], y[perm]) == pytest.approx(cal.ece(probs, y), abs=1e-12)


def test_ece_bin_edges_are_right_closed():
    # Confidence exactly 1/15 belongs to bin 1, 2/15 to bin 2; accuracy 1 in both.
    k = 15
    probs = np.full((2, k), 0.0)
    probs[0, 0], probs[0, 1:] = 1 / 15, (1 - 1 / 15) / (k - 1)  # max is 1/15 exactly
    probs[1, 0], probs[1, 1:] = 2 / 15, (1 - 2 / 15) / (k - 1)
    y = np.array([0, 0])
    bins = cal.reliability_bins(probs, y)
    assert bins["count"][0] == 1 and bins["count"][1] == 1
    assert cal.ece(probs, y) == pytest.approx(naive_ece(probs, y), abs=1e-15)


def test_zero_confidence_goes_in_first_bin():
    # An all-zero row (degenerate input) must still be counted, in bin 1.
    probs = np.array([[0.0, 0.0], [0.9, 0.1]])
    bins = cal.reliability_bins(probs, np.array([0, 0]))
    assert bins["count"][0] == 1
    assert sum(bins["count"]) == 2


def test_perfectly_calibrated_and_maximally_wrong():
    probs = np.array([[1.0, 0.0]] * 4)
    assert cal.ece(probs, np.zeros(4, dtype=int)) == 0.0
    assert cal.ece(probs, np.ones(4, dtype=int)) == 1.0
    assert cal.mce(probs, np.array([0, 0, 1, 1])) == pytest.approx(0.5)


def test_mce_is_worst_nonempty_bin_and_at_least_ece():
    probs, y = overconfident_split(500, seed=3)
    p = cal.softmax(probs)
    bins = cal.reliability_bins(p, y)
    gaps = [abs(a - c) for a, c, n in zip(bins["accuracy"], bins["confidence"], bins["count"]) if n]
    assert cal.mce(p, y) == pytest.approx(max(gaps))
    assert cal.mce(p, y) >= cal.ece(p, y)


@settings(max_examples=40, deadline=None)
@given(probs_and_labels())
def test_classwise_ece_matches_loop_reference(data):
    probs, y = data
    k = probs.shape[1]
    expected = 0.0
    for c in range(k):
        total = 0.0
        for i in range(1, N_BINS + 1):
            lo, hi = (i - 1) / N_BINS, i / N_BINS
            idx = [j for j in range(len(y)) if (lo < probs[j, c] <= hi) or (i == 1 and probs[j, c] == 0.0)]
            if idx:
                conf = np.mean(probs[idx, c])
                freq = np.mean(y[idx] == c)
                total += len(idx) / len(y) * abs(freq - conf)
        expected += total / k
    assert cal.classwise_ece(probs, y) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(probs_and_labels())
def test_nll_and_brier_match_naive(data):
    probs, y = data
    assert cal.nll(probs, y) == pytest.approx(naive_nll(probs, y), rel=1e-12, abs=1e-12)
    b = cal.brier(probs, y)
    assert b == pytest.approx(naive_brier(probs, y), rel=1e-12, abs=1e-12)
    assert 0.0 <= b <= 2.0


def test_reliability_bins_is_json_and_consistent():
    logits, y = overconfident_split(300, seed=1)
    p = cal.softmax(logits)
    bins = cal.reliability_bins(p, y)
    json.dumps(bins)  # no NaN, no numpy types
    assert len(bins["bin_edges"]) == N_BINS + 1
    assert sum(bins["count"]) == 300
    assert bins["ece"] == pytest.approx(cal.ece(p, y))


@pytest.mark.parametrize(
    "probs, y, match",
    [
        (np.ones((3,)), np.zeros(3, dtype=int), "2-D"),
        (np.full((3, 2), 0.5), np.zeros(2, dtype=int), "rows"),
        (np.full((3, 2), 0.5), np.array([0, 1, 2]), "n_classes"),
        (np.array([[3.0, -1.0]]), np.array([0]), "logits"),
    ],
)
def test_bad_input_raises_value_error(probs, y, match):
    with pytest.raises(ValueError, match=match):
        cal.ece(probs, y)


# ----------------------------------------------------------------------------- temperature
def test_fit_temperature_fixes_overconfident_logits():
    zv, yv = overconfident_split(2000, seed=10)
    zt, yt = overconfident_split(2000, seed=11)
    t = cal.fit_temperature(zv, yv)
    assert t > 1.5
    assert cal.nll(cal.softmax(zv, t), yv) < cal.nll(cal.softmax(zv), yv)
    assert cal.ece(cal.softmax(zt, t), yt) < cal.ece(cal.softmax(zt), yt)


def test_fit_temperature_finds_the_true_optimum():
    zv, yv = overconfident_split(1000, seed=4)
    t = cal.fit_temperature(zv, yv)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 401))
    grid_best = min(cal.nll(cal.softmax(zv, g), yv) for g in grid)
    assert cal.nll(cal.softmax(zv, t), yv) <= grid_best + 1e-9


def test_fit_temperature_underconfident_gives_t_below_one():
    zv, yv = overconfident_split(1000, seed=5, scale=0.2)
    assert cal.fit_temperature(zv, yv) < 1.0


@settings(max_examples=40, deadline=None)
@given(probs_and_labels(max_n=40))
def test_fit_temperature_never_worse_than_identity(data):
    probs, y = data
    logits = np.log(np.clip(probs, 1e-300, 1))
    t = cal.fit_temperature(logits, y)
    assert t > 0
    assert cal.nll(cal.softmax(logits, t), y) <= cal.nll(cal.softmax(logits), y) + 1e-12


def test_calibration_summary_keys_types_and_direction():
    zv, yv = overconfident_split(1500, seed=20)
    zt, yt = overconfident_split(1500, seed=21)
    s = cal.calibration_summary(zv, yv, zt, yt)
    required = {
        "temperature", "ece", "ece_recalibrated", "mce", "mce_recalibrated", "nll", "nll_recalibrated",
        "brier", "brier_recalibrated", "classwise_ece", "val_nll", "val_nll_recalibrated",
    }
    assert required <= set(s)
    assert all(type(v) is float for k, v in s.items() if k != "temperature_fit")
    json.dumps(s)
    assert s["temperature_fit"]["applied"] and s["temperature"] == s["temperature_fit"]["fitted_temperature"]
    assert s["temperature"] > 1
    assert s["val_nll_recalibrated"] < s["val_nll"]
    assert s["ece_recalibrated"] < s["ece"]
    assert s["nll_recalibrated"] < s["nll"]
    assert s["ece"] == pytest.approx(cal.ece(cal.softmax(zt), yt))


def test_calibration_summary_rejects_class_mismatch():
    with pytest.raises(ValueError, match="classes"):
        cal.calibration_summary(np.zeros((4, 3)), np.zeros(4, int), np.zeros((4, 2)), np.zeros(4, int))


# ----------------------------------------------------------------------------- plot
def test_plot_reliability_writes_png(tmp_path):
    from toolkit.output.plots_calibration import plot_reliability

    zv, yv = overconfident_split(800, seed=30)
    t = cal.fit_temperature(zv, yv)
    pairs = [
        ("fp32 before", cal.reliability_bins(cal.softmax(zv), yv)),
        ("fp32 after T", cal.reliability_bins(cal.softmax(zv, t), yv)),
    ]
    out = plot_reliability(pairs, tmp_path / "sub" / "rel.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
