"""Quantization-aware training (torchao PT2E, X86InductorQuantizer) exported to an int8 QDQ ONNX for ONNX Runtime.

What runs:
1. The fp32 torch input (the loaded module for the baseline, else the input .pt2) is captured with
   torch.export (dynamic batch) and prepared with `prepare_qat_pt2e` and the X86 inductor quantizer in QAT
   mode (`get_default_x86_inductor_quantization_config(is_qat=True)`): activations uint8 per-tensor
   affine, weights int8 per-channel symmetric (the only weight scheme torchao's x86 QAT config supports),
   fake-quantized with moving-average min/max observers.
2. PTQ initialisation: the calibration batches (drawn from the validation split, as for PTQ) run through
   the prepared model with observers on, so training starts from PTQ scales. Epoch 0 of the curves is
   this PTQ-initialised fake-quant model.
3. Fine-tuning on the train split (AdamW with a small LR, warmup + cosine, clipping, early stopping on
   validation macro-F1 of the fake-quant model; observers frozen while validating). Seeded and
   bit-reproducible on CPU (one thread, deterministic algorithms, restored afterwards).
4. `convert_pt2e` -> a PT2E int8 reference graph (int8 weights + per-channel dequantize, quantize/dequantize
   around activations), re-exported with torch.export and converted by `torch.onnx.export(dynamo=True)`.

The artifact, `model.onnx`, is therefore a QDQ ONNX model (opset 18): int8 weight initializers with
per-channel DequantizeLinear, uint8 QuantizeLinear/DequantizeLinear pairs on activations, float Conv/Gemm
between them, which ONNX Runtime fuses into integer kernels. Its scales and zero points are the ones QAT
learned, not re-calibrated by ORT. Parity of the ONNX file against the converted torch graph is recorded.

`when: if_ptq_misses_gate` runs QAT only when the PTQ candidate named by `ptq_candidate` loses more than
the tolerance (option `tolerance`, default the device's max_macro_f1_drop) in validation macro-F1 against
the fp32 input; otherwise the step is skipped with that reason.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from toolkit.core.candidate import Candidate
from toolkit.core.errors import StepNotNeeded, UnsupportedError
from toolkit.passes.base import PassContext, register_pass
from toolkit.passes.distill import (TrainOptions, deterministic, fit, logits_of, macro_f1, predict, supervised_loss, teacher_module,
                      tensors, train_split)


class QatOptions(TrainOptions):
    lr: float = Field(default=1e-4, gt=0)
    epochs: int = Field(default=4, ge=1, le=1000)
    weight_decay: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    patience: int = Field(default=3, ge=1)
    when: Literal["always", "if_ptq_misses_gate"] = "always"
    ptq_candidate: str | None = Field(default=None, description="step id of the PTQ candidate to compare against")
    tolerance: float | None = Field(default=None, ge=0, le=1,
                                    description="max validation macro-F1 drop of PTQ; default: the device's max_macro_f1_drop")
    calibration_batch_size: int = Field(default=32, ge=1, le=4096)  # bounds.BATCH_MAX

    @model_validator(mode="after")
    def _need_ptq(self) -> "QatOptions":
        if self.when == "if_ptq_misses_gate" and not self.ptq_candidate:
            raise ValueError("when: if_ptq_misses_gate needs ptq_candidate: <step id of a PTQ step>")
        return self


def _gate(ctx: PassContext, parent: Candidate, opts: QatOptions) -> dict:
    tol = opts.tolerance if opts.tolerance is not None else float(ctx.device.budgets.max_macro_f1_drop)
    decision = {"when": opts.when, "ptq_candidate": opts.ptq_candidate, "tolerance": tol}
    if opts.ptq_candidate:
        ptq = ctx.candidates.get(opts.ptq_candidate)
        if ptq is None:
            if opts.when == "if_ptq_misses_gate":
                raise StepNotNeeded(f"PTQ candidate '{opts.ptq_candidate}' does not exist in this run "
                                       "(it failed, was skipped, or the id is wrong)")
            return decision
        ref, got = ctx.val_macro_f1(parent), ctx.val_macro_f1(ptq)
        decision.update({"fp32_val_macro_f1": round(ref, 6), "ptq_val_macro_f1": round(got, 6),
                         "ptq_val_drop": round(ref - got, 6)})
        if opts.when == "if_ptq_misses_gate" and ref - got <= tol:
            raise StepNotNeeded(f"PTQ candidate {opts.ptq_candidate} is within tolerance (validation macro-F1 "
                                   f"{got:.4f} vs fp32 {ref:.4f}, drop {ref - got:.4f} <= {tol}); QAT not needed")
    return decision


@register_pass("qat", accepts=("torch",), backend="onnxruntime", precision="int8", options=QatOptions,
               needs_training_data=True, reads_device=("budgets.max_macro_f1_drop",),  # the gate's default tolerance
               reads_candidates=lambda o: [o.ptq_candidate] if o.ptq_candidate else [])  # the gate reads the PTQ result
def qat(ctx: PassContext, parent: Candidate, opts: QatOptions, cid: str) -> Candidate:
    """Quantization-aware training (torchao PT2E, x86 int8), PTQ-initialised, exported as int8 QDQ ONNX."""
    import torch

    from toolkit.passes.export import export_program, to_onnx

    decision = _gate(ctx, parent, opts)
    try:
        import torchao.quantization.pt2e as pt2e
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    except ImportError as exc:
        raise UnsupportedError(f"QAT needs torchao's PT2E quantization ({exc}); pip install torchao") from exc

    seed = ctx.seed if opts.seed is None else opts.seed
    train = train_split(ctx)
    names = ctx.io.input_names
    module = teacher_module(ctx, parent)
    if hasattr(module, "eval"):
        module.eval()
    x_tr, x_va = tensors(train, names), tensors(ctx.data.val, names)
    y_tr = torch.from_numpy(train.y.astype(np.int64))
    n = ctx.data.n_classes
    import time

    t0 = time.time()
    timings: dict[str, float] = {}
    with deterministic(seed):
        graph = export_program(module, ctx).module()
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
        prepared = prepare_qat_pt2e(graph, quantizer)

        # switching an exported graph between train and eval re-traces its dropout/batch-norm patterns
        # (~2 s each); a graph with neither behaves the same in both modes, so only observers are toggled
        mode_ops = any(("dropout" in str(nd.target) or "batch_norm" in str(nd.target)) for nd in prepared.graph.nodes)

        def train_mode():
            if mode_ops:
                pt2e.move_exported_model_to_train(prepared)
            prepared.apply(pt2e.enable_observer)

        def eval_mode():
            if mode_ops:
                pt2e.move_exported_model_to_eval(prepared)
            prepared.apply(pt2e.disable_observer)

        # PTQ initialisation: observers see the calibration batches before any gradient step
        if mode_ops:
            pt2e.move_exported_model_to_eval(prepared)
        with torch.no_grad():
            for batch in ctx.calibration_batches(batch_size=opts.calibration_batch_size):
                prepared(*(torch.from_numpy(np.ascontiguousarray(batch[k])) for k in names))
        eval_mode()
        timings["prepare_calibrate_s"] = round(time.time() - t0, 2)
        t0 = time.time()
        ptq_init_f1 = macro_f1(ctx.data.val.y, predict(prepared, x_va, names), n)
        ce = supervised_loss(opts, n, train.y)
        result = fit(prepared, prepared.parameters(), lambda idx: ce(logits_of(prepared, x_tr, names, idx), y_tr[idx]),
                     len(train), lambda: macro_f1(ctx.data.val.y, predict(prepared, x_va, names), n), opts, seed,
                     ctx.log, f"{cid} (QAT)", train_mode, eval_mode)
        eval_mode()
        timings["train_s"] = round(time.time() - t0, 2)
        t0 = time.time()
        converted = convert_pt2e(prepared)
        if mode_ops:
            pt2e.move_exported_model_to_eval(converted)
        timings["convert_s"] = round(time.time() - t0, 2)
        t0 = time.time()
    path = ctx.folder(cid) / "model.onnx"
    try:
        model = to_onnx(export_program(converted, ctx, what="the QAT int8 graph"), ctx, path)
    except UnsupportedError:
        raise
    except Exception as exc:
        raise UnsupportedError(f"QAT: exporting the converted PT2E int8 graph to ONNX failed "
                               f"({' '.join(str(exc).split())[:200]}); this torch/torchao pair cannot make the QDQ ONNX") from exc
    timings["onnx_export_s"] = round(time.time() - t0, 2)
    parity = _parity(ctx, path, converted)
    ops = sorted({node.op_type for node in model.graph.node})
    curves = result["curves"]
    curves = {"epoch": [0, *curves["epoch"]], "train_loss": [None, *curves["train_loss"]],
              "val_macro_f1": [round(ptq_init_f1, 6), *curves["val_macro_f1"]], "lr": [None, *curves["lr"]]}
    info = {
        "training": "qat", "artifact": "QDQ ONNX from torchao PT2E convert_pt2e + torch.onnx.export(dynamo=True)",
        "quantizer": "X86InductorQuantizer(is_qat=True): uint8 per-tensor activations, int8 per-channel weights",
        "ptq_init_val_macro_f1": round(ptq_init_f1, 6), "curves": curves, "best_epoch": result["best_epoch"],
        "best_val_macro_f1": result["best_val_macro_f1"], "epochs_run": result["epochs_run"],
        "stopped_early": result["stopped_early"], "ptq_candidate": opts.ptq_candidate, "gate": decision,
        "settings": {"lr": opts.lr, "weight_decay": opts.weight_decay, "epochs": opts.epochs, "batch_size": opts.batch_size,
                     "patience": opts.patience, "grad_clip": opts.grad_clip, "seed": seed,
                     "calibration_samples": ctx.calibration_size, "train_samples": len(train)},
        "timings": timings, "onnx_ops": ops, "opset": model.opset_import[0].version, "export_parity_vs_converted_torch": parity,
    }
    return parent.derive(id=cid, path=path, format="onnx", backend="onnxruntime", precision="int8", engine="pt2e",
                         step="qat[pt2e-x86]", runtime_options={}, info=info)


def _parity(ctx: PassContext, path, converted) -> dict:
    import torch

    from toolkit.backends import infer_file

    feeds = {k: np.ascontiguousarray(ctx.data.val.inputs[k][:64]) for k in ctx.io.input_names}
    with torch.no_grad():
        ref = logits_of(converted, {k: torch.from_numpy(v) for k, v in feeds.items()}, ctx.io.input_names).numpy()
    got = infer_file(path, feeds, threads=ctx.threads)
    return {"max_abs_diff": float(np.max(np.abs(got - ref))), "argmax_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
            "samples": int(len(got))}
