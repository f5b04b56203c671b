"""The training loop distill and qat share: options, seeded deterministic CPU training, the supervised loss
(label smoothing, balanced class weights or focal loss), AdamW with linear warm-up then cosine decay,
gradient clipping, early stopping on validation macro-F1, and the weight hash that proves reproducibility.

Training is seeded and bit-reproducible on CPU: deterministic algorithms and one thread inside a context
that restores the caller's settings, a torch.Generator for shuffling.
"""
from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext


class TrainOptions(BaseModel):
    """Optimisation settings shared by distill and qat."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    epochs: int = Field(default=20, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps at most (bounds large models' "
                                  "training); the LR schedule spans min(epochs x steps per epoch, max_steps)")
    batch_size: int = Field(default=64, ge=1, le=4096)  # bounds.BATCH_MAX
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="share of steps with linear LR warm-up")
    patience: int = Field(default=5, ge=1, description="epochs without a better validation macro-F1 before stopping")
    grad_clip: float | None = Field(default=1.0, gt=0, description="max gradient L2 norm; null = no clipping")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    class_weights: Literal["balanced"] | None = None
    focal_gamma: float = Field(default=0.0, ge=0, description="> 0: focal loss instead of cross-entropy")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1,  # bounds.SEED_MAX: numpy seeds are 32-bit
                             description="default: the recipe's seed")


@contextlib.contextmanager
def deterministic(seed: int):
    """Seeded, deterministic, single-threaded torch for bit-reproducible CPU training; restores everything after."""
    import torch

    threads = torch.get_num_threads()
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.set_rng_state(rng)


def tensors(split, names: list[str]) -> dict:
    import torch

    return {n: torch.from_numpy(np.ascontiguousarray(split.inputs[n])) for n in names}


def logits_of(model, inputs: dict, names: list[str], idx=None):
    out = model(*(inputs[n] if idx is None else inputs[n][idx] for n in names))
    return out[0] if isinstance(out, (tuple, list)) else out


def predict(model, inputs: dict, names: list[str], batch: int = 256):
    import torch

    n = len(next(iter(inputs.values())))
    with torch.no_grad():
        return torch.cat([logits_of(model, {k: v[i:i + batch] for k, v in inputs.items()}, names)
                          for i in range(0, n, batch)])


def macro_f1(y: np.ndarray, logits, n_classes: int) -> float:
    from toolkit.metrics.classification import macro_f1_score

    return macro_f1_score(np.asarray(y), logits.argmax(1).numpy(), n_classes)


def supervised_loss(opts: TrainOptions, n_classes: int, y_train: np.ndarray) -> Callable:
    """CE with label smoothing (optionally balanced class weights) or focal loss; returns fn(logits, y)."""
    import torch
    import torch.nn.functional as F

    weight = None
    if opts.class_weights == "balanced":
        counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
        weight = torch.tensor(len(y_train) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(logits, y):
        ce = F.cross_entropy(logits, y, weight=weight, label_smoothing=opts.label_smoothing, reduction="none")
        if opts.focal_gamma > 0:
            p_true = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1).detach()
            ce = (1 - p_true) ** opts.focal_gamma * ce
        return ce.mean()

    return loss


def fit(model, params, batch_loss: Callable, n_train: int, val_f1: Callable[[], float], opts: TrainOptions, seed: int,
        log: Callable[[str], None], label: str, train_mode: Callable | None = None,
        eval_mode: Callable | None = None, deadline: float | None = None) -> dict:
    """AdamW + warmup/cosine + clipping + early stopping on validation macro-F1; restores the best weights.

    batch_loss(idx) -> scalar loss for the training rows `idx`. Returns the curves and the stopping facts:
    stopped_by is "epochs", "patience", "max_steps" or "time" (deadline: time.time() of the recipe's budget;
    checked after each step, the epoch is then closed with its validation so the best weights stay well defined).
    """
    import torch

    train_mode = train_mode or (lambda: model.train())
    eval_mode = eval_mode or (lambda: model.eval())
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = (n_train + opts.batch_size - 1) // opts.batch_size
    total = steps_per_epoch * opts.epochs
    if opts.max_steps is not None:
        total = min(total, opts.max_steps)
    warmup = max(1, int(round(opts.warmup_fraction * total)))
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=opts.lr * 0.01),
    ], milestones=[warmup])
    gen = torch.Generator().manual_seed(seed)
    curves: dict[str, list] = {"epoch": [], "train_loss": [], "val_macro_f1": [], "lr": []}
    best_f1, best_epoch, best_state, bad = -1.0, 0, None, 0
    stopped, stopped_by, steps = False, "epochs", 0
    with _epoch_progress(label, opts.epochs) as progress:
        for epoch in range(1, opts.epochs + 1):
            train_mode()
            perm = torch.randperm(n_train, generator=gen)
            total_loss, seen = 0.0, 0
            for i in range(0, n_train, opts.batch_size):
                if steps >= total:
                    stopped_by = "max_steps"
                    break
                if deadline is not None and time.time() > deadline:
                    stopped_by = "time"
                    break
                idx = perm[i:i + opts.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = batch_loss(idx)
                loss.backward()
                if opts.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
                opt.step()
                sched.step()
                steps += 1
                total_loss += float(loss.detach()) * len(idx)
                seen += len(idx)
            eval_mode()
            f1 = float(val_f1())
            curves["epoch"].append(epoch)
            curves["train_loss"].append(round(total_loss / max(seen, 1), 6))
            curves["val_macro_f1"].append(round(f1, 6))
            curves["lr"].append(float(sched.get_last_lr()[0]))
            progress(epoch, curves["train_loss"][-1], f1, log)
            if f1 > best_f1:
                best_f1, best_epoch, bad = f1, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= opts.patience:
                    stopped = epoch < opts.epochs
                    stopped_by = "patience" if stopped else stopped_by
                    break
            if epoch < opts.epochs and stopped_by == "epochs":  # the budget ran out at this epoch's end
                stopped_by = "max_steps" if steps >= total else "time" if deadline and time.time() > deadline else "epochs"
            if stopped_by in ("max_steps", "time"):
                stopped = epoch < opts.epochs
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    eval_mode()
    return {"curves": curves, "best_epoch": best_epoch, "best_val_macro_f1": round(best_f1, 6),
            "epochs_run": len(curves["epoch"]), "stopped_early": stopped, "steps_run": steps, "stopped_by": stopped_by}


@contextlib.contextmanager
def _epoch_progress(label: str, epochs: int):
    """A transient rich bar on an interactive stderr; one log line per epoch otherwise."""
    bar = None
    if sys.stderr.isatty():
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.description}"), transient=True, console=Console(stderr=True))
            bar.start()
            task = bar.add_task("", total=epochs)
        except Exception:  # e.g. another live display owns the terminal: fall back to log lines
            bar = None

    def report(epoch: int, loss: float, f1: float, log) -> None:
        if bar is not None:
            bar.update(task, completed=epoch, description=f"loss {loss:.4f} · val macro-F1 {f1:.4f}")
            bar.refresh()
        else:
            log(f"[{label}] epoch {epoch}/{epochs}: loss {loss:.4f}, val macro-F1 {f1:.4f}")

    try:
        yield report
    finally:
        if bar is not None:
            bar.stop()


def state_hash(module) -> str:
    """sha256 over the state dict (sorted names, dtype, shape, bytes): equal iff the weights are bit-identical."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def teacher_module(ctx: PassContext, parent: Candidate):
    """The fp32 torch module of the input candidate: the loaded nn.Module for the baseline, else its .pt2 graph."""
    if ctx.torch_module is not None and tuple(parent.lineage) == ("baseline",):
        return ctx.torch_module
    from toolkit.backends.torch import load_pt2

    return load_pt2(parent.path, trust=parent.trust_checkpoint).module()


def train_split(ctx: PassContext):
    if ctx.data.train is None or len(ctx.data.train) == 0:
        raise UnsupportedError(f"{ctx.data.name}: training needs a train split; add split=['train',...] rows to the .npz")
    return ctx.data.train


__all__ = ["TrainOptions", "deterministic", "tensors", "logits_of", "predict", "macro_f1", "supervised_loss", "fit",
           "state_hash", "n_params", "teacher_module", "train_split"]
