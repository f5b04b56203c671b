"""torch.ao PT2E post-training quantization (torchao), exported to an int8 QDQ ONNX model.

What was tried here (torch 2.13, torchao 0.18, onnxruntime 1.32, 2-core AVX-512 host), and why the
default output is ONNX:
- The PT2E-converted program runs in torch eager as decomposed reference ops (quantize/dequantize
  around fp32 kernels): on the demo CNN 5.8 ms per call vs 0.30 ms for fp32 eager — slower, not faster.
  `torch.compile` (inductor, freezing, dynamic=False) lowers it to int8 kernels but compiles per process
  (tens of seconds) and cannot be saved as an artifact, so it is not a deployable candidate here.
- `torch.onnx.export(..., dynamo=True)` of the converted program gives a standard QDQ ONNX graph
  (int8 per-channel weights, uint8 per-tensor activations) that ONNX Runtime fuses into integer
  kernels: 0.12 ms on the demo, macro-F1 unchanged. That is the default (`output: onnx`).
- `output: torch` keeps the converted program as a `.pt2` (torch.export.save) for torch-only
  deployments; loading it needs `import torchao` first (toolkit.backends.torch.load_pt2 imports it when the archive uses its ops).

The quantizer follows the target: X86InductorQuantizer for x86-64 (u8 activations, s8 per-channel
weights: VNNI's U8S8), ArmInductorQuantizer (torchao 0.18's ARM variant of the same annotations) for
ARM targets. torchao ships an XNNPACKQuantizer only under `torchao.testing`, so it is not used.

Residual CNNs from a `.pt2` (a ResNet BasicBlock calls one `self.relu` twice): re-exporting the archive's
unlifted module leaves no `source_fn_stack`, so `get_source_partitions` falls back to `nn_module_stack` and
groups every call site of that module into one partition, which the fused conv-bn-relu / conv-add-relu
annotations refuse ("Input partition has more than one output node"; pytorch/ao#4478 is the same grouping
for a reused nn.Linear). torch.export already names each call site apart in that stack (`relu`, `relu@1`),
so `split_shared_call_sites` keys the partition by call site before annotating — the partitions a strict
export of the nn.Module gives (same Q/DQ count on a ResNet-18) — and the candidate's info says how many.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.core.candidate import Candidate
from toolkit.core.errors import BackendUnavailable, UnsupportedError
from toolkit.passes.base import PassContext, register_pass
from toolkit.passes.export import export_program


class Pt2eOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantizer: Literal["auto", "x86", "arm"] = "auto"   # auto: from the device profile's arch
    output: Literal["onnx", "torch"] = "onnx"
    calibration_batch: int = Field(default=32, ge=1)


# --------------------------------------------------------------------------- helpers shared with quantize_inc

def require(module: str, engine: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BackendUnavailable(f"{engine} needs the python package '{module}'; install optkit's extras (pip install -e .)")


def torch_module(parent: Candidate):
    """The fp32 torch module of a torch candidate (.pt2 archive)."""
    from toolkit.backends.torch import load_pt2

    return load_pt2(Path(parent.path), trust=parent.trust_checkpoint).module()


def tensors(ctx: PassContext, batch: dict) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(batch[n])) for n in ctx.io.input_names)


def calibrate(module, ctx: PassContext, batch_size: int = 32) -> None:
    import torch

    with torch.no_grad():
        for b in ctx.calibration_batches(batch_size=batch_size):
            module(*tensors(ctx, b))


def torch_val_f1(module, ctx: PassContext) -> float:
    """Validation macro-F1 of a torch module (for accuracy-aware tuning inside torch)."""
    import torch

    from toolkit.metrics.classification import classification_metrics

    preds = []
    with torch.no_grad():
        for b in ctx.data.val.batches(64):
            out = module(*tensors(ctx, b))
            out = out[0] if isinstance(out, (tuple, list)) else out
            preds.append(out.float().argmax(1).numpy())
    return float(classification_metrics(ctx.data.val.y, np.concatenate(preds), ctx.data.n_classes, ctx.data.labels)["macro_f1"])


def save_quantized(module, ctx: PassContext, folder: Path, output: str) -> Path:
    """Re-export the converted (Q/DQ) module with the contract's dynamic axes; write .onnx (QDQ) or .pt2."""
    import torch

    from toolkit.passes.export import export_program, to_onnx

    program = export_program(module, ctx, what="the quantized model")
    if output == "torch":
        path = folder / "model.pt2"
        torch.export.save(program, str(path))
        return path
    path = folder / "model.onnx"
    to_onnx(program, ctx, path)
    return path


def fold_weight_quantize(graph_module) -> None:
    """Store the weights as int8: constant-fold quantize(weight) the way convert_pt2e(fold_quantize=True) does.

    INC's convert keeps fold_quantize=False (its default, also inside autotune), so its ONNX held fp32 weights
    with a runtime QuantizeLinear: an "int8" file with 0.7% int8 weights and fp32 size. Folding a graph that
    convert_pt2e already folded changes nothing.
    """
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint  # the predicate convert_pt2e folds with

    constant_fold(graph_module, _quant_node_constraint)


