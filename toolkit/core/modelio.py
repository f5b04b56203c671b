"""The model's I/O contract, derived once from the data: names, dtypes, shapes, dynamic axes."""
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

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in (*self.inputs, *self.outputs)}

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "dynamic_axes": {k: {str(i): d for i, d in v.items()} for k, v in self.dynamic_axes().items() if v}}


def from_data(inputs: dict[str, np.ndarray], n_classes: int) -> ModelIO:
    """Batch is dynamic on every input; integer 2-D inputs (token ids, masks) get a dynamic sequence axis."""
    specs = []
    for name, arr in inputs.items():
        shape: list = [BATCH, *arr.shape[1:]]
        if arr.dtype.kind in "iu" and arr.ndim == 2:
            shape[1] = SEQUENCE
        specs.append(TensorSpec(name, str(arr.dtype), tuple(shape)))
    return ModelIO(tuple(specs), (TensorSpec("logits", "float32", (BATCH, n_classes)),))
