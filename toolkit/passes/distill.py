"""Knowledge distillation: a smaller student learns from the fp32 teacher (the input candidate).

Student rules (option `student`):
- `width:W` (e.g. `width:0.25`): the teacher's architecture with channels scaled by W, built by a
  factory that takes `width=` (`student_factory`, default `toolkit.intake.demo:digits_cnn` when the teacher is
  the demo CNN). Randomly initialised (seeded).
- `every_other_layer`: DistilBERT-style init for transformer encoders: the teacher with its layer stack
  (the first nn.ModuleList of >= 2 blocks) halved, keeping layers 0, 2, 4, ... with their weights;
  embeddings and head copied. Needs the teacher as an nn.Module (a torch checkpoint + factory, or the
  demo), not a .pt2 graph.
- `factory`: `student_factory` (`package.module:function`) called with no arguments (or
  `num_classes=` when it takes one).

Loss: alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(label smoothing,
optional balanced class weights, or focal loss with `focal_gamma` > 0). AdamW, linear warmup then
cosine decay (torch.optim.lr_scheduler), gradient clipping, early stopping on validation macro-F1.
Training is seeded and bit-reproducible on CPU: deterministic algorithms and one thread inside a
context that restores the caller's settings, a torch.Generator for shuffling.

With `ablation: true` the same student (same init, same budget) is also trained with alpha = 0 (no
KD): its validation curve is recorded in `info["ablation"]` so the report can say whether KD helped.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import re
import sys
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext, register_pass

DEMO_FACTORY = "toolkit.intake.demo:digits_cnn"


class TrainOptions(BaseModel):
    """Optimisation settings shared by distill and qat."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1, le=4096)  # bounds.BATCH_MAX
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="share of steps with linear LR warm-up")
    patience: int = Field(default=5, ge=1, description="epochs without a better validation macro-F1 before stopping")
    grad_clip: float | None = Field(default=1.0, gt=0, description="max gradient L2 norm; null = no clipping")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    class_weights: Literal["balanced"] | None = None
    focal_gamma: float = Field(default=0.0, ge=0, description="> 0: focal loss instead of cross-entropy")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1,  # bounds.SEED_MAX: numpy seeds are 32-bit
                             description="default: the recipe's seed")


