"""Shared fixtures: a hermetic cache, the demo data, tiny models that bring their own inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
    """Each test session gets its own optkit cache (the demo trains once per session, ~10 s)."""
    path = tmp_path_factory.mktemp("optkit-cache")
    old = os.environ.get("OPTKIT_CACHE_DIR")
    os.environ["OPTKIT_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("OPTKIT_CACHE_DIR", None)
    else:
        os.environ["OPTKIT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def digits():
    from toolkit.intake.demo import digits_dataset

    return digits_dataset()


@pytest.fixture(scope="session")
def demo_model():
    """The trained demo CNN (torch module) and its safetensors path."""
    from toolkit.intake import checkpoints as intake

    loaded = intake.load(None)
    return loaded


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One real `compress --device jetson` on the demo, shared by the end-to-end tests."""
    import toolkit

    out = tmp_path_factory.mktemp("runs") / "demo"
    return toolkit.compress(None, device="jetson", out=out)


def make_pass_ctx(workdir: Path, data, module, calibration_size: int = 100, device: str = "x86-avx512"):
    """A PassContext over `data` for calling passes directly, with a quick bench profile."""
    from toolkit.core import modelio
    from toolkit.pipeline.devices import load_device
    from toolkit.passes import PassContext

    dev = load_device(device)
    dev = dev.model_copy(update={"bench": dev.bench.model_copy(update={"warmup": 2, "iterations": 10, "batch_sizes": [1]})})
    return PassContext(workdir=workdir, data=data, io=modelio.from_data(data.val.inputs, data.n_classes), device=dev,
                       seed=0, calibration_size=calibration_size, torch_module=module, threads=2, log=lambda m: None)


@pytest.fixture(scope="module")
def demo_ctx(tmp_path_factory, digits, demo_model):
    """(PassContext on the demo, its torch fp32 baseline candidate), once per test module."""
    from toolkit.passes.export import save_baseline

    ctx = make_pass_ctx(tmp_path_factory.mktemp("ctx"), digits, demo_model.module)
    return ctx, save_baseline(ctx, demo_model.module)


def tiny_encoder(vocab: int = 50, dim: int = 32, classes: int = 3, layers: int = 2):
    import torch
    import torch.nn as nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.layers = nn.ModuleList([nn.ModuleDict({
                "q": nn.Linear(dim, dim), "k": nn.Linear(dim, dim), "v": nn.Linear(dim, dim), "o": nn.Linear(dim, dim),
                "ff1": nn.Linear(dim, dim * 2), "ff2": nn.Linear(dim * 2, dim), "n1": nn.LayerNorm(dim), "n2": nn.LayerNorm(dim),
            }) for _ in range(layers)])
            self.head = nn.Linear(dim, classes)

        def forward(self, input_ids, attention_mask):
            h = self.emb(input_ids)
            mask = attention_mask.unsqueeze(1).to(h.dtype)            # (B, 1, L)
            for layer in self.layers:
                q, k, v = layer["q"](h), layer["k"](h), layer["v"](h)
                scores = q @ k.transpose(1, 2) / (h.shape[-1] ** 0.5)
                scores = scores + (1.0 - mask) * -1e4
                h = layer["n1"](h + layer["o"](torch.softmax(scores, -1) @ v))
                h = layer["n2"](h + layer["ff2"](torch.relu(layer["ff1"](h))))
            pooled = (h * attention_mask.unsqueeze(-1)).sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1)
            return self.head(pooled)

    return Encoder()


def make_text_npz(path: Path, n: int = 120, seq: int = 12, vocab: int = 50, classes: int = 3, seed: int = 0) -> Path:
    """Token data whose label is decided by which token range dominates (learnable, deterministic)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    ids = rng.integers(1, vocab, (n, seq))
    band = vocab // classes
    ids[:, : seq // 2] = (y[:, None] * band + rng.integers(1, band, (n, seq // 2))).clip(1, vocab - 1)
    lengths = rng.integers(seq // 2, seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    np.savez(path, input_ids=ids.astype(np.int64), attention_mask=mask, y=y.astype(np.int64),
             labels=np.array(["neg", "neu", "pos"][:classes]))
    return path


@pytest.fixture
def text_model_files(tmp_path):
    """A trained-for-a-moment tiny encoder saved as safetensors, its factory, and matching data."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = tiny_encoder()
    data = make_text_npz(tmp_path / "text.npz")
    z = np.load(data)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    ids, mask, y = (torch.from_numpy(z[k]) for k in ("input_ids", "attention_mask", "y"))
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ids, mask), y).backward()
        opt.step()
    weights = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in model.eval().state_dict().items()}, str(weights))
    return weights, "tests.conftest:tiny_encoder", data
