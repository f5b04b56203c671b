"""Datasets: the .npz contract, the built-in digits demo, splits and calibration subsets.

.npz contract (DESIGN.md): `y` holds integer labels; every other array is a model input
named as the model's input; `slice_*` arrays give slice labels; `labels` (array of str)
gives class names; optional `split` (array of "train"/"val"/"test") fixes the split.
Without `split`, the file is split stratified 50/50 into validation and test: validation
calibrates (temperature, thresholds, PTQ statistics), test reports.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import DataError

RESERVED = {"y", "labels", "split"}
MAX_CLASSES = 4096  # metrics allocate n_classes x n_classes confusion matrices (4096^2 int64 = 134 MB) and per-class curves
SPLIT_TAGS = ("train", "val", "test")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclasses.dataclass(frozen=True)
class Split:
    inputs: dict[str, np.ndarray]
    y: np.ndarray
    slices: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> "Split":
        return Split({k: v[idx] for k, v in self.inputs.items()}, self.y[idx], {k: v[idx] for k, v in self.slices.items()})

    def batches(self, batch_size: int):
        """Yield dicts of named inputs, in order."""
        for start in range(0, len(self), batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.inputs.items()}


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    labels: list[str]
    val: Split
    test: Split
    train: Split | None
    sha256: str
    preprocessing: str = "inputs are fed as stored in the .npz (no further preprocessing)"
    notes: tuple[str, ...] = ()  # contract findings that are not errors (e.g. a class absent from validation)
    text: Any = None  # raw-text data: toolkit.intake.text.TextSpec (tokenizer, max length, raw texts per split)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def input_names(self) -> list[str]:
        return list(self.val.inputs)

    def calibration(self, size: int, seed: int) -> Split:
        """A calibration subset drawn from the validation split (never from test)."""
        n = len(self.val)
        if n == 0:
            raise DataError(f"{self.name}: the validation split is empty; provide more samples")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=min(size, n), replace=False))
        return self.val.take(idx)


def stratified(y: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    parts: list[np.ndarray] = []
    rest, rest_frac = idx, 1.0
    for frac in fractions[:-1]:
        share = frac / rest_frac
        strat = y[rest] if np.min(np.bincount(y[rest])[np.unique(y[rest])]) >= 2 else None
        take, rest = train_test_split(rest, train_size=share, stratify=strat, random_state=seed)
        parts.append(np.sort(take))
        rest_frac -= frac
    parts.append(np.sort(rest))
    return parts


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz, loaded without pickles; a pickled (object) array is named in the error."""
    if not path.exists():
        raise DataError(f"{path}: data file not found; pass an existing .npz with --data")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; pass a .npz file with --data")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile/format errors all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz without pickles ({exc}); save it with numpy.savez") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not a .npz of named arrays; save it with numpy.savez(path, x=..., y=...)")
    arrays: dict[str, np.ndarray] = {}
    with z:
        for key in z.files:
            try:
                arrays[key] = z[key]
            except ValueError as exc:  # object arrays need pickle, which could run code
                raise DataError(f"{path}: array '{key}' is an object (pickled) array; store numbers or strings "
                                "(e.g. numpy.asarray(values, dtype=str))") from exc
            except Exception as exc:
                raise DataError(f"{path}: array '{key}' is unreadable ({' '.join(str(exc).split())[:120]}); "
                                "re-save the file with numpy.savez") from exc
    return arrays