class DistillOptions(TrainOptions):
    student: str = "width:0.25"
    student_factory: str | None = None
    lr: float = Field(default=5e-3, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the KD term; 0 = plain supervised training")
    temperature: float = Field(default=2.0, gt=0)
    ablation: bool = Field(default=True, description="also train the same student without KD (alpha=0) and record it")

    @field_validator("student")
    @classmethod
    def _student_rule(cls, v: str) -> str:
        if v in ("every_other_layer", "factory") or re.fullmatch(r"width:(0?\.\d+|1(\.0*)?)", v):
            return v
        raise ValueError(f"student '{v}': use 'width:W' with 0 < W <= 1, 'every_other_layer', or 'factory' "
                         "(with student_factory: package.module:function)")


# --------------------------------------------------------------------------- shared training machinery

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
        eval_mode: Callable | None = None) -> dict:
    """AdamW + warmup/cosine + clipping + early stopping on validation macro-F1; restores the best weights.

    batch_loss(idx) -> scalar loss for the training rows `idx`. Returns the curves and the stopping facts.
    """
    import torch

    train_mode = train_mode or (lambda: model.train())
    eval_mode = eval_mode or (lambda: model.eval())
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = (n_train + opts.batch_size - 1) // opts.batch_size
    total = steps_per_epoch * opts.epochs
    warmup = max(1, int(round(opts.warmup_fraction * total)))
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=opts.lr * 0.01),
    ], milestones=[warmup])
    gen = torch.Generator().manual_seed(seed)
    curves: dict[str, list] = {"epoch": [], "train_loss": [], "val_macro_f1": [], "lr": []}
    best_f1, best_epoch, best_state, bad = -1.0, 0, None, 0
    stopped = False
    with _epoch_progress(label, opts.epochs) as progress:
        for epoch in range(1, opts.epochs + 1):
            train_mode()
            perm = torch.randperm(n_train, generator=gen)
            total_loss, seen = 0.0, 0
            for i in range(0, n_train, opts.batch_size):
                idx = perm[i:i + opts.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = batch_loss(idx)
                loss.backward()
                if opts.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
                opt.step()
                sched.step()
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
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    eval_mode()
    return {"curves": curves, "best_epoch": best_epoch, "best_val_macro_f1": round(best_f1, 6),
            "epochs_run": len(curves["epoch"]), "stopped_early": stopped}


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


# --------------------------------------------------------------------------- students

def _call_factory(spec: str, **kwargs):
    from toolkit.intake.checkpoints import resolve_factory

    fn = resolve_factory(spec)
    try:
        sig = inspect.signature(fn).parameters
        accepted = {k: v for k, v in kwargs.items() if k in sig or any(p.kind == p.VAR_KEYWORD for p in sig.values())}
    except (TypeError, ValueError):
        accepted = kwargs
    return fn(**accepted)


def _is_demo_cnn(teacher, n_classes: int) -> bool:
    from toolkit.intake.demo import digits_cnn

    ref = {k: tuple(v.shape) for k, v in digits_cnn(num_classes=n_classes).state_dict().items()}
    try:
        got = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    except Exception:
        return False
    return got == ref


def _layer_stack(model) -> tuple[Any, str, Any] | None:
    """(parent module, attribute name, ModuleList) of the first stack of >= 2 blocks."""
    import torch.nn as nn

    for name, mod in model.named_modules():
        for attr, child in mod.named_children():
            if isinstance(child, nn.ModuleList) and len(child) >= 2:
                return mod, attr, child
    return None


def make_student(opts: DistillOptions, teacher, n_classes: int):
    """Build the student (an nn.Module) and a one-line description of how."""
    import torch.nn as nn

    if opts.student.startswith("width:"):
        width = float(opts.student.split(":", 1)[1])
        factory = opts.student_factory
        if factory is None:
            if not _is_demo_cnn(teacher, n_classes):
                raise UnsupportedError("student 'width:W' needs student_factory: package.module:function taking width= "
                                       "(the built-in width rule only knows the demo CNN)")
            factory = DEMO_FACTORY
        return _call_factory(factory, width=width, num_classes=n_classes), f"{factory}(width={width})"
    if opts.student == "factory":
        if not opts.student_factory:
            raise UnsupportedError("student 'factory' needs student_factory: package.module:function")
        return _call_factory(opts.student_factory, num_classes=n_classes), f"{opts.student_factory}()"
    # every_other_layer
    if not isinstance(teacher, nn.Module) or type(teacher).__name__ == "GraphModule":
        raise UnsupportedError("student 'every_other_layer' needs the teacher as an nn.Module with an nn.ModuleList of "
                               "layers (a state dict + factory); a .pt2 graph has no layer list")
    found = _layer_stack(teacher)
    if found is None:
        raise UnsupportedError(f"student 'every_other_layer': {type(teacher).__name__} exposes no nn.ModuleList of >= 2 "
                               "layers to halve; use 'width:W' or 'factory' with student_factory")
    student = copy.deepcopy(teacher)
    s_found = _layer_stack(student)
    parent_mod, attr, layers = s_found
    keep = list(range(0, len(layers), 2))
    setattr(parent_mod, attr, nn.ModuleList([layers[i] for i in keep]))
    return student, f"every_other_layer: layers {keep} of {len(layers)} in '{attr}' copied from the teacher"


# --------------------------------------------------------------------------- the pass

def _train_student(student, teacher_train_logits, ctx: PassContext, opts: DistillOptions, alpha: float, seed: int,
                   label: str) -> dict:
    import torch.nn.functional as F

    names = ctx.io.input_names
    train = train_split(ctx)
    x_tr, x_va = tensors(train, names), tensors(ctx.data.val, names)
    import torch

    y_tr = torch.from_numpy(train.y.astype(np.int64))
    ce = supervised_loss(opts, ctx.data.n_classes, train.y)
    T = opts.temperature

    def batch_loss(idx):
        s = logits_of(student, x_tr, names, idx)
        loss = ce(s, y_tr[idx])
        if alpha > 0:
            kd = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(teacher_train_logits[idx] / T, 1),
                          reduction="batchmean", log_target=True) * T * T
            loss = alpha * kd + (1 - alpha) * loss
        return loss

    def val_f1():
        return macro_f1(ctx.data.val.y, predict(student, x_va, names), ctx.data.n_classes)

    return fit(student, student.parameters(), batch_loss, len(train), val_f1, opts, seed, ctx.log, label)


