"""Transformer-aware passes: ONNX Runtime's transformer graph fusion, NNCF with model_type=transformer.

Why a family of its own (STACK-NOTES, issue 13): on BERT-like encoders ORT's default static int8 collapsed
macro-F1, percentile/entropy calibrators held 8-9.5 GB for a 22M-parameter encoder, and the speed wins come
from fused attention/LayerNorm/GELU kernels plus int8 MatMuls. recipes/transformer.yaml chains these passes
with ORT dynamic int8 (MatMul-heavy graphs) and minmax-only static calibration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext, register_pass

FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization",
             "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "SkipSimplifiedLayerNormalization")
PARITY_RTOL, PARITY_ATOL = 1e-3, 1e-3  # fused kernels reorder float sums: a little looser than export's 1e-4


class TransformerOptimizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_type: Literal["bert"] = "bert"   # BERT-family encoders (BERT, DistilBERT, MiniLM, RoBERTa, ELECTRA)
    num_heads: int = Field(0, ge=0)        # 0: read from the graph
    hidden_size: int = Field(0, ge=0)      # 0: read from the graph
    opt_level: Literal[0, 1] = 0           # 0: optimizer's python fusions only; 1: plus ORT's basic graph passes


class NncfTransformerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["mixed", "performance"] = "mixed"  # NNCF's advice for transformers: asymmetric activations
    smooth_quant_alpha: float | None = Field(None, ge=-1.0, le=1.0)  # None: NNCF's default for transformers; -1 off
    fast_bias_correction: bool = True


def fused_counts(model) -> dict[str, int]:
    """The fused transformer ops in a graph, read from the file (what the optimizer did, not what it meant to)."""
    from toolkit.backends.onnx_graph import op_counts

    counts = op_counts(model)
    return {op: counts[op] for op in FUSED_OPS if counts.get(op)}


def _parity(ctx: PassContext, ref_path, got_path) -> dict:
    from toolkit.backends import infer_file

    feeds = {name: ctx.data.val.inputs[name][:32] for name in ctx.io.input_names}
    outs = [infer_file(Path(p), feeds, threads=max(1, ctx.threads)) for p in (ref_path, got_path)]
    return {"max_abs_diff": float(np.max(np.abs(outs[0] - outs[1]))), "rtol": PARITY_RTOL, "atol": PARITY_ATOL,
            "ok": bool(np.allclose(outs[1], outs[0], rtol=PARITY_RTOL, atol=PARITY_ATOL))}


@register_pass("ort_transformer_optimize", accepts=("onnx",), backend="onnxruntime", precision=None,
               options=TransformerOptimizeOptions)
def ort_transformer_optimize(ctx: PassContext, parent: Candidate, opts: TransformerOptimizeOptions, cid: str) -> Candidate:
    """onnxruntime.transformers.optimizer: attention, LayerNorm and GELU fusion (fp32), parity-checked vs its input."""
    import contextlib
    import sys

    from onnxruntime.transformers.optimizer import optimize_model

    path = ctx.folder(cid) / "model.onnx"
    with contextlib.redirect_stdout(sys.stderr):  # the optimizer prints fusion statistics: the run's log, not the terminal
        optimized = optimize_model(str(parent.path), model_type=opts.model_type, num_heads=opts.num_heads,
                                   hidden_size=opts.hidden_size, opt_level=opts.opt_level, use_gpu=False)
    optimized.save_model_to_file(str(path), use_external_data_format=False)
    fused = fused_counts(optimized.model)
    parity = _parity(ctx, parent.path, path)
    if not parity["ok"]:
        raise UnsupportedError(f"{path}: the fused graph does not match its input (max |diff| {parity['max_abs_diff']:.2e}); "
                               "drop the ort_transformer_optimize step from the recipe for this model")
    return parent.derive(id=cid, path=path, step="ort_transformer_optimize", engine="ort",
                         info={"fused_ops": fused, "opt_level": opts.opt_level, "parity": parity,
                               "note": "fused ops read from the file" if fused else "no transformer pattern fused"})


@register_pass("nncf_transformer", accepts=("openvino", "onnx"), backend="openvino", precision="int8",
               options=NncfTransformerOptions)
def nncf_transformer(ctx: PassContext, parent: Candidate, opts: NncfTransformerOptions, cid: str) -> Candidate:
    """NNCF PTQ int8 with model_type=TRANSFORMER (SmoothQuant, attention-aware scopes) on OpenVINO, run by OpenVINO."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    from toolkit.backends.openvino import ov_model
    from toolkit.passes.openvino_ir import save_ir

    model = ov_model(parent.path)  # ONNX converted, not read (backends.openvino.ov_model)
    names = [p.get_any_name() for p in model.inputs]
    batches = ctx.calibration_batches(batch_size=1)
    dataset = nncf.Dataset(batches, lambda b: {n: b[n] for n in names})
    advanced = AdvancedQuantizationParameters()
    if opts.smooth_quant_alpha is not None:
        advanced = AdvancedQuantizationParameters(smooth_quant_alpha=opts.smooth_quant_alpha)
    preset = nncf.QuantizationPreset.MIXED if opts.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    quantized = nncf.quantize(model, dataset, preset=preset, model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(batches), fast_bias_correction=opts.fast_bias_correction,
                              advanced_parameters=advanced)
    path = ctx.folder(cid) / "model.xml"
    save_ir(quantized, path)  # deterministic layer names (openvino_ir.save_ir)
    return parent.derive(id=cid, path=path, format="openvino", backend="openvino", precision="int8", engine="nncf",
                         step="nncf_transformer[openvino]", runtime_options={"inference_precision": "f32"},
                         info={"preset": opts.preset, "model_type": "transformer", "smooth_quant_alpha": opts.smooth_quant_alpha,
                               "calibration_samples": len(batches)})
