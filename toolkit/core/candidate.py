"""Candidate: one artifact the pipeline produced, immutable. A pass returns a new one."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: str                     # unique in a run, also the folder name under candidates/
    path: Path                  # the model file (model.pt2, model.onnx, model.xml)
    format: str                 # "torch" | "onnx" | "openvino"
    precision: str              # fp32 | fp16 | bf16 | int8 | int8-dynamic | mixed-int8
    backend: str                # runtime that executes it here: torch | onnxruntime | openvino
    lineage: tuple[str, ...]    # pass names from the baseline, e.g. ("baseline", "export_onnx", "ort_static_int8")
    engine: str | None = None   # quantization engine when there is one: ort | nncf | pt2e | inc
    runtime_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. OpenVINO precision hint
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # pass-specific facts for the report
    # --trust-checkpoint was given for the checkpoint this derives from. Set in-process only (from the CLI flag),
    # never read back from a report, manifest or cache record: a file on disk cannot grant itself trust.
    trust_checkpoint: bool = False

    def derive(self, **changes: Any) -> "Candidate":
        """A new candidate from this one; lineage is extended by `step` if given."""
        step = changes.pop("step", None)
        if step is not None:
            changes["lineage"] = (*self.lineage, step)
        return dataclasses.replace(self, **changes)

    def files(self) -> list[Path]:
        """Every file that makes up the artifact (OpenVINO IR is .xml + .bin, ONNX may have external data)."""
        folder = self.path.parent
        stem = self.path.stem
        files = {p for p in folder.iterdir() if p.is_file() and (p.stem == stem or p.name.startswith(stem + "."))}
        if self.format == "onnx" and self.path.is_file():
            # external data may have any name (weights.bin); a model without its weights is not the artifact
            from toolkit.core.artifacts import onnx_external_files

            try:
                files.update(p for p in onnx_external_files(self.path) if p.is_file())
            except Exception:  # an unparsable file is reported by whoever opens it, not while listing it
                pass
        return sorted(files)
