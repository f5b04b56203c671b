"""Mixed precision by layer sensitivity (accuracy-aware search) and NNCF accuracy control.

`mixed_precision`: ranks the quantizable layers once (toolkit.passes.sensitivity.rank: the int8 noise each
layer injects in the full-int8 model, one quantization and one run on validation rows; or `ranking:
exhaustive`, two quantize+evaluate runs per layer), then bisects over the ranking for the fewest
top-ranked layers kept in fp32 whose validation macro-F1 drop vs fp32 is within `tolerance` (the
recipe's search.tolerance): full int8 first, then log2(n) plans, not one evaluation per layer (a 3.7M-
parameter CNN spent over 25 minutes in the per-layer walk). Stops at the recipe's time budget.
Every evaluated plan is recorded in candidate.info["search"]. The layers are kept in fp32
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
    # qdq_error: one pass over the full-int8 model ranks every layer (sensitivity.rank); exhaustive: 2 quantize+eval
    # runs per layer (sensitivity.analyse), capped at max_layers; kept for small models and for comparison
    ranking: Literal["qdq_error", "exhaustive"] = "qdq_error"
    max_layers: int = Field(default=40, ge=1, le=400)    # cap of the exhaustive ranking
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    activations: Literal["uint8", "int8"] = "uint8"
    per_channel: bool = True


def bisect_plan(evaluate, n: int, tolerance: float, time_left=lambda: None) -> tuple[list[dict], int | None]:
    """The fewest top-ranked layers k in [0, n] to keep in fp32 so the drop is within tolerance.

    evaluate(k) -> (val_macro_f1_drop, record). Assumes the drop shrinks as k grows (the ranking's point):
    full int8 (k=0) first, then bisection over (0, n] with k=n (nothing int8) never evaluated. log2(n)+1
    evaluations instead of n+1. Stops early (best k found so far) when time_left() <= 0.
    Returns (steps in evaluation order, chosen k or None when no evaluated plan was within tolerance).
    """
    steps: list[dict] = []

    def ok(k: int) -> bool:
        drop, record = evaluate(k)
        good = drop <= tolerance + 1e-12
        steps.append({**record, "step": len(steps), "within_tolerance": good})
        return good

    if ok(0):
        return steps, 0
    lo, hi = 0, n  # lo fails; hi is the smallest known-good k (n: every layer fp32, i.e. no int8 plan)
    while hi - lo > 1:
        left = time_left()
        if left is not None and left <= 0:
            steps[-1]["stopped"] = "over the recipe's time budget"
            break
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return steps, (hi if hi < n else None)


@register_pass("mixed_precision", accepts=("onnx",), backend="onnxruntime", precision="mixed-int8", options=MixedOptions)
def mixed_precision(ctx: PassContext, parent: Candidate, opts: MixedOptions, cid: str) -> Candidate:
    """Keep the fewest most-sensitive layers in fp32 so the val macro-F1 drop stays within tolerance."""
    opts = opts.model_copy(update={"tolerance": ctx.tolerance_for(opts)})  # unset: the recipe's search.tolerance
    from toolkit.core.errors import UnsupportedError
    from toolkit.passes.sensitivity import LayerQuantizer, analyse, rank

    q = LayerQuantizer(ctx, Path(parent.path), engine="ort", activations=opts.activations,
                       per_channel=opts.per_channel, calibration=opts.calibration)
    try:
        table = rank(q) if opts.ranking == "qdq_error" else analyse(q, opts.max_layers)
        ranking = [r["layer"] for r in table if r["analysed"]]
        searcher = q
        if opts.engine == "nncf":  # the search and the artifact use NNCF's IgnoredScope; sensitivity stays ORT
            searcher = LayerQuantizer(ctx, Path(parent.path), engine="nncf")
        results: dict[int, object] = {}

        def evaluate(k: int):
            res = results[k] = searcher.run(ranking[:k])
            drop = searcher.base_f1 - res.val_macro_f1
            ctx.log(f"[{cid}] {k} layer(s) fp32: val macro-F1 {res.val_macro_f1:.4f} (drop {drop:+.4f})")
            return drop, {"kept_fp32": list(ranking[:k]), "val_macro_f1": round(res.val_macro_f1, 4),
                          "drop": round(drop, 4), "kl": res.kl}

        steps, k = bisect_plan(evaluate, len(ranking), opts.tolerance, ctx.time_left_s)
        if k is None:
            raise UnsupportedError(f"{parent.path}: no int8 plan met the tolerance {opts.tolerance} (searched "
                                   f"{len(steps)} plans over {len(ranking)} ranked layers"
                                   f"{', stopped by the time budget' if steps[-1].get('stopped') else ''}); "
                                   "raise the recipe's search.tolerance or search.max_minutes")
        chosen = results[k]
        steps = sorted(steps, key=lambda s: len(s["kept_fp32"]))  # fastest plan first, as the report reads them
        for i, s in enumerate(steps):
            s["step"] = i
        path = ctx.folder(cid) / "model.onnx"
        shutil.copy2(chosen.path, path)
        kept = list(chosen.excluded)
        all_layers = [n["name"] for n in q.layers]
        chosen_step = next(s for s in steps if len(s["kept_fp32"]) == k)
        why = ("full int8 already meets the tolerance" if not kept else
               f"full int8 drops {steps[0]['drop']:+.4f} val macro-F1 (> {opts.tolerance}); keeping the {len(kept)} most "
               f"sensitive layer(s) in fp32 brings the drop to {chosen_step['drop']:+.4f} "
               f"({len(steps)} plans evaluated by bisection over the ranking)")
        info = {"engine_mechanism": "ORT nodes_to_exclude" if opts.engine == "ort" else "NNCF IgnoredScope (ONNX)",
                "tolerance": opts.tolerance, "fp32_val_macro_f1": round(q.base_f1, 4),
                "layers_total": len(all_layers), "layers_analysed": len(ranking),
                "sensitivity_cap": opts.max_layers if opts.ranking == "exhaustive" else len(all_layers),
                "ranking": opts.ranking, "search_method": "bisection over the ranking",
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

    from toolkit.backends.openvino import ov_model
    from toolkit.metrics.classification import classification_metrics
    from toolkit.passes.openvino_ir import save_ir

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = ov_model(parent.path)  # ONNX converted, not read (backends.openvino.ov_model)
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
    save_ir(quantized, path)  # deterministic layer names (openvino_ir.save_ir)
    return parent.derive(id=cid, path=path, format="openvino", backend="openvino", precision="int8", engine="nncf",
                         step="nncf_accuracy_control[openvino]", runtime_options={"inference_precision": "f32"},
                         info={"max_drop": opts.tolerance, "drop_type": "absolute", "fp32_val_macro_f1": round(f1_fp, 4),
                               "val_macro_f1": round(f1_q, 4), "drop": round(f1_fp - f1_q, 4),
                               "fake_quantize_ops": n_fq,
                               "validation": "macro-F1 on the validation split, OpenVINO CPU default precision inside NNCF"})
