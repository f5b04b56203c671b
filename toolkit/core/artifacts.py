"""What an artifact is, read from its files: the one content hash, and the facts a backend inspects.

Honesty rule: an artifact is described by what it contains (stored precision, quantized ops, int8
weights), never by what the pass that made it meant to do. Every backend's `inspect()` returns an
ArtifactFacts, so bench, the pipeline and the report all read one shape.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_sha256(files: list[Path]) -> str:
    """The artifact's identity: one file's sha256, or the sha256 of its files' sha256s in name order.

    OpenVINO IR is .xml + .bin and ONNX may carry external data; every place that names an
    artifact (cache keys, bench history rows, run records) uses this one function, so a bench row
    of a run's candidate matches the run.
    """
    digests = [file_sha256(f) for f in sorted(files, key=lambda p: p.name)]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def onnx_external_files(path: Path) -> list[Path]:
    """The external-data files an ONNX model references (already confined to its folder by intake)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    model = onnx.load(str(path), load_external_data=False)
    names = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL}
    return [path.parent / n for n in sorted(names)]


@dataclasses.dataclass(frozen=True)
class InputFacts:
    name: str
    dtype: str                       # numpy dtype name
    shape: tuple[int | None, ...]    # None for a dynamic dimension


@dataclasses.dataclass(frozen=True)
class ArtifactFacts:
    format: str                      # onnx | openvino | torch | pte ...
    inputs: tuple[InputFacts, ...]
    precision: str                   # what the file stores: fp32 | fp16 | bf16 | int8 | int8-dynamic | mixed-int8
    quantized_ops: int = 0           # Q/DQ, FakeQuantize, integer ops, quantized kernels: counted in the file
    int8_weight_fraction: float = 0.0  # share of weight elements stored in 8 bits or fewer
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "precision": self.precision, "quantized_ops": self.quantized_ops,
                "int8_weight_fraction": round(self.int8_weight_fraction, 4),
                "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in self.inputs],
                **({"details": self.details} if self.details else {})}