def _check_labels_array(path: Path, y: np.ndarray) -> np.ndarray:
    """`y`: 1-D integers (signed or unsigned) in [0, MAX_CLASSES); returned as int64."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: 'y' must be a 1-D integer array, got {y.dtype} with shape {y.shape}; "
                        "store class indices (numpy.asarray(y, dtype=numpy.int64))")
    if len(y) == 0:
        raise DataError(f"{path}: 'y' is empty; the data needs samples")
    if y.dtype.kind == "i" and int(y.min()) < 0:
        raise DataError(f"{path}: 'y' has negative labels; labels must be 0..n_classes-1")
    top = int(y.max())  # python int: a uint64 beyond int64 is compared, not wrapped
    if top >= MAX_CLASSES:
        raise DataError(f"{path}: 'y' has label {top}, beyond optkit's limit of {MAX_CLASSES} classes; "
                        "map raw ids to class indices 0..n_classes-1")
    return y.astype(np.int64)


def _check_same_length(path: Path, arrays: dict[str, np.ndarray], n: int) -> None:
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise DataError(f"{path}: array '{name}' is a 0-d scalar; every array needs one row per sample")
        if name != "labels" and arr.shape[0] != n:
            raise DataError(f"{path}: array '{name}' has {arr.shape[0]} rows but 'y' has {n}; they must match")


def _check_input(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    """A model input as fed: float32 (from any float that fits) or int64 (from any integer that fits)."""
    if arr.size == 0:
        raise DataError(f"{path}: input '{name}' has shape {arr.shape} with no values per sample; store the features")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr.reshape(len(arr), -1))).any(axis=1).sum())
            raise DataError(f"{path}: input '{name}' contains NaN or Inf in {bad} rows; clean the data")
        if arr.dtype.itemsize > 4 and float(np.abs(arr).max()) > _FLOAT32_MAX:
            raise DataError(f"{path}: input '{name}' has values beyond float32's range (|x| > {_FLOAT32_MAX:.3g}); "
                            "models run in float32: rescale the data")
        return arr.astype(np.float32, copy=False)
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and int(arr.max()) > _INT64_MAX:
            raise DataError(f"{path}: input '{name}' has values beyond int64's range; store ids as int64")
        return arr.astype(np.int64, copy=False)
    hint = " (a mask: store it as int64, mask.astype(numpy.int64))" if arr.dtype.kind == "b" else ""
    raise DataError(f"{path}: input '{name}' has dtype {arr.dtype}; use float32 or int64 arrays{hint}")


def _check_tags(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    """`split` and `slice_*`: 1-D tags (strings, integers or bools), compared as strings."""
    if arr.ndim != 1 or arr.dtype.kind not in "USiub":
        raise DataError(f"{path}: '{name}' must be a 1-D array of strings or integers, got {arr.dtype} with shape "
                        f"{arr.shape}; store one tag per row")
    return arr.astype(str)


def _class_names(path: Path, arrays: dict[str, np.ndarray], y: np.ndarray) -> list[str]:
    """Names from `labels` or the sidecar, else "0".."max(y)"; a bound keeps a stray label from inventing classes."""
    top = int(y.max())
    if "labels" in arrays:
        names_arr = arrays["labels"]
        if names_arr.ndim != 1 or names_arr.dtype.kind not in "USiu":
            raise DataError(f"{path}: 'labels' must be a 1-D array of class names (str), got {names_arr.dtype} "
                            f"with shape {names_arr.shape}")
        labels = [str(s) for s in names_arr.tolist()]
        source = "'labels'"
    else:
        sidecar = path.with_suffix(".labels.txt")
        try:
            lines = sidecar.read_text(encoding="utf-8").split("\n") if sidecar.is_file() else []
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{sidecar}: unreadable class names ({exc}); one UTF-8 name per line") from exc
        labels = [s.strip() for s in lines if s.strip()]
        source = sidecar.name
        if not labels:
            # No names: the classes are 0..max(y). More classes than rows means a label is not a class index.
            if top + 1 > len(y):
                raise DataError(f"{path}: label {top} implies {top + 1} classes for only {len(y)} rows; "
                                "map labels to 0..n_classes-1 or give class names in 'labels'")
            return [str(i) for i in range(top + 1)]
    if len(labels) > MAX_CLASSES:
        raise DataError(f"{path}: {source} names {len(labels)} classes, beyond optkit's limit of {MAX_CLASSES}")
    if len(set(labels)) != len(labels):
        dup = sorted({s for s in labels if labels.count(s) > 1})[:3]
        raise DataError(f"{path}: {source} repeats class names {dup}; every class needs its own name")
    if top >= len(labels):
        raise DataError(f"{path}: label {top} has no class name ({len(labels)} names); fix 'labels'")
    return labels


def check_split_tags(path: Path, tags: np.ndarray) -> dict[str, np.ndarray]:
    unknown = sorted(set(tags.tolist()) - set(SPLIT_TAGS))
    if unknown:
        n_bad = int(np.isin(tags, unknown).sum())
        raise DataError(f"{path}: 'split' has unknown values {unknown[:5]} on {n_bad} rows; use only "
                        "'train', 'val' and 'test' (no row is dropped silently)")
    pick = {t: np.flatnonzero(tags == t) for t in SPLIT_TAGS}
    if len(pick["val"]) == 0 or len(pick["test"]) == 0:
        raise DataError(f"{path}: 'split' must mark some rows 'val' and some 'test'")
    return pick


def check_class_coverage(path: Path, labels: list[str], y_val: np.ndarray, y_test: np.ndarray) -> list[str]:
    """A class with no test rows is an error: macro-F1 would average in an F1 of 0 that no model can raise.

    A class with no validation rows is a note: its threshold falls back to 0.5 and the temperature is fitted
    without it, but every test number is still measured.
    """
    n = len(labels)
    in_test = np.bincount(y_test, minlength=n)
    missing = [labels[k] for k in range(n) if in_test[k] == 0]
    if missing:
        raise DataError(f"{path}: classes {missing[:5]} have no test rows ({len(missing)} of {n}); macro-F1 and "
                        "per-class F1 would be wrong: add samples of every class (at least 2 each without 'split')")
    in_val = np.bincount(y_val, minlength=n)
    absent = [labels[k] for k in range(n) if in_val[k] == 0]
    if absent:
        return [f"classes {absent[:5]} have no validation rows: their thresholds fall back to 0.5 and the "
                "temperature is fitted without them"]
    return []


def load_npz(path: Path, seed: int = 0) -> Dataset:
    """Check the whole .npz contract, then split; every violation is a DataError naming the file and the fix."""
    path = Path(path)
    arrays = _read_arrays(path)
    if "y" not in arrays:
        raise DataError(f"{path}: no 'y' array of integer labels; add one (numpy.savez(..., y=labels))")
    y = arrays["y"]
    if y.ndim == 0:
        raise DataError(f"{path}: array 'y' is a 0-d scalar; every array needs one row per sample")
    y = _check_labels_array(path, y)
    _check_same_length(path, {k: v for k, v in arrays.items() if k != "y"}, len(y))
    inputs = {k: v for k, v in arrays.items() if k not in RESERVED and not k.startswith("slice_")}
    if not inputs:
        raise DataError(f"{path}: no input arrays; store the model inputs under their input names (e.g. x=...)")
    inputs = {name: _check_input(path, name, arr) for name, arr in inputs.items()}
    slices = {k[len("slice_"):]: _check_tags(path, k, v) for k, v in arrays.items() if k.startswith("slice_")}
    for name, arr in inputs.items():
        if arr.dtype.kind == "f" and len(arr) > 1 and float(arr.max()) == float(arr.min()):
            raise DataError(f"{path}: input '{name}' is constant (every value {float(arr.min())}); "
                            "calibration and evaluation need real samples")
    labels = _class_names(path, arrays, y)

    whole = Split(inputs, y, slices)
    if "split" in arrays:
        pick = check_split_tags(path, _check_tags(path, "split", arrays["split"]))
        train = whole.take(pick["train"]) if len(pick["train"]) else None
        val, test = whole.take(pick["val"]), whole.take(pick["test"])
    else:
        if len(y) < 20:
            raise DataError(f"{path}: only {len(y)} samples; need at least 20 to split into validation and test")
        counts = np.bincount(y, minlength=len(labels))
        single = [labels[k] for k in range(len(labels)) if counts[k] == 1]
        if single:
            raise DataError(f"{path}: classes {single[:5]} have a single sample; each class needs at least 2 "
                            "(one for validation, one for test), or mark the rows with a 'split' array")
        v, t = stratified(y, [0.5, 0.5], seed)
        train, val, test = None, whole.take(v), whole.take(t)
    notes = check_class_coverage(path, labels, val.y, test.y)
    return Dataset(name=path.name, labels=labels, val=val, test=test, train=train, sha256=file_sha256(path),
                   notes=tuple(notes))
