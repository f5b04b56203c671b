"""The built-in demo, `builtin:digits-cnn`: a small CNN trained on scikit-learn's bundled digits.

Real data with no download: 1,797 8x8 handwritten digits ship inside scikit-learn. The
model is trained deterministically (seeded, deterministic algorithms, one thread) and
cached with its sha256, so later runs reuse the same weights and a foreign file there is never used.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from toolkit.core.cache import cache_dir, key
from toolkit.core.artifacts import file_sha256
from toolkit.intake.data import Dataset, Split, stratified

DEMO_NAME = "builtin:digits-cnn"
DEMO_SEED = 0
EPOCHS = 15
PREPROCESSING = "x = image / 16.0 as float32, shape (batch, 1, 8, 8); sklearn digits pixel values are 0..16"


def digits_cnn(num_classes: int = 10, width: float = 1.0):
    """Factory (module:function) for the demo architecture; `width` scales the channels."""
    import torch.nn as nn

    c1, c2, hidden = max(4, int(32 * width)), max(8, int(64 * width)), max(16, int(128 * width))
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * 16, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def digits_dataset(seed: int = DEMO_SEED) -> Dataset:
    """Digits split 60/20/20 stratified into train/val/test, with an `ink` slice (light/heavy strokes)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    ink = np.where(x.reshape(len(x), -1).sum(1) > np.median(x.reshape(len(x), -1).sum(1)), "heavy", "light")
    whole = Split({"x": x}, y, {"ink": ink})
    tr, va, te = stratified(y, [0.6, 0.2, 0.2], seed)
    sha = key("sklearn-digits", len(y), seed)
    return Dataset(name="sklearn-digits", labels=[str(i) for i in range(10)], train=whole.take(tr),
                   val=whole.take(va), test=whole.take(te), sha256=sha, preprocessing=PREPROCESSING)


def train_classifier(model, data: Dataset, epochs: int, seed: int, lr: float = 2e-3, batch_size: int = 64):
    """Plain seeded cross-entropy training (used for the demo teacher)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    x = torch.from_numpy(data.train.inputs["x"])
    y = torch.from_numpy(data.train.y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def demo_checkpoint(log=None) -> tuple[str, str]:
    """Path of the trained demo weights (.safetensors) and the factory that builds it; trains once.

    The cached file is trusted only if its sha256 matches the one recorded next to it when optkit wrote it;
    a foreign, damaged or unrecorded file is evicted and rebuilt, said on stderr and to `log`.
    """
    import torch
    from safetensors.torch import save_file

    path = cache_dir() / "demo" / f"digits-cnn-{key('digits-cnn', EPOCHS, DEMO_SEED, torch.__version__)}.safetensors"
    factory = "toolkit.intake.demo:digits_cnn"
    if path.exists() or path.is_symlink():
        why = _cache_problem(path)
        if why is None:
            return str(path), factory
        _say(log, f"cached demo weights {path} {why}; evicted and rebuilt")
        _evict(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: bit-reproducible weights across machines with the same torch
    try:
        torch.manual_seed(DEMO_SEED)
        model = train_classifier(digits_cnn(), digits_dataset(), EPOCHS, DEMO_SEED)
    finally:
        torch.set_num_threads(threads)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    digest = file_sha256(tmp)
    # Record first, then publish the weights: a crash in between leaves weights without a record (rebuilt next time).
    _record_path(path).write_text(json.dumps({"sha256": digest, "file": path.name, "written_by": "optkit"}))
    tmp.replace(path)
    return str(path), factory


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _cache_problem(path: Path) -> str | None:
    """None when the cached weights are the file optkit wrote (a regular file matching its recorded sha256)."""
    if path.is_symlink() or not path.is_file():
        return "is not a regular file"
    try:
        recorded = json.loads(_record_path(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "has no readable sha256 record"
    if file_sha256(path) != recorded:
        return "does not match its recorded sha256 (foreign or damaged)"
    return None


def _evict(path: Path) -> None:
    for p in (path, _record_path(path)):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        except OSError:
            pass  # rebuilding overwrites it (tmp.replace); an undeletable entry fails there with a clear error


def _say(log, message: str) -> None:
    print(f"optkit: {message}", file=sys.stderr)  # said where the user looks, whoever called
    if log is not None:
        log(message)
