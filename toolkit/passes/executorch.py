"""ExecuTorch export: a `.pte` program lowered to the XNNPACK delegate, fp32 or int8 (PT2E, XNNPACK quantizer).

The int8 route is the one ExecuTorch documents for Arm CPUs: torch.export -> prepare_pt2e with
XNNPACKQuantizer (symmetric, per-channel weights) -> calibrate -> convert_pt2e -> re-export ->
to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch().

Shapes: the batch stays dynamic up to `max_batch`. XNNPACK's lowering re-runs torch's fake conv
kernels, whose heuristics narrow a dim's range to the example's side of 16, so the example batch
must *be* the maximum (an example of 4 with max 64 stored a limit of 15), and the maximum must be
above 16 (a maximum of 16 came out static). Other dims (a sequence) are fixed at the data's width.
The precision, the dynamic batch and its stored limit are read back from the file; a mismatch
fails the pass.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.core.errors import UnsupportedError
from toolkit.passes.base import PassContext, register_pass


class ExecuTorchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    precision: Literal["fp32", "int8"] = "fp32"
    per_channel: bool = True
    # The largest batch the program plans memory for. Above 16: torch's conv heuristics split ranges at
    # batch 16, and a maximum of 16 or less came out of the lowering as a static batch.
    max_batch: int = Field(default=64, ge=17, le=1024)


def _check_installed() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("executorch") else \
        "the `executorch` package is not installed (pip install -e '.[executorch]')"


def _example(ctx: PassContext, batch: int) -> tuple:
    import torch

    rows = []
    for name in ctx.io.input_names:
        arr = ctx.data.val.inputs[name]
        reps = -(-batch // len(arr))
        rows.append(torch.from_numpy(np.ascontiguousarray(np.concatenate([arr] * reps)[:batch])))
    return tuple(rows)


@register_pass("executorch", accepts=("torch",), backend="executorch", precision=lambda o: o.precision,
               options=ExecuTorchOptions, precheck=lambda o: _check_installed())
def executorch_export(ctx: PassContext, parent: Candidate, opts: ExecuTorchOptions, cid: str) -> Candidate:
    """ExecuTorch .pte with the XNNPACK delegate (fp32, or int8 via PT2E and the XNNPACK quantizer)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from toolkit.backends.executorch import inspect_pte
    from toolkit.backends.torch import load_pt2

    module = load_pt2(parent.path, trust=parent.trust_checkpoint).module()
    example = _example(ctx, opts.max_batch)
    batch = torch.export.Dim("batch", min=1, max=opts.max_batch)
    dynamic = tuple({0: batch} for _ in example)
    try:
        program = torch.export.export(module, example, dynamic_shapes=dynamic, strict=False)
        if opts.precision == "int8":
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer, get_symmetric_quantization_config)
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=opts.per_channel))
            prepared = prepare_pt2e(program.module(), quantizer)
            with torch.no_grad():
                for b in ctx.calibration_batches(batch_size=8):
                    prepared(*(torch.from_numpy(np.ascontiguousarray(b[n])) for n in ctx.io.input_names))
            program = torch.export.export(convert_pt2e(prepared), example, dynamic_shapes=dynamic, strict=False)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:
        raise UnsupportedError(f"ExecuTorch could not export this model ({' '.join(str(exc).split())[:240]})") from exc
    path = ctx.folder(cid) / "model.pte"
    with open(path, "wb") as f:
        lowered.write_to_file(f)
    facts = inspect_pte(path)
    if opts.precision == "int8" and facts.precision == "fp32":
        raise UnsupportedError(f"{path}: the XNNPACK lowering kept every weight in float; no int8 program was made")
    if any(i.shape and i.shape[0] is not None for i in facts.inputs):
        raise UnsupportedError(f"{path}: the lowered program has a static batch; ExecuTorch kept no dynamic batch "
                               "for this model")
    if facts.details.get("max_batch") not in (None, opts.max_batch):
        raise UnsupportedError(f"{path}: the program plans batches up to {facts.details['max_batch']}, "
                               f"not {opts.max_batch}; re-export with a batch the model accepts")
    return parent.derive(id=cid, path=path, format="pte", backend="executorch", precision=facts.precision,
                         engine="xnnpack" if opts.precision == "int8" else None,
                         step=f"executorch[{opts.precision}]",
                         runtime_options={"input_names": list(ctx.io.input_names), "max_batch": opts.max_batch},
                         info={"artifact": facts.to_dict(),
                               "quantizer": "XNNPACKQuantizer symmetric, "
                                            f"{'per-channel' if opts.per_channel else 'per-tensor'} int8 weights"
                               if opts.precision == "int8" else None})
