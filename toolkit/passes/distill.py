"""Knowledge distillation: a smaller student learns from the fp32 teacher (the input candidate).

Student rules (option `student`):
- `width:W` (e.g. `width:0.25`): the teacher's architecture with channels scaled by W, built by a
  factory that takes `width=` (`student_factory`, default `toolkit.intake.demo:digits_cnn` when the teacher is
  the demo CNN). Randomly initialised (seeded).
- `every_other_layer`: DistilBERT-style init for transformer encoders: the teacher with its layer stack
  (the first nn.ModuleList of >= 2 blocks, e.g. BERT's `encoder.layer`) halved, keeping layers 0, 2, 4, ...
  with their weights; embeddings, pooler and classifier head copied; a Hugging Face config's
  num_hidden_layers follows. Needs the teacher as an nn.Module (a Hugging Face folder, a state dict +
  factory, or the demo), not a .pt2 graph.
- `factory`: `student_factory` (`package.module:function`) called with no arguments (or
  `num_classes=` when it takes one).

Loss: alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(label smoothing,
optional balanced class weights, or focal loss with `focal_gamma` > 0). The optimisation (AdamW, warm-up
then cosine decay, clipping, early stopping, seeded bit-reproducible CPU training) is passes/training.py.

With `ablation: true` the same student (same init, same budget) is also trained with alpha = 0 (no
KD): its validation curve is recorded in `info["ablation"]` so the report can say whether KD helped.
"""
from __future__ import annotations

import copy
import inspect
import re
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext, register_pass
# The training loop (shared with qat) lives in passes/training.py; its names stay importable from here.
from toolkit.passes.training import (TrainOptions, deterministic, fit, logits_of, macro_f1, n_params,  # noqa: F401
                                     predict, state_hash, supervised_loss, teacher_module, tensors, train_split)

DEMO_FACTORY = "toolkit.intake.demo:digits_cnn"


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


# --------------------------------------------------------------------------- students

def _call_factory(spec: str, **kwargs):
    from toolkit.core.factory import resolve_factory

    fn = resolve_factory(spec)
    try:
        sig = inspect.signature(fn).parameters
        accepted = {k: v for k, v in kwargs.items() if k in sig or any(p.kind == p.VAR_KEYWORD for p in sig.values())}
    except (TypeError, ValueError):
        accepted = kwargs
    return fn(**accepted)


def _is_demo_cnn(teacher, n_classes: int) -> bool:
    from toolkit.core.factory import resolve_factory

    digits_cnn = resolve_factory(DEMO_FACTORY)  # named like any student factory: the pass does not import intake
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
    # DistilBERT's init: the teacher copied whole (embeddings, pooler, classifier head), then its layer stack halved
    student = copy.deepcopy(teacher)
    parent_mod, attr, layers = _layer_stack(student)
    keep = list(range(0, len(layers), 2))
    setattr(parent_mod, attr, nn.ModuleList([layers[i] for i in keep]))
    # a Hugging Face model's config is shared by its modules (deepcopy keeps the sharing): its layer count must say
    # the truth, or save_pretrained / layer-indexed code would expect the teacher's depth
    for cfg in {id(c): c for c in (getattr(m, "config", None) for m in student.modules()) if c is not None}.values():
        if getattr(cfg, "num_hidden_layers", None) == len(layers):
            cfg.num_hidden_layers = len(keep)
    return student, (f"every_other_layer: layers {keep} of {len(layers)} in '{attr}' copied from the teacher, "
                     "with its embeddings and head (DistilBERT's init)")


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

    return fit(student, student.parameters(), batch_loss, len(train), val_f1, opts, seed, ctx.log, label,
               deadline=ctx.deadline)


@register_pass("distill", accepts=("torch",), backend="torch", precision=None, options=DistillOptions,
               needs_training_data=True)
def distill(ctx: PassContext, parent: Candidate, opts: DistillOptions, cid: str) -> Candidate:
    """Knowledge distillation into a smaller student (width multiplier, every-other-layer, or a factory)."""
    import torch

    from toolkit.passes.export import export_program, is_exported

    seed = ctx.seed if opts.seed is None else opts.seed
    train = train_split(ctx)
    names = ctx.io.input_names
    teacher = teacher_module(ctx, parent)
    if is_exported(teacher):  # a .pt2 graph: no layer list, and its module refuses eval() (its mode is fixed)
        if opts.student == "every_other_layer":
            raise UnsupportedError(f"{ctx.source or parent.path}: student 'every_other_layer' needs the teacher as an "
                                   "nn.Module with its layer list (a Hugging Face folder, or a state dict + "
                                   "--model-factory); a .pt2 graph has none to halve")
    elif hasattr(teacher, "eval"):
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
        "epochs_run": kd["epochs_run"], "stopped_early": kd["stopped_early"], "steps_run": kd["steps_run"],
        "stopped_by": kd["stopped_by"],
        "kd": {"alpha": opts.alpha, "temperature": opts.temperature, "label_smoothing": opts.label_smoothing,
               "class_weights": opts.class_weights, "focal_gamma": opts.focal_gamma, "lr": opts.lr,
               "weight_decay": opts.weight_decay, "epochs": opts.epochs, "batch_size": opts.batch_size,
               "warmup_fraction": opts.warmup_fraction, "patience": opts.patience, "grad_clip": opts.grad_clip,
               "max_steps": opts.max_steps,
               "seed": seed, "train_samples": len(train)},
        "ablation": ablation,
        "weights_sha256": state_hash(student),
    }
    step = f"distill[{opts.student},a={opts.alpha},T={opts.temperature}]"
    return parent.derive(id=cid, path=path, format="torch", backend="torch", precision="fp32", engine=None, step=step,
                         runtime_options={"input_names": list(names)}, info=info)
