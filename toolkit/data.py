"""Datasets: the .npz contract, the built-in digits demo, splits and calibration subsets.

.npz contract (DESIGN.md): `y` holds integer labels; every other array is a model input
named as the model's input; `slice_*` arrays give slice labels; `labels` (array of str)
gives class names; optional `split` (array of "train"/"val"/"test") fixes the split.
Without `split`, the file is split stratified 50/50 into validation and test: validation
calibrates (temperature, thresholds, PTQ statistics), test reports.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from .errors import DataError

RESERVED = {"y", "labels", "split"}


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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stratified(y: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
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


def load_npz(path: Path, seed: int = 0) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found; pass an existing .npz with --data")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/pickle/format errors all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz without pickles ({exc}); save it with numpy.savez") from exc
    if "y" not in arrays:
        raise DataError(f"{path}: no 'y' array of integer labels; add one (numpy.savez(..., y=labels))")
    y = arrays["y"]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must be a 1-D integer array, got {y.dtype} with shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{path}: 'y' is empty; the data needs samples")
    if y.min() < 0:
        raise DataError(f"{path}: 'y' has negative labels; labels must be 0..n_classes-1")
    y = y.astype(np.int64)
    inputs = {k: v for k, v in arrays.items() if k not in RESERVED and not k.startswith("slice_")}
    slices = {k[len("slice_"):]: v.astype(str) for k, v in arrays.items() if k.startswith("slice_")}
    if not inputs:
        raise DataError(f"{path}: no input arrays; store the model inputs under their input names (e.g. x=...)")
    for name, arr in {**inputs, **{f"slice_{k}": v for k, v in slices.items()}}.items():
        if arr.shape[0] != len(y):
            raise DataError(f"{path}: array '{name}' has {arr.shape[0]} rows but 'y' has {len(y)}; they must match")
    for name, arr in inputs.items():
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise DataError(f"{path}: input '{name}' contains NaN or Inf; clean the data")
            if arr.dtype != np.float32:
                inputs[name] = arr.astype(np.float32)
        elif arr.dtype.kind in "iu":
            inputs[name] = arr.astype(np.int64)
        else:
            raise DataError(f"{path}: input '{name}' has dtype {arr.dtype}; use float32 or int64 arrays")
    for name, arr in inputs.items():
        if arr.dtype.kind == "f" and len(arr) > 1 and float(arr.max()) == float(arr.min()):
            raise DataError(f"{path}: input '{name}' is constant (every value {float(arr.min())}); "
                            "calibration and evaluation need real samples")
    if "labels" in arrays:
        labels = [str(s) for s in arrays["labels"].tolist()]
    else:
        sidecar = path.with_suffix(".labels.txt")
        labels = sidecar.read_text().split("\n") if sidecar.exists() else []
        labels = [s for s in labels if s.strip()] or [str(i) for i in range(int(y.max()) + 1)]
    if int(y.max()) >= len(labels):
        raise DataError(f"{path}: label {int(y.max())} has no class name ({len(labels)} names); fix 'labels'")

    whole = Split(inputs, y, slices)
    if "split" in arrays:
        tags = arrays["split"].astype(str)
        pick = {t: np.flatnonzero(tags == t) for t in ("train", "val", "test")}
        if len(pick["val"]) == 0 or len(pick["test"]) == 0:
            raise DataError(f"{path}: 'split' must mark some rows 'val' and some 'test'")
        train = whole.take(pick["train"]) if len(pick["train"]) else None
        val, test = whole.take(pick["val"]), whole.take(pick["test"])
    else:
        if len(y) < 20:
            raise DataError(f"{path}: only {len(y)} samples; need at least 20 to split into validation and test")
        v, t = _stratified(y, [0.5, 0.5], seed)
        train, val, test = None, whole.take(v), whole.take(t)
    return Dataset(name=path.name, labels=labels, val=val, test=test, train=train, sha256=file_sha256(path))