@register_pass("distill", accepts=("torch",), backend="torch", precision=None, options=DistillOptions,
               needs_training_data=True)
def distill(ctx: PassContext, parent: Candidate, opts: DistillOptions, cid: str) -> Candidate:
    """Knowledge distillation into a smaller student (width multiplier, every-other-layer, or a factory)."""
    import torch

    from toolkit.passes.export import export_program

    seed = ctx.seed if opts.seed is None else opts.seed
    train = train_split(ctx)
    names = ctx.io.input_names
    teacher = teacher_module(ctx, parent)
    if hasattr(teacher, "eval"):
        teacher.eval()
    with deterministic(seed):
        teacher_logits = predict(teacher, tensors(train, names), names).detach()
        teacher_val_f1 = macro_f1(ctx.data.val.y, predict(teacher, tensors(ctx.data.val, names), names), ctx.data.n_classes)
        student, how = make_student(opts, teacher, ctx.data.n_classes)
        init_state = copy.deepcopy(student.state_dict())
        kd = _train_student(student, teacher_logits, ctx, opts, opts.alpha, seed, f"{cid} (KD)")
    ablation = None
    if opts.ablation and opts.alpha > 0:
        plain = copy.deepcopy(student)
        plain.load_state_dict(init_state)  # the same initial weights, the same budget, no KD term
        with deterministic(seed):
            ab = _train_student(plain, teacher_logits, ctx, opts, 0.0, seed, f"{cid} (no KD)")
        ablation = {"alpha": 0.0, "curves": ab["curves"], "best_epoch": ab["best_epoch"],
                    "best_val_macro_f1": ab["best_val_macro_f1"], "stopped_early": ab["stopped_early"],
                    "note": "same student init and training budget, supervised loss only"}
    student.eval()
    path = ctx.folder(cid) / "model.pt2"
    torch.export.save(export_program(student, ctx), str(path))
    t_params, s_params = n_params(teacher), n_params(student)
    info = {
        "training": "distill",
        "student": opts.student, "student_built_by": how,
        "teacher_params": t_params, "student_params": s_params, "param_ratio": round(s_params / max(t_params, 1), 4),
        "teacher_val_macro_f1": round(teacher_val_f1, 6),
        "curves": kd["curves"], "best_epoch": kd["best_epoch"], "best_val_macro_f1": kd["best_val_macro_f1"],
        "epochs_run": kd["epochs_run"], "stopped_early": kd["stopped_early"],
        "kd": {"alpha": opts.alpha, "temperature": opts.temperature, "label_smoothing": opts.label_smoothing,
               "class_weights": opts.class_weights, "focal_gamma": opts.focal_gamma, "lr": opts.lr,
               "weight_decay": opts.weight_decay, "epochs": opts.epochs, "batch_size": opts.batch_size,
               "warmup_fraction": opts.warmup_fraction, "patience": opts.patience, "grad_clip": opts.grad_clip,
               "seed": seed, "train_samples": len(train)},
        "ablation": ablation,
        "weights_sha256": state_hash(student),
    }
    step = f"distill[{opts.student},a={opts.alpha},T={opts.temperature}]"
    return parent.derive(id=cid, path=path, format="torch", backend="torch", precision="fp32", engine=None, step=step,
                         runtime_options={"input_names": list(names)}, info=info)