def quantized_nodes(graph_module) -> int:
    """quantize/dequantize nodes in a converted PT2E graph: zero means the quantizer matched nothing."""
    return sum(1 for n in graph_module.graph.nodes if n.op == "call_function" and "quantize" in str(n.target))


def split_shared_call_sites(graph_module) -> int:
    """Give each call site of a module used more than once its own source partition; returns the nodes re-keyed.

    Only nodes without `source_fn_stack` (non-strict re-export of a .pt2) are touched: there torchao's partitioner
    keys on the innermost `nn_module_stack` entry's module path, shared by all calls, while the entry's key
    carries torch.export's per-call suffix (`...relu@1`). The module path gets that suffix: one partition per call.
    """
    import re

    moved = 0
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack or node.meta.get("source_fn_stack"):
            continue
        key, (path, cls) = next(reversed(stack.items()))
        call = re.search(r"@(\d+)$", key)
        if call and not path.endswith(call.group(0)):
            node.meta["nn_module_stack"] = {**stack, key: (f"{path}{call.group(0)}", cls)}  # a copy: nodes share stacks
            moved += 1
    return moved


def export_modes(module) -> tuple[bool, ...]:
    """strict first for a real nn.Module (strict export records `source_fn_stack`, one partition per call of a shared
    module; non-strict relies on split_shared_call_sites); an unlifted .pt2 program is exported non-strict only:
    strict re-tracing of it gives a graph the quantizers annotate nothing in."""
    from toolkit.passes.export import is_exported

    return (False,) if is_exported(module) else (True, False)


def derive_quantized(parent: Candidate, ctx: PassContext, path: Path, engine: str, step: str, info: dict) -> Candidate:
    if path.suffix == ".onnx":
        made = parent.derive(id=path.parent.name, path=path, format="onnx", backend="onnxruntime", precision="int8",
                             engine=engine, step=step, runtime_options={}, info=info)
        return made.derive(info={**info, "val_macro_f1": round(ctx.val_macro_f1(made), 4), "format": "QDQ"})
    return parent.derive(id=path.parent.name, path=path, format="torch", backend="torch", precision="int8", engine=engine,
                         step=step, runtime_options={"input_names": ctx.io.input_names}, info=info)


def pick_quantizer(kind: str, ctx: PassContext):
    if kind == "auto":
        arch = str(getattr(ctx.device, "arch", "x86_64")).lower()
        kind = "arm" if arch in ("aarch64", "arm64", "armv8", "arm") else "x86"
    if kind == "arm":
        from torchao.quantization.pt2e.quantizer import arm_inductor_quantizer as aiq

        q = aiq.ArmInductorQuantizer()
        q.set_global(aiq.get_default_arm_inductor_quantization_config())
        return q, "ArmInductorQuantizer"
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    q = xiq.X86InductorQuantizer()
    q.set_global(xiq.get_default_x86_inductor_quantization_config())
    return q, "X86InductorQuantizer"


@register_pass("pt2e_ptq", accepts=("torch",), backend="onnxruntime", precision="int8", options=Pt2eOptions,
               reads_device=("arch",))  # quantizer: auto picks the ARM or x86 quantizer from the device
def pt2e_ptq(ctx: PassContext, parent: Candidate, opts: Pt2eOptions, cid: str) -> Candidate:
    """torch.ao PT2E static int8 (torchao X86/ARM inductor quantizer), exported to QDQ ONNX run by ONNX Runtime."""
    require("torchao", "PT2E quantization")
    import torchao  # noqa: F401  (registers the quantized_decomposed ops)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # the original nn.Module for the baseline (strict export needs a real module)
    module = ctx.torch_module if parent.lineage == ("baseline",) and ctx.torch_module is not None else torch_module(parent)
    quantizer, qname = pick_quantizer(opts.quantizer, ctx)
    converted, tried = None, []
    for strict in export_modes(module):
        try:
            program = export_program(module, ctx, strict=strict)
        except UnsupportedError as exc:
            tried.append(f"strict={strict}: {exc}")
            continue
        graph = program.module()
        split = split_shared_call_sites(graph)
        try:
            prepared = prepare_pt2e(graph, quantizer)
        except ValueError as exc:  # a partition shape torchao's fused annotations still refuse
            tried.append(f"{ctx.source or parent.path}: {qname} cannot annotate this exported graph ({exc}); pass the "
                         "state dict with --model-factory so PT2E traces the nn.Module, or use the recipe's ORT/NNCF int8")
            continue
        calibrate(prepared, ctx, opts.calibration_batch)
        converted = convert_pt2e(prepared)
        if quantized_nodes(converted):
            break
        tried.append(f"strict={strict}: {qname} annotated no layer")
    if converted is None:
        raise UnsupportedError(tried[-1])
    path = save_quantized(converted, ctx, ctx.folder(cid), opts.output)
    return derive_quantized(parent, ctx, path, "pt2e", f"pt2e_ptq[{qname}]",
                            {"quantizer": qname, "library": f"torchao {torchao.__version__}", "output": opts.output,
                             "calibration_samples": ctx.calibration_size, "activations": "uint8 per-tensor",
                             "weights": "int8 per-channel", "export": "strict" if strict else "non-strict",
                             "shared_call_sites_split": split})
