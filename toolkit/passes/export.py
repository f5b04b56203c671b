"""Export passes: the torch baseline archive, ONNX export (dynamic axes, parity-checked), ONNX fp16."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext, register_pass

PARITY_RTOL, PARITY_ATOL = 1e-3, 1e-4


def example_inputs(ctx: PassContext, n: int = 2) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(ctx.data.val.inputs[name][:n])) for name in ctx.io.input_names)


def is_exported(module) -> bool:
    """A module that came out of torch.export (ExportedProgram.module()): its graph is fixed, its dims ranged."""
    return hasattr(module, "range_constraints") and hasattr(module, "graph")


def dynamic_shapes(ctx: PassContext) -> tuple:
    """torch.export dynamic_shapes from the I/O contract: the checkpoint's own ranges, or the data's (core/modelio)."""
    import torch

    dims = {}
    for name in {d for t in ctx.io.inputs for d in t.shape if isinstance(d, str)}:
        lo, hi = ctx.io.dim_range(name)
        dims[name] = torch.export.Dim(name, min=lo, max=hi) if hi is not None else torch.export.Dim(name, min=lo)
    return tuple({i: dims[d] for i, d in enumerate(spec.shape) if isinstance(d, str)} for spec in ctx.io.inputs)


def torch_export_message(exc: Exception) -> str:
    """torch's own reason, its suggested fixes and the user's line, on one line (torch prints pages)."""
    lines = str(exc).splitlines()
    reason = next((ln.strip() for ln in lines if ln.strip() and not ln[:1].isspace() and not ln.startswith("def ")),
                  type(exc).__name__)
    parts = [f"{type(exc).__name__}: {reason[:300]}"]
    if "Suggested fixes:" in lines:
        fixes = [ln.strip() for ln in lines[lines.index("Suggested fixes:") + 1:] if ln[:1].isspace() and ln.strip()]
        fixes = fixes[: next((i for i, f in enumerate(fixes) if not f), len(fixes))]
        if fixes:
            parts.append("torch suggests: " + "; ".join(fixes[:4]))
    marker = next((i for i, ln in enumerate(lines) if "following call raised this error" in ln), None)
    if marker is not None and marker + 1 < len(lines) and lines[marker + 1].strip():
        parts.append("at " + lines[marker + 1].strip())
    return "; ".join(parts)


def export_program(module, ctx: PassContext, *, strict: bool = False, what: str = "the model"):
    """The one torch.export of optkit: the I/O contract's dynamic dims with their recorded ranges.

    A .pt2's own ranges are kept (re-exporting with others fails: `Constraints violated`); a factory
    model gets the data's. When torch cannot export, its own message and suggested fix are said.
    """
    import torch

    try:
        return torch.export.export(module, example_inputs(ctx), dynamic_shapes=dynamic_shapes(ctx), strict=strict)
    except Exception as exc:
        ranges = ", ".join(f"{d} in [{lo}, {hi if hi is not None else 'inf'}]" for d, (lo, hi) in ctx.io.dim_ranges.items())
        raise UnsupportedError(f"{ctx.source or 'checkpoint'}: torch.export of {what} failed with dynamic {ranges} "
                               f"(ranges from the {ctx.io.ranges_from}): {torch_export_message(exc)}") from exc


def to_onnx(program, ctx: PassContext, path: Path):
    """The one torch -> ONNX export (dynamo exporter): contract names, dynamic dims renamed batch/sequence."""
    import contextlib
    import io

    import onnx
    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines; keep the CLI's output clean
        torch.onnx.export(program, example_inputs(ctx), str(path), input_names=ctx.io.input_names,
                          output_names=[t.name for t in ctx.io.outputs], dynamo=True, external_data=False)
    model = onnx.load(str(path))
    _rename_dynamic_dims(model, ctx)
    onnx.save(model, str(path))
    return model


def save_baseline(ctx: PassContext, module, cid: str = "torch-fp32") -> Candidate:
    """The fp32 torch baseline as a .pt2 archive (what the torch backend runs and a bundle would ship)."""
    import torch

    path = ctx.folder(cid) / "model.pt2"
    torch.export.save(export_program(module, ctx), str(path))
    return Candidate(id=cid, path=path, format="torch", precision="fp32", backend="torch", lineage=("baseline",),
                     runtime_options={"input_names": ctx.io.input_names})


def _rename_dynamic_dims(model, ctx: PassContext) -> None:
    """The exporter names dynamic dims s0, s1...; rename them to the contract's names (batch, sequence)."""
    specs = {t.name: t.shape for t in (*ctx.io.inputs, *ctx.io.outputs)}
    mapping: dict[str, str] = {}
    for value in (*model.graph.input, *model.graph.output):
        shape = specs.get(value.name)
        if shape is None:
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and i < len(shape) and isinstance(shape[i], str):
                mapping[dim.dim_param] = shape[i]
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in mapping:
                dim.dim_param = mapping[dim.dim_param]


def check_parity(ctx: PassContext, onnx_path: Path, module) -> dict:
    import torch

    from toolkit.backends import infer_file

    feeds = {name: ctx.data.val.inputs[name][:32] for name in ctx.io.input_names}
    with torch.inference_mode():
        ref = module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in ctx.io.input_names))
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float().numpy()
    got = infer_file(onnx_path, feeds, threads=ctx.threads)
    ok = bool(np.allclose(got, ref, rtol=PARITY_RTOL, atol=PARITY_ATOL))
    return {"max_abs_diff": float(np.max(np.abs(got - ref))), "rtol": PARITY_RTOL, "atol": PARITY_ATOL, "ok": ok}


@register_pass("export_onnx", accepts=("torch",), backend="onnxruntime", precision="fp32")
def export_onnx(ctx: PassContext, parent: Candidate, opts, cid: str) -> Candidate:
    """ONNX export with torch.onnx (dynamo exporter), dynamic batch axis, parity vs torch checked."""
    from toolkit.backends.torch import load_pt2

    # Two loads, as before: the parity module and the program the exporter consumes stay independent.
    module = load_pt2(parent.path, trust=parent.trust_checkpoint).module()
    path = ctx.folder(cid) / "model.onnx"
    model = to_onnx(load_pt2(parent.path, trust=parent.trust_checkpoint), ctx, path)
    parity = check_parity(ctx, path, module)
    if not parity["ok"]:
        raise UnsupportedError(f"{path}: ONNX export does not match torch (max |diff| {parity['max_abs_diff']:.2e} > "
                               f"atol {PARITY_ATOL} + rtol {PARITY_RTOL}); report the model to optkit with its architecture")
    return parent.derive(id=cid, path=path, format="onnx", backend="onnxruntime", step="export_onnx",
                         runtime_options={}, info={"opset": model.opset_import[0].version, "export_parity": parity})


@register_pass("onnx_fp16", accepts=("onnx",), backend="onnxruntime", precision="fp16")
def onnx_fp16(ctx: PassContext, parent: Candidate, opts, cid: str) -> Candidate:
    """fp16 weights and compute, fp32 I/O (TensorRT-ready fp16 ONNX; on a CPU, ORT inserts casts where it lacks fp16 kernels)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = ctx.folder(cid) / "model.onnx"
    model = convert_float_to_float16(onnx.load(str(parent.path)), keep_io_types=True)
    onnx.save(model, str(path))
    return parent.derive(id=cid, path=path, precision="fp16", step="onnx_fp16", info={"io_types": "float32"})
