"""ONNX Runtime session (CPU execution provider on this host)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.backends.base import Session, register_backend
from toolkit.core.artifacts import ArtifactFacts
from toolkit.core.errors import DataError


@register_backend("onnxruntime", formats=("onnx",), reads={".onnx": "onnx"})
class OrtSession(Session):
    @classmethod
    def inspect(cls, path: Path, trust: bool = False) -> ArtifactFacts:
        from toolkit.backends import onnx_graph

        try:
            return onnx_graph.inspect(path)
        except Exception as exc:  # a broken file is the user's input: say so in one line
            raise DataError(f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:200]}); "
                            "pass a valid .onnx file") from exc

    @classmethod
    def precisions_here(cls) -> dict[str, str | None]:
        return {"fp32": None, "int8": None, "int8-dynamic": None,
                "fp16": None}  # CPU provider inserts casts to fp32 where it lacks fp16 kernels

    @classmethod
    def check_available(cls) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers = self.candidate.runtime_options.get("providers") or ["CPUExecutionProvider"]
        self._sess = ort.InferenceSession(str(self.candidate.path), opts, providers=providers)
        self._inputs = {i.name: i.type for i in self._sess.get_inputs()}
        # a model with several outputs: the one holding the logits (`--output`), else the first
        self._outputs = [self.candidate.runtime_options["output"]] if self.candidate.runtime_options.get("output") else None
        self._version = ort.__version__

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._sess.run(self._outputs, {k: feeds[k] for k in self._inputs})[0], dtype=np.float32)

    def close(self) -> None:
        self._sess = None

    def describe(self) -> dict:
        return {"backend": "onnxruntime", "runtime": f"onnxruntime {self._version}",
                "providers": self._sess.get_providers() if self._sess else [], "threads": self.threads}
