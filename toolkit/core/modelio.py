"""The model's I/O contract, derived once: names, dtypes, shapes, dynamic axes and their ranges.

Ranges come from the checkpoint when it carries them (a torch.export archive's own `Dim(min, max)`),
else from the data (a factory model: batch up to bounds.BATCH_MAX, sequence up to the data's length,
the lengths the model was seen to take). Every export re-uses these ranges, so optkit never invents
bounds that conflict with the user's, and the report and the bundle say them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

BATCH, SEQUENCE = "batch", "sequence"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple  # ints, or "batch"/"sequence" for dynamic axes

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclasses.dataclass(frozen=True)
class ModelIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # dynamic dim name -> (min, max), inclusive; max None = unbounded (as the checkpoint said)
    dim_ranges: dict[str, tuple[int, int | None]] = dataclasses.field(default_factory=dict)
    ranges_from: str = "data"   # "checkpoint" (a .pt2's own Dims) or "data" (derived from the data's shapes)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in (*self.inputs, *self.outputs)}

    def dim_range(self, dim: str) -> tuple[int, int | None]:
        return self.dim_ranges.get(dim, (1, None))

    def to_dict(self) -> dict:
        used = sorted({d for axes in self.dynamic_axes().values() for d in axes.values()})
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "dynamic_axes": {k: {str(i): d for i, d in v.items()} for k, v in self.dynamic_axes().items() if v},
                "dim_ranges": {d: {"min": self.dim_range(d)[0], "max": self.dim_range(d)[1], "from": self.ranges_from}
                               for d in used}}


def _data_ranges(inputs: dict[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, tuple[int, int | None]]:
    from toolkit.core.bounds import BATCH_MAX

    ranges: dict[str, tuple[int, int | None]] = {BATCH: (1, BATCH_MAX)}
    for spec in specs:
        for i, d in enumerate(spec.shape):
            if d == SEQUENCE:  # the data's length: what the model was seen to take (e.g. BERT's 512 positions)
                n = int(inputs[spec.name].shape[i])
                lo, hi = ranges.get(SEQUENCE, (1, n))
                ranges[SEQUENCE] = (1, max(hi or n, n))
    return ranges


def checkpoint_ranges(module, specs: list[TensorSpec]) -> dict[str, tuple[int, int | None]] | None:
    """The dynamic dims' ranges a torch.export'ed module (ExportedProgram.module()) carries, by contract name.

    None when `module` is not an exported program. A dim the archive fixed is left out (the run then
    fails on it with torch's own message, rather than optkit silently re-exporting another shape).
    """
    constraints = getattr(module, "range_constraints", None)
    graph = getattr(module, "graph", None)
    if constraints is None or graph is None:
        return None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    by_symbol = {str(k): v for k, v in constraints.items()}
    ranges: dict[str, tuple[int, int | None]] = {}
    for spec, node in zip(specs, placeholders):
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is None:
            continue
        for i, d in enumerate(spec.shape):
            if not isinstance(d, str) or i >= len(shape):
                continue
            vr = by_symbol.get(str(getattr(shape[i], "node", shape[i])))
            if vr is None:
                continue
            lo, hi = int(vr.lower), vr.upper
            hi = None if not getattr(hi, "is_finite", True) or str(hi) in ("oo", "int_oo") else int(hi)
            ranges[d] = (max(1, lo), hi)
    return ranges


def from_data(inputs: dict[str, np.ndarray], n_classes: int, module=None) -> ModelIO:
    """Batch is dynamic on every input; integer 2-D inputs (token ids, masks) get a dynamic sequence axis.

    `module`: the loaded torch model; when it is a torch.export program its own dim ranges are kept.
    """
    specs = []
    for name, arr in inputs.items():
        shape: list = [BATCH, *arr.shape[1:]]
        if arr.dtype.kind in "iu" and arr.ndim == 2:
            shape[1] = SEQUENCE
        specs.append(TensorSpec(name, str(arr.dtype), tuple(shape)))
    outputs = (TensorSpec("logits", "float32", (BATCH, n_classes)),)
    own = checkpoint_ranges(module, specs) if module is not None else None
    if own is not None:
        return ModelIO(tuple(specs), outputs, {**_data_ranges(inputs, specs), **own}, "checkpoint")
    return ModelIO(tuple(specs), outputs, _data_ranges(inputs, specs), "data")
