"""The .npz data contract, checked completely before any compute (issue 10, item 3).

Each bad file is a DataError whose one-line message names the file and the fix; through the CLI it
is a non-zero exit with nothing written in --out. A hypothesis fuzzer generates .npz files of
random shapes, dtypes, lengths, split tags and labels: each loads into a consistent Dataset or
raises DataError, never another exception.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.intake.data import MAX_CLASSES, Dataset, load_npz
from toolkit.core.errors import DataError

RNG = np.random.default_rng(0)
X = RNG.random((40, 3)).astype(np.float32)
Y = np.arange(40) % 2


def _save(tmp_path: Path, name: str = "d.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _good(**changes):
    arrays = {"x": X, "y": Y}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


# (case id, arrays, expected message fragment): every one names a distinct way a .npz breaks the contract
BAD = [
    ("y-missing", _good(y=None), "no 'y' array"),
    ("y-0d", _good(y=np.int64(1)), "'y' is a 0-d scalar"),
    ("y-float", _good(y=Y.astype(np.float64)), "1-D integer array"),
    ("y-bool", _good(y=Y.astype(bool)), "1-D integer array"),
    ("y-string", _good(y=Y.astype(str)), "1-D integer array"),
    ("y-2d", _good(y=Y.reshape(20, 2), x=X[:20]), "1-D integer array"),
    ("y-empty", _good(y=np.zeros(0, np.int64), x=X[:0]), "'y' is empty"),
    ("y-negative", _good(y=Y - 1), "negative labels"),
    ("y-huge-label", _good(y=np.where(Y == 1, 10**9, 0)), "beyond optkit's limit"),
    ("y-uint64-beyond-int64", _good(y=np.where(Y == 1, np.uint64(2**63 + 5), 0).astype(np.uint64)), "beyond optkit's limit"),
    ("y-label-beyond-rows", _good(y=np.where(Y == 1, 100, 0)), "implies 101 classes for only 40 rows"),
    ("length-x", _good(x=X[:39]), "has 39 rows but 'y' has 40"),
    ("length-split", _good(split=np.array(["val", "test"] * 19)), "'split' has 38 rows but 'y' has 40"),
    ("length-slice", _good(slice_lang=np.array(["en"] * 41)), "'slice_lang' has 41 rows"),
    ("x-0d", _good(x=np.float32(1.0)), "'x' is a 0-d scalar"),
    ("split-0d", _good(split=np.array("val")), "'split' is a 0-d scalar"),
    ("x-no-features", _good(x=np.zeros((40, 0), np.float32)), "no values per sample"),
    ("x-nan", _good(x=np.where(np.arange(40)[:, None] < 3, np.nan, X)), "NaN or Inf in 3 rows"),
    ("x-inf", _good(x=np.where(np.arange(40)[:, None] == 5, np.inf, X)), "NaN or Inf in 1 rows"),
    ("x-float64-overflows-float32", _good(x=X.astype(np.float64) * 1e300), "beyond float32's range"),
    ("x-uint64-beyond-int64", _good(x=np.full((40, 2), 2**63 + 1, np.uint64)), "beyond int64's range"),
    ("x-bool", _good(x=X > 0.5), "dtype bool"),
    ("x-string", _good(x=np.array(["a"] * 40)), "use float32 or int64"),
    ("x-complex", _good(x=X.astype(np.complex64)), "dtype complex64"),
    ("x-datetime", _good(x=np.zeros(40, "datetime64[s]")), "dtype datetime64"),
    ("x-constant", _good(x=np.ones((40, 2), np.float32)), "is constant"),
    ("no-inputs", {"y": Y}, "no input arrays"),
    ("too-few-rows", _good(x=X[:10], y=Y[:10]), "need at least 20"),
    ("split-unknown-value", _good(split=np.array(["val", "test", "dev", "val"] * 10)), "unknown values ['dev'] on 10 rows"),
    ("split-no-test", _good(split=np.array(["val", "train"] * 20)), "some rows 'val' and some 'test'"),
    ("split-float", _good(split=np.zeros(40)), "'split' must be a 1-D array of strings"),
    ("slice-2d", _good(slice_lang=np.zeros((40, 2), int)), "'slice_lang' must be a 1-D array"),
    ("labels-too-few", _good(y=np.arange(40) % 3, labels=np.array(["a", "b"])), "has no class name"),
    ("labels-duplicate", _good(labels=np.array(["a", "a"])), "repeats class names"),
    ("labels-0d", _good(labels=np.array("a")), "'labels' is a 0-d scalar"),
    ("labels-float", _good(labels=np.array([0.5, 1.5])), "'labels' must be a 1-D array of class names"),
    ("labels-too-many", _good(labels=np.array([f"c{i}" for i in range(MAX_CLASSES + 1)])), "beyond optkit's limit"),
    ("labels-more-than-data", _good(labels=np.array(["a", "b", "c"])), "classes ['c'] have no test rows"),
    ("class-absent-everywhere", _good(y=np.where(Y == 1, 2, 0)), "classes ['1'] have no test rows"),
    ("class-absent-from-test", _good(y=np.array([0, 0, 1, 1] * 9 + [0, 1, 2, 2]), split=np.array(["val", "test"] * 19 + ["val", "val"])),
     "classes ['2'] have no test rows"),
    ("class-single-sample", _good(y=np.array([0, 1] * 19 + [0, 2])), "classes ['2'] have a single sample"),
]


@pytest.mark.parametrize("case,arrays,match", BAD, ids=[b[0] for b in BAD])
def test_bad_npz_is_a_one_line_data_error(tmp_path, case, arrays, match):
    path = _save(tmp_path, **arrays)
    with pytest.raises(DataError) as err:
        load_npz(path)
    msg = str(err.value)
    assert match in msg, msg
    assert str(path) in msg and "\n" not in msg


def test_pickled_object_array_is_refused_by_name(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=X, y=Y, meta=np.array([{"a": 1}] * 40, dtype=object))
    with pytest.raises(DataError, match="array 'meta' is an object"):
        load_npz(path)


def test_not_an_npz_a_folder_and_a_plain_npy(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(DataError, match="is not a file"):
        load_npz(tmp_path / "dir.npz")
    np.save(tmp_path / "plain.npy", X)
    with pytest.raises(DataError, match="single array"):
        load_npz(tmp_path / "plain.npy")


def test_bad_sidecar_labels(tmp_path):
    path = _save(tmp_path, **_good())
    path.with_suffix(".labels.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match="unreadable class names"):
        load_npz(path)
    path.with_suffix(".labels.txt").write_text("neg\n")
    with pytest.raises(DataError, match="label 1 has no class name"):
        load_npz(path)


def test_what_is_accepted_and_how_it_is_fed(tmp_path):
    ids = RNG.integers(0, 50, (40, 6)).astype(np.uint16)
    d = load_npz(_save(tmp_path, input_ids=ids, attention_mask=np.ones((40, 6), np.int8),
                       y=(np.arange(40) % 2).astype(np.uint8), labels=np.array(["neg", "pos"])))
    assert d.val.inputs["input_ids"].dtype == np.int64 and d.val.y.dtype == np.int64
    assert d.labels == ["neg", "pos"] and d.notes == ()


def test_class_absent_from_validation_is_a_note_not_an_error(tmp_path):
    y = np.array([0, 0, 1, 1] * 9 + [0, 1, 2, 2])
    split = np.array(["val", "test"] * 19 + ["test", "test"])
    d = load_npz(_save(tmp_path, **_good(y=y, split=split)))
    assert d.n_classes == 3 and len(d.notes) == 1 and "thresholds fall back to 0.5" in d.notes[0]


# ----------------------------------------------------------------------------- property-based fuzzing
_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_,
           np.complex64, np.dtype("<U3"), np.dtype("S2")]


def _wild(draw, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=min(64, dtype.itemsize * 8))
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        elements = st.one_of(st.integers(0, 3), st.integers(int(info.min), int(info.max)))
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


# Each mutation breaks (or bends) one part of an otherwise valid file.
MUTATIONS = ["drop", "zero_d", "dtype", "length", "shape", "wild_values", "split_tags", "labels", "label_values"]


@st.composite
def _npz_arrays(draw) -> dict[str, np.ndarray]:
    """A valid file (random rows, classes, inputs, split, names, slices), then 0-3 random mutations."""
    n = draw(st.integers(20, 48))
    k = draw(st.integers(1, 4))
    arrays: dict[str, np.ndarray] = {"y": draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))}
    arrays["x"] = draw(hnp.arrays(np.float32, (n, draw(st.integers(1, 3))), elements=st.floats(-10, 10, width=32)))
    if draw(st.booleans()):
        arrays["input_ids"] = draw(hnp.arrays(np.int64, (n, 4), elements=st.integers(0, 99)))
    if draw(st.booleans()):
        arrays["split"] = np.array(draw(st.lists(st.sampled_from(["train", "val", "test"]), min_size=n, max_size=n)))
    if draw(st.booleans()):
        arrays["labels"] = np.array([f"c{i}" for i in range(k + draw(st.integers(0, 1)))])
    if draw(st.booleans()):
        arrays["slice_lang"] = np.array(draw(st.lists(st.sampled_from(["en", "de"]), min_size=n, max_size=n)))
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        name = draw(st.sampled_from(sorted(arrays))) if arrays else "y"
        if mutation == "drop":
            arrays.pop(name, None)
        elif mutation == "zero_d":
            arr = arrays.get(name, np.zeros(1))
            arrays[name] = arr.reshape(-1)[0] if arr.size else np.asarray(1)
        elif mutation == "dtype":
            dtype = draw(st.sampled_from(_DTYPES))
            arrays[name] = _wild(draw, dtype, np.shape(arrays.get(name, np.zeros(n))))
        elif mutation == "length":
            m = draw(st.sampled_from([0, n - 1, n + 1]))
            arr = arrays.get(name, np.zeros(n))
            arrays[name] = np.resize(arr, (m, *arr.shape[1:])) if arr.ndim else arr
        elif mutation == "shape":
            arr = arrays.get(name, np.zeros(n))
            arrays[name] = draw(st.sampled_from([np.zeros((len(arr), 0), arr.dtype), arr[..., None], arr.reshape(-1)])) \
                if arr.ndim else arr
        elif mutation == "wild_values":
            arr = arrays.get(name, np.zeros(n))
            if arr.dtype.kind in "fiu":
                arrays[name] = _wild(draw, arr.dtype, arr.shape)
        elif mutation == "split_tags":
            tags = st.sampled_from(["train", "val", "test", "dev", "", "VAL"])
            arrays["split"] = np.array(draw(st.lists(tags, min_size=n, max_size=n)))
        elif mutation == "labels":
            arrays["labels"] = draw(st.sampled_from([np.array(["a", "a"]), np.array([], dtype=str), np.array([1.5]),
                                                     np.array([f"c{i}" for i in range(draw(st.integers(0, 6)))])]))
        elif mutation == "label_values" and "y" in arrays and arrays["y"].ndim == 1 and len(arrays["y"]):
            y = arrays["y"].astype(np.int64).copy()
            y[draw(st.integers(0, len(y) - 1))] = draw(st.sampled_from([-1, 10**9, k, 2**62, n + 5]))
            arrays["y"] = y
    return arrays


def _assert_consistent(d: Dataset) -> None:
    assert d.n_classes >= 1 and len(d.labels) == d.n_classes <= MAX_CLASSES
    parts = [s for s in (d.train, d.val, d.test) if s is not None]
    assert len(d.val) > 0 and len(d.test) > 0
    for s in parts:
        assert s.y.dtype == np.int64 and s.y.ndim == 1
        assert s.y.min() >= 0 and s.y.max() < d.n_classes
        for name, arr in {**s.inputs, **s.slices}.items():
            assert arr.shape[0] == len(s), name
        for arr in s.inputs.values():
            assert arr.dtype in (np.float32, np.int64)
            assert arr.dtype != np.float32 or np.isfinite(arr).all()
    assert set(np.unique(d.test.y)) == set(range(d.n_classes))  # every class is scored on test


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_npz_arrays())
def test_fuzzed_npz_loads_consistently_or_raises_data_error(arrays):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.npz"
        np.savez(path, **arrays)
        try:
            d = load_npz(path)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
        _assert_consistent(d)
