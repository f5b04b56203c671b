"""OpenVINO IR conversion: fp32 IR, run with an explicit inference precision (f32, or bf16/f16 where the CPU has it)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from toolkit.core.candidate import Candidate
from toolkit.core.errors import BackendUnavailable
from toolkit.passes.base import PassContext, register_pass


class OpenVinoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inference_precision: Literal["f32", "bf16", "f16"] = "f32"


def host_supports(precision: str) -> bool:
    from toolkit.backends.openvino import cpu_capabilities

    caps = cpu_capabilities()
    return precision == "f32" or {"bf16": "BF16", "f16": "FP16"}[precision] in caps


def save_ir(model, dst) -> None:
    """Save an OpenVINO model so the same graph gives the same bytes, whatever the process converted before.

    OpenVINO names every op it creates `<Type>_<n>` from a process-wide counter (a folded constant keeps the name
    of the op it came from), so one model converted after another (a sweep worker, a second run in one process)
    got other layer names in its .xml and another artifact hash. Names of that form are renamed by the op's
    position in the graph; inputs and outputs keep theirs (tensor names are never touched).
    compress_to_fp16=False: save_model would otherwise halve the weights silently.
    """
    import re

    import openvino as ov

    auto = re.compile(r"[A-Z][A-Za-z0-9]*_\d+")
    for i, op in enumerate(model.get_ordered_ops()):
        if op.get_type_name() not in ("Parameter", "Result") and auto.fullmatch(op.get_friendly_name()):
            op.set_friendly_name(f"{auto.fullmatch(op.get_friendly_name()).group(0).rsplit('_', 1)[0]}_{i}")
    ov.save_model(model, str(dst), compress_to_fp16=False)


def convert_ir(src, dst) -> None:
    from toolkit.backends.openvino import ov_model

    save_ir(ov_model(src), dst)


@register_pass("openvino_ir", accepts=("onnx",), backend="openvino",
               precision=lambda o: {"f32": None, "bf16": "bf16", "f16": "fp16"}[o.inference_precision], options=OpenVinoOptions,
               precheck=lambda o: None if host_supports(o.inference_precision) else
               f"OpenVINO CPU on this host has no {o.inference_precision} support (OPTIMIZATION_CAPABILITIES); it runs on a target that has it")
def openvino_ir(ctx: PassContext, parent: Candidate, opts: OpenVinoOptions, cid: str) -> Candidate:
    """OpenVINO IR (fp32 weights) with an explicit CPU inference precision."""
    if not host_supports(opts.inference_precision):
        raise BackendUnavailable(f"OpenVINO CPU on this host has no {opts.inference_precision} support "
                                 "(OPTIMIZATION_CAPABILITIES); run this candidate on the target")
    path = ctx.folder(cid) / "model.xml"
    convert_ir(parent.path, path)
    precision = {"f32": parent.precision, "bf16": "bf16", "f16": "fp16"}[opts.inference_precision]
    return parent.derive(id=cid, path=path, format="openvino", backend="openvino", precision=precision,
                         step=f"openvino_ir[{opts.inference_precision}]",
                         runtime_options={"inference_precision": opts.inference_precision})
