"""Mixed precision by layer sensitivity (accuracy-aware search) and NNCF accuracy control.

`mixed_precision`: measures each quantizable layer's sensitivity (toolkit.passes.sensitivity: val macro-F1 and
logit KL when only that layer is int8, and when all but it are), then walks from the fastest plan (full
int8) towards the safest, keeping the k most sensitive layers in fp32 for k = 0, 1, 2, ..., and stops
at the first plan whose validation macro-F1 drop vs fp32 is within `tolerance` (set it to the recipe's
search.tolerance). Every step is recorded in candidate.info["search"]. The layers are kept in fp32
with each engine's own mechanism: ONNX Runtime `nodes_to_exclude` (engine: ort, default) or NNCF
`IgnoredScope` (engine: nncf, NNCF PTQ on the ONNX model). Sensitivity itself is always measured with
ORT QDQ (fast and layer-exact). fp16/bf16 for the kept layers is not done: on x86 CPUs ORT has no
fp16 kernels and OpenVINO picks one inference precision per model, so fp32 is what runs here.

`nncf_accuracy_control`: NNCF's own accuracy-aware PTQ (`quantize_with_accuracy_control`) on the
OpenVINO model, max_drop = tolerance (absolute), validation_fn = validation macro-F1.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.passes.base import PassContext, register_pass


class MixedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["ort", "nncf"] = "ort"
    tolerance: float | None = Field(default=None, ge=0, le=1)  # absolute val macro-F1 drop; default: the recipe's search.tolerance
    max_layers: int = Field(default=40, ge=1, le=400)    # sensitivity cap (2 quantize+eval runs per layer)
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    activations: Literal["uint8", "int8"] = "uint8"
    per_channel: bool = True


@register_pass("mixed_precision", accepts=("onnx",), backend="onnxruntime", precision="mixed-int8", options=MixedOptions)
def mixed_precision(ctx: PassContext, parent: Candidate, opts: MixedOptions, cid: str) -> Candidate:
    """Keep the fewest most-sensitive layers in fp32 so the val macro-F1 drop stays within tolerance."""
    opts = opts.model_copy(update={"tolerance": ctx.tolerance_for(opts)})  # unset: the recipe's search.tolerance
    from toolkit.passes.sensitivity import LayerQuantizer, analyse

    q = LayerQuantizer(ctx, Path(parent.path), engine="ort", activations=opts.activations,
                       per_channel=opts.per_channel, calibration=opts.calibration)
    try:
        table = analyse(q, opts.max_layers)
        ranking = [r["layer"] for r in table if r["analysed"]]
        searcher = q
        if opts.engine == "nncf":  # the search and the artifact use NNCF's IgnoredScope; sensitivity stays ORT
            searcher = LayerQuantizer(ctx, Path(parent.path), engine="nncf")
        steps, chosen = [], None
        for k in range(len(ranking) + 1):
            res = searcher.run(ranking[:k])
            drop = searcher.base_f1 - res.val_macro_f1
            ok = drop <= opts.tolerance + 1e-12
            steps.append({"step": k, "kept_fp32": list(ranking[:k]), "val_macro_f1": round(res.val_macro_f1, 4),
                          "drop": round(drop, 4), "kl": res.kl, "within_tolerance": ok})
            ctx.log(f"[{cid}] step {k}: {k} layer(s) fp32, val macro-F1 {res.val_macro_f1:.4f} (drop {drop:+.4f})")
            if ok:
                chosen = res
                break
        if chosen is None:  # only possible when the sensitivity cap left layers unanalysed
            from toolkit.core.errors import UnsupportedError

            raise UnsupportedError(f"no plan met the tolerance {opts.tolerance} with the {len(ranking)} analysed layers in "
                                   f"fp32 (of {len(q.layers)}); raise max_layers or the recipe's tolerance")
        path = ctx.folder(cid) / "model.onnx"
        shutil.copy2(chosen.path, path)
        kept = list(chosen.excluded)
        all_layers = [n["name"] for n in q.layers]
        why = ("full int8 already meets the tolerance" if not kept else
               f"full int8 drops {steps[0]['drop']:+.4f} val macro-F1 (> {opts.tolerance}); keeping the {len(kept)} most "
               f"sensitive layer(s) in fp32 brings the drop to {steps[-1]['drop']:+.4f}")
        info = {"engine_mechanism": "ORT nodes_to_exclude" if opts.engine == "ort" else "NNCF IgnoredScope (ONNX)",
                "tolerance": opts.tolerance, "fp32_val_macro_f1": round(q.base_f1, 4),
                "layers_total": len(all_layers), "layers_analysed": len(ranking), "sensitivity_cap": opts.max_layers,
                "sensitivity": table, "search": steps,
                "plan": {"fp32": kept, "int8": [n for n in all_layers if n not in kept], "why": why},
                "val_macro_f1": round(chosen.val_macro_f1, 4), "format": "QDQ"}
        if searcher is not q:
            searcher.close()
    finally:
        q.close()
    return parent.derive(id=cid, path=path, precision="mixed-int8" if kept else "int8", engine=opts.engine,
                         step=f"mixed_precision[{opts.engine}: {len(kept)}/{len(all_layers)} fp32]", info=info)


# --------------------------------------------------------------------------- NNCF accuracy control

class AccuracyControlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tolerance: float | None = Field(default=None, ge=0, le=1)  # max_drop, absolute val macro-F1; default: the recipe's search.tolerance
    preset: Literal["performance", "mixed"] = "performance"
    max_num_iterations: int = Field(default=20, ge=1)


@register_pass("nncf_accuracy_control", accepts=("onnx", "openvino"), backend="openvino", precision="int8",
               options=AccuracyControlOptions)
def nncf_accuracy_control(ctx: PassContext, parent: Candidate, opts: AccuracyControlOptions, cid: str) -> Candidate:
    """NNCF quantize_with_accuracy_control on OpenVINO: reverts the worst layers to fp32 until max_drop is met."""
    opts = opts.model_copy(update={"tolerance": ctx.tolerance_for(opts)})  # unset: the recipe's search.tolerance
    import logging

    import nncf
    import openvino as ov

    from toolkit.metrics.classification import classification_metrics

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = ov.Core().read_model(str(parent.path))
    names = [p.get_any_name() for p in model.inputs]
    d = ctx.data
    val_items = [(b, d.val.y[i:i + 32]) for i, b in zip(range(0, len(d.val), 32), d.val.batches(32))]
    calib = nncf.Dataset(ctx.calibration_batches(batch_size=1), lambda b: {n: b[n] for n in names})
    val = nncf.Dataset(val_items, lambda item: {n: item[0][n] for n in names})

    def validate(compiled, items) -> float:
        out = compiled.outputs[0]
        preds, ys = [], []
        for feeds, y in items:
            preds.append(np.asarray(compiled({n: feeds[n] for n in names})[out]).argmax(1))
            ys.append(y)
        return float(classification_metrics(np.concatenate(ys), np.concatenate(preds), d.n_classes, d.labels)["macro_f1"])

    quantized = nncf.quantize_with_accuracy_control(
        model, calibration_dataset=calib, validation_dataset=val, validation_fn=validate,
        max_drop=opts.tolerance, drop_type=nncf.DropType.ABSOLUTE, subset_size=ctx.calibration_size,
        preset=nncf.QuantizationPreset.PERFORMANCE if opts.preset == "performance" else nncf.QuantizationPreset.MIXED,
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
            max_num_iterations=opts.max_num_iterations))
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    f1_q = validate(core.compile_model(quantized, "CPU", cfg), val_items)
    f1_fp = validate(core.compile_model(model, "CPU", cfg), val_items)
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    path = ctx.folder(cid) / "model.xml"
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return parent.derive(id=cid, path=path, format="openvino", backend="openvino", precision="int8", engine="nncf",
                         step="nncf_accuracy_control[openvino]", runtime_options={"inference_precision": "f32"},
                         info={"max_drop": opts.tolerance, "drop_type": "absolute", "fp32_val_macro_f1": round(f1_fp, 4),
                               "val_macro_f1": round(f1_q, 4), "drop": round(f1_fp - f1_q, 4),
                               "fake_quantize_ops": n_fq,
                               "validation": "macro-F1 on the validation split, OpenVINO CPU default precision inside NNCF"})
