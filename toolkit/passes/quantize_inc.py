"""Intel Neural Compressor 3.x (PyTorch) static int8, with INC's accuracy-aware tuning as an option.

INC 3.x quantizes a plain nn.Module only through IPEX; without IPEX it needs the model exported first
(`neural_compressor.torch.export.export`) and then runs torch.ao PT2E underneath
(`prepare`/`convert` with `StaticQuantConfig`, X86InductorQuantizer). With `tuning: true` (default) it
runs `autotune` over a small config set (activation calibration minmax/KL, asymmetric/symmetric) with
eval_fn = validation macro-F1 and stops at the first config within the tolerance. INC's
`tolerable_loss` is *relative* to the fp32 score; optkit's tolerance is an *absolute* macro-F1 drop,
so tolerable_loss = tolerance / fp32_macro_f1. Every trial (config, val macro-F1) is recorded in the
candidate's info.

Output: like `pt2e_ptq`, the converted program (weights folded to int8: INC converts with fold_quantize=False)
is exported with torch.onnx (dynamo) to an int8 QDQ ONNX
model run by ONNX Runtime (PT2E reference ops in torch eager are ~20x slower than fp32 here).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext, register_pass
from toolkit.passes.export import dynamic_shapes, example_inputs, export_program, is_exported
from toolkit.passes.quantize_pt2e import (calibrate, derive_quantized, fold_weight_quantize, require, save_quantized,
                                          split_shared_call_sites, torch_module, torch_val_f1)

# the trial order: the fastest config (U8 asymmetric minmax, VNNI-friendly) first
TUNING_SPACE = [("minmax", False), ("kl", False), ("minmax", True), ("kl", True)]


class IncOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tuning: bool = True                      # INC autotune (accuracy-aware) vs one static config
    tolerance: float | None = Field(default=None, ge=0, le=1)  # absolute val macro-F1 drop; default: the recipe's search.tolerance
    max_trials: int = Field(default=4, ge=1, le=len(TUNING_SPACE))
    act_algo: Literal["minmax", "kl"] = "minmax"   # without tuning
    output: Literal["onnx", "torch"] = "onnx"


def _quiet_inc() -> None:
    import logging

    for name in ("neural_compressor", "neural_compressor.common", "neural_compressor.torch"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Eager:
    """A plain nn.Module around a torch.export'ed module: INC calls .eval(), which unlifted programs refuse."""

    def __new__(cls, inner):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return self.inner(*args)

            def eval(self):  # the exported module is already in inference form
                return self

        w = Wrapper()
        w._optkit_varargs = True
        return w


def _source_module(ctx: PassContext, parent: Candidate):
    """The original nn.Module when the parent is the baseline (best for INC's strict export), else the archive's."""
    if parent.lineage == ("baseline",) and ctx.torch_module is not None and not is_exported(ctx.torch_module):
        return ctx.torch_module.eval()
    return _Eager(ctx.torch_module if parent.lineage == ("baseline",) and ctx.torch_module is not None
                  else torch_module(parent))


def _exported(module, ctx: PassContext):
    """The graph INC's prepare/convert take. INC's own export is strict first, which on an unlifted .pt2 program
    gives a graph the X86 quantizer annotates nothing in (and calls .eval(), which such programs refuse):
    an exported program is re-exported here, non-strict, with the contract's ranges, and marked as INC marks it.
    Its shared modules' call sites get one partition each (quantize_pt2e.split_shared_call_sites: a ResNet's reused
    ReLU otherwise fails INC's X86 annotation with "Input partition has more than one output node")."""
    from neural_compressor.torch.export import export

    inner = getattr(module, "inner", None)
    if inner is not None and is_exported(inner):
        graph = export_program(inner, ctx, what="the model for INC").module()
        graph._optkit_split = split_shared_call_sites(graph)
        graph._exported = True          # what INC's export sets: prepare() checks it
        graph.dynamic_shapes = dynamic_shapes(ctx)
        return graph
    try:
        dyn = dynamic_shapes(ctx)
        if getattr(module, "_optkit_varargs", False):  # forward(*args): one entry covering the args tuple
            dyn = (dyn,)
        return export(module, example_inputs(ctx), dynamic_shapes=dyn)
    except Exception as exc:
        raise UnsupportedError(f"INC could not export the model for PT2E ({str(exc).splitlines()[0][:200]})") from exc


@register_pass("inc_ptq", accepts=("torch",), backend="onnxruntime", precision="int8", options=IncOptions)
def inc_ptq(ctx: PassContext, parent: Candidate, opts: IncOptions, cid: str) -> Candidate:
    """Intel Neural Compressor static int8 (PT2E underneath), optionally accuracy-aware autotune; QDQ ONNX output."""
    opts = opts.model_copy(update={"tolerance": ctx.tolerance_for(opts)})  # unset: the recipe's search.tolerance
    require("neural_compressor", "Intel Neural Compressor")
    _quiet_inc()
    import neural_compressor
    from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune, convert, prepare

    module = _source_module(ctx, parent)
    base_f1 = torch_val_f1(module, ctx)
    graph = _exported(module, ctx)
    info: dict = {"library": f"neural-compressor {neural_compressor.__version__}", "fp32_val_macro_f1": round(base_f1, 4),
                  "calibration_samples": ctx.calibration_size,
                  "shared_call_sites_split": getattr(graph, "_optkit_split", 0)}
    if opts.tuning:
        trials: list[dict] = []

        def eval_fn(model) -> float:
            f1 = torch_val_f1(model, ctx)
            trials.append({"val_macro_f1": round(f1, 4)})
            return f1

        space = TUNING_SPACE[: opts.max_trials]
        configs = [StaticQuantConfig(act_algo=a, act_sym=s) for a, s in space]
        # max_trials = len(space): INC returns None when it runs out of configs before max_trials
        tune = TuningConfig(config_set=configs, tolerable_loss=opts.tolerance / max(base_f1, 1e-9), max_trials=len(space))
        quantized = autotune(graph, tune, eval_fn=eval_fn,
                             run_fn=lambda m: calibrate(m, ctx), example_inputs=example_inputs(ctx))
        if quantized is None:
            raise UnsupportedError("INC autotune returned no model; lower the number of trials or raise the tolerance")
        # the first eval_fn call is INC's fp32 baseline; then one per trial
        steps = []
        for (algo, sym), t in zip(space, trials[1:]):
            steps.append({"act_algo": algo, "act_sym": sym, "val_macro_f1": t["val_macro_f1"],
                          "drop": round(base_f1 - t["val_macro_f1"], 4),
                          "within_tolerance": base_f1 - t["val_macro_f1"] <= opts.tolerance + 1e-12})
        chosen = next((s for s in steps if s["within_tolerance"]), max(steps, key=lambda s: s["val_macro_f1"]) if steps else None)
        info.update({"tuning": "INC autotune", "tolerance_abs": opts.tolerance,
                     "tolerable_loss_rel": round(opts.tolerance / max(base_f1, 1e-9), 5), "trials": steps,
                     "chosen": chosen})
        step = "inc_ptq[autotune]"
    else:
        prepared = prepare(graph, StaticQuantConfig(act_algo=opts.act_algo))
        calibrate(prepared, ctx)
        quantized = convert(prepared)
        info.update({"tuning": "none", "act_algo": opts.act_algo})
        step = f"inc_ptq[{opts.act_algo}]"
    fold_weight_quantize(quantized)
    path = save_quantized(quantized, ctx, ctx.folder(cid), opts.output)
    return derive_quantized(parent, ctx, path, "inc", step, info)
