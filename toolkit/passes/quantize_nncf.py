"""NNCF post-training quantization, on OpenVINO IR and on ONNX."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.passes.base import PassContext, register_pass


class NncfOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["performance", "mixed"] = "performance"
    fast_bias_correction: bool = True
    ignored_nodes: list[str] = Field(default_factory=list)  # NNCF IgnoredScope(names=...)


def _dataset(ctx: PassContext, names: list[str] | None = None):
    import nncf

    batches = ctx.calibration_batches(batch_size=1)
    if names is None:
        return nncf.Dataset(batches)
    return nncf.Dataset(batches, lambda b: {n: b[n] for n in names})


def _kwargs(opts: NncfOptions, n: int) -> dict:
    import nncf

    kw = {"preset": nncf.QuantizationPreset.PERFORMANCE if opts.preset == "performance" else nncf.QuantizationPreset.MIXED,
          "fast_bias_correction": opts.fast_bias_correction, "subset_size": n}
    if opts.ignored_nodes:
        kw["ignored_scope"] = nncf.IgnoredScope(names=list(opts.ignored_nodes), validate=False)
    return kw


@register_pass("nncf_ptq", accepts=("onnx", "openvino"), backend="openvino", precision="int8", options=NncfOptions)
def nncf_ptq(ctx: PassContext, parent: Candidate, opts: NncfOptions, cid: str) -> Candidate:
    """NNCF PTQ int8 on the OpenVINO model, run by OpenVINO (fp32 for the layers left unquantized)."""
    import nncf

    from toolkit.backends.openvino import ov_model
    from toolkit.passes.openvino_ir import save_ir

    model = ov_model(parent.path)  # ONNX converted, not read (backends.openvino.ov_model)
    names = [p.get_any_name() for p in model.inputs]
    quantized = nncf.quantize(model, _dataset(ctx, names), **_kwargs(opts, ctx.calibration_size))
    path = ctx.folder(cid) / "model.xml"
    save_ir(quantized, path)  # deterministic layer names (openvino_ir.save_ir)
    precision = "mixed-int8" if opts.ignored_nodes else "int8"
    return parent.derive(id=cid, path=path, format="openvino", backend="openvino", precision=precision, engine="nncf",
                         step="nncf_ptq[openvino]", runtime_options={"inference_precision": "f32"},
                         info={"preset": opts.preset, "ignored_nodes": list(opts.ignored_nodes)})


@register_pass("nncf_ptq_onnx", accepts=("onnx",), backend="onnxruntime", precision="int8", options=NncfOptions)
def nncf_ptq_onnx(ctx: PassContext, parent: Candidate, opts: NncfOptions, cid: str) -> Candidate:
    """NNCF PTQ int8 on the ONNX model (QDQ), run by ONNX Runtime."""
    import nncf
    import onnx

    model = onnx.load(str(parent.path))
    quantized = nncf.quantize(model, _dataset(ctx), **_kwargs(opts, ctx.calibration_size))
    path = ctx.folder(cid) / "model.onnx"
    onnx.save(quantized, str(path))
    precision = "mixed-int8" if opts.ignored_nodes else "int8"
    return parent.derive(id=cid, path=path, precision=precision, engine="nncf", step="nncf_ptq[onnx]",
                         info={"preset": opts.preset, "ignored_nodes": list(opts.ignored_nodes)})
