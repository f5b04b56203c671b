"""The .npz contract: what is accepted, and one-line errors for what is not."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit.intake.data import load_npz
from toolkit.core.errors import DataError


def _save(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_split_slices_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    path = _save(tmp_path, x=rng.random((80, 3)).astype(np.float64), y=y, slice_lang=np.where(y == 0, "en", "de"),
                 labels=np.array(["neg", "pos"]))
    d = load_npz(path)
    assert d.labels == ["neg", "pos"] and d.input_names == ["x"]
    assert len(d.val) + len(d.test) == 80 and d.train is None
    assert d.val.inputs["x"].dtype == np.float32  # float64 is fed as float32
    assert set(d.test.slices["lang"]) == {"en", "de"}
    assert abs(d.val.y.mean() - 0.5) < 0.05  # stratified
    calib = d.calibration(10, seed=0)
    assert len(calib) == 10 and set(map(tuple, calib.inputs["x"])) <= set(map(tuple, d.val.inputs["x"]))


def test_explicit_split(tmp_path):
    split = np.array(["train"] * 50 + ["val"] * 20 + ["test"] * 30)
    x = np.random.default_rng(0).random((100, 2), dtype=np.float32)
    d = load_npz(_save(tmp_path, x=x, y=np.arange(100) % 2, split=split))
    assert (len(d.train), len(d.val), len(d.test)) == (50, 20, 30)


@pytest.mark.parametrize("arrays,match", [
    (dict(x=np.zeros((30, 2), np.float32)), "no 'y' array"),
    (dict(x=np.zeros((30, 2), np.float32), y=np.zeros(30)), "1-D integer array"),
    (dict(x=np.zeros((30, 2), np.float32), y=np.zeros(29, int)), "has 30 rows but 'y' has 29"),
    (dict(x=np.full((30, 2), np.nan, np.float32), y=np.zeros(30, int)), "NaN or Inf"),
    (dict(y=np.zeros(30, int)), "no input arrays"),
    (dict(x=np.arange(20, dtype=np.float32).reshape(10, 2), y=np.zeros(10, int)), "need at least 20"),
    (dict(x=np.ones((30, 2), np.float32), y=np.arange(30) % 2), "is constant"),
    (dict(x=np.zeros((30, 2), np.float32), y=-np.ones(30, int)), "negative labels"),
    (dict(x=np.arange(60, dtype=np.float32).reshape(30, 2), y=np.arange(30) % 3, labels=np.array(["a", "b"])), "has no class name"),
    (dict(x=np.array(["a"] * 30), y=np.zeros(30, int)), "use float32 or int64"),
])
def test_bad_data(tmp_path, arrays, match):
    path = _save(tmp_path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_npz(path)
    assert str(path) in str(err.value)


def test_not_an_npz(tmp_path):
    path = tmp_path / "d.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "missing.npz")
