"""int8 remedies: when a PTQ candidate misses the F1 gate, try what the peers try, cheapest first, and say which worked.

Default static int8 breaks real models (EfficientNet-Lite0 kept 24-29% top-1 agreement with fp32 under ORT's
defaults; STACK-NOTES). The gate catches it at selection; this pass goes on to look for an int8 candidate
that works, in the order Olive / NNCF / TensorRT Model Optimizer users would try by hand:

1. per-channel weight scales (when the PTQ used per-tensor),
2. other activation calibrators: percentile (clips outliers), entropy (KL),
3. the first and last quantizable layers kept in fp32 (the stem sees raw pixels, the head makes the logits),
4. the most sensitive layers kept in fp32 (sensitivity.rank + bisection, as `mixed_precision`).

Every trial is scored on the validation split against the fp32 input with one ORT QDQ quantizer
(sensitivity.LayerQuantizer); the first within tolerance is the artifact, and `info["fixed_by"]` names it.
When the PTQ candidate already meets the gate, the step is skipped with that reason. The tolerance is the
step's own `tolerance`, else the device's max_macro_f1_drop: the gate selection applies.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.core.errors import StepNotNeeded, UnsupportedError
from toolkit.passes.base import PassContext, register_pass


class RemedyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ptq_candidate: str = Field(description="step id of the PTQ candidate whose F1 is checked")
    when: Literal["if_ptq_misses_gate", "always"] = "if_ptq_misses_gate"
    tolerance: float | None = Field(default=None, ge=0, le=1)  # absolute val macro-F1 drop; default: the device's gate
    activations: Literal["uint8", "int8"] = "uint8"


# The remedies, cheapest first: name -> (what it is, LayerQuantizer settings, which layers stay fp32).
# "layers" is "none", "first_last" or "sensitive" (ranked + bisected); a registry, not an if-chain.
REMEDIES: dict[str, tuple[str, dict, str]] = {
    "per_channel": ("per-channel weight scales", {"per_channel": True, "calibration": "minmax"}, "none"),
    "percentile": ("percentile calibrator (clips activation outliers)", {"per_channel": True, "calibration": "percentile"}, "none"),
    "entropy": ("entropy (KL) calibrator", {"per_channel": True, "calibration": "entropy"}, "none"),
    "first_last_fp32": ("first and last layers kept fp32", {"per_channel": True, "calibration": "minmax"}, "first_last"),
    "sensitive_fp32": ("most sensitive layers kept fp32 (ranked once, bisected)", {"per_channel": True, "calibration": "minmax"},
                       "sensitive"),
}


def _gate(ctx: PassContext, parent: Candidate, opts: RemedyOptions) -> tuple[float, dict]:
    tol = opts.tolerance if opts.tolerance is not None else float(ctx.device.budgets.max_macro_f1_drop)
    ptq = ctx.candidates.get(opts.ptq_candidate)
    if ptq is None:
        raise StepNotNeeded(f"PTQ candidate '{opts.ptq_candidate}' does not exist in this run "
                               "(it failed, was skipped, or the id is wrong)")
    ref, got = ctx.val_macro_f1(parent), ctx.val_macro_f1(ptq)
    decision = {"ptq_candidate": opts.ptq_candidate, "tolerance": tol, "fp32_val_macro_f1": round(ref, 4),
                "ptq_val_macro_f1": round(got, 4), "ptq_val_drop": round(ref - got, 4), "ptq_settings": dict(ptq.info)}
    if opts.when == "if_ptq_misses_gate" and ref - got <= tol:
        raise StepNotNeeded(f"PTQ candidate {opts.ptq_candidate} meets the F1 gate (validation macro-F1 "
                               f"{got:.4f} vs fp32 {ref:.4f}, drop {ref - got:.4f} <= {tol}); no remedy needed")
    return tol, decision


@register_pass("int8_remedies", accepts=("onnx",), backend="onnxruntime", precision="mixed-int8", options=RemedyOptions)
def int8_remedies(ctx: PassContext, parent: Candidate, opts: RemedyOptions, cid: str) -> Candidate:
    """When a PTQ candidate misses the F1 gate: per-channel, other calibrators, first/last or sensitive layers fp32."""
    from toolkit.passes.mixed_precision import bisect_plan
    from toolkit.passes.sensitivity import LayerQuantizer, rank

    tol, decision = _gate(ctx, parent, opts)
    ptq_info = decision["ptq_settings"]
    base = LayerQuantizer(ctx, Path(parent.path), engine="ort", activations=opts.activations)
    trials: list[dict] = []
    chosen = fixed_by = None
    try:
        names = [n["name"] for n in base.layers]
        for name, (what, settings, layers) in REMEDIES.items():
            left = ctx.time_left_s()
            if left is not None and left <= 0:
                trials.append({"remedy": name, "what": what, "skipped": "over the recipe's time budget"})
                continue
            if name == "per_channel" and ptq_info.get("per_channel") and ptq_info.get("calibration") == "minmax":
                trials.append({"remedy": name, "what": what, "skipped": "the PTQ candidate already used it"})
                continue
            q = base.variant(**settings)
            if layers == "sensitive":
                ranking = [r["layer"] for r in rank(q)]
                results = {}

                def evaluate(k: int, q=q, ranking=ranking, results=results):
                    res = results[k] = q.run(ranking[:k])
                    return q.base_f1 - res.val_macro_f1, {"kept_fp32": list(ranking[:k]),
                                                          "val_macro_f1": round(res.val_macro_f1, 4)}

                steps, k = bisect_plan(evaluate, len(ranking), tol, ctx.time_left_s)
                res = results[k] if k is not None else results[max(results, key=lambda i: results[i].val_macro_f1)]
                extra = {"search": steps}
            else:
                keep = [names[0], names[-1]] if layers == "first_last" and len(names) > 2 else []
                res, extra = q.run(keep), {}
            drop = base.base_f1 - res.val_macro_f1
            ok = drop <= tol + 1e-12
            trials.append({"remedy": name, "what": what, **settings, "kept_fp32": list(res.excluded),
                           "val_macro_f1": round(res.val_macro_f1, 4), "drop": round(drop, 4), "within_tolerance": ok,
                           **extra})
            ctx.log(f"[{cid}] remedy {name}: val macro-F1 {res.val_macro_f1:.4f} (drop {drop:+.4f})")
            if ok:
                chosen, fixed_by = res, name
                break
        if chosen is None:
            tried = "; ".join(f"{t['remedy']} {t.get('drop', t.get('skipped'))}" for t in trials)
            raise UnsupportedError(f"{parent.path}: no int8 remedy brought the validation macro-F1 drop within {tol} "
                                   f"(PTQ {opts.ptq_candidate} dropped {decision['ptq_val_drop']}; tried: {tried}); "
                                   "the model needs QAT (pass: qat) or stays fp32")
        path = ctx.folder(cid) / "model.onnx"
        shutil.copy2(chosen.path, path)
    finally:
        base.close()
    decision.pop("ptq_settings")
    won = next(t for t in trials if t["remedy"] == fixed_by)
    info = {"format": "QDQ", "fixed_by": fixed_by, "fixed_by_what": REMEDIES[fixed_by][0], "trials": trials, "gate": decision,
            "calibration": won.get("calibration"), "per_channel": won.get("per_channel"), "activations": opts.activations,
            "excluded_nodes": won["kept_fp32"], "val_macro_f1": won["val_macro_f1"],
            "calibration_samples": ctx.calibration_size}
    return parent.derive(id=cid, path=path, precision="mixed-int8" if won["kept_fp32"] else "int8", engine="ort",
                         step=f"int8_remedies[{fixed_by}]", info=info)
