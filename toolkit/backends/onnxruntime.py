"""ONNX Runtime session (CPU execution provider on this host)."""
from __future__ import annotations

import numpy as np

from toolkit.backends.base import Session, register_backend


@register_backend("onnxruntime")
class OrtSession(Session):
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
