"""ExecuTorch: PyTorch's own on-device runtime (`.pte` programs, XNNPACK delegate for CPU kernels).

What runs on a Raspberry Pi 5, an Arm board or a phone runs here too: the same `.pte` and the same
XNNPACK kernels, built for x86 in the `executorch` wheel. So host numbers are an honest stand-in
for the kernels, not for the target's cores.

Inspection reads the `.pte` itself (the honesty rule): the program's inputs (planned sizes are
upper bounds when a dim is dynamic), which parts XNNPACK runs, and the dtypes of the weights each
XNNPACK delegate holds (its flatbuffer, decoded with the `flatc` the wheel ships), so an int8
label is only given when the file stores int8 weights.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.backends.base import Session, register_backend
from toolkit.core.artifacts import ArtifactFacts, InputFacts
from toolkit.core.errors import BackendUnavailable, DataError

INSTALL_HINT = "install the extra: pip install -e '.[executorch]'"
SCALAR_TYPES = {"FLOAT": "float32", "HALF": "float16", "BFLOAT16": "bfloat16", "DOUBLE": "float64", "LONG": "int64",
                "INT": "int32", "SHORT": "int16", "CHAR": "int8", "BYTE": "uint8", "BOOL": "bool"}
INT8_WEIGHTS = ("xnn_datatype_qcint8", "xnn_datatype_qint8", "xnn_datatype_qcint4", "xnn_datatype_qbint4")
FLOAT_WEIGHTS = ("xnn_datatype_fp32", "xnn_datatype_fp16", "xnn_datatype_bf16")


def _require() -> None:
    if importlib.util.find_spec("executorch") is None:
        raise BackendUnavailable(f"executorch: the `executorch` Python package is not installed; {INSTALL_HINT}")


def set_threads(n: int) -> int:
    """ExecuTorch's thread pool is process-wide: set it before a method runs, never during."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    _unsafe_reset_threadpool(int(n))
    return int(_threadpool_get_thread_count())


@functools.cache
def _flatc() -> str:
    import executorch

    for root in executorch.__path__:  # a namespace package: no __file__
        cand = Path(root) / "data" / "bin" / "flatc"
        if cand.is_file():
            return str(cand)
    raise BackendUnavailable(f"executorch: its flatc binary is missing from the wheel; {INSTALL_HINT}")


def _xnnpack_graph(payload: bytes) -> dict:
    """One XnnpackBackend delegate blob (XNNHeader + XNNGraph flatbuffer) as JSON."""
    import importlib.resources as res

    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader

    hdr = XNNHeader.from_bytes(payload[: XNNHeader.EXPECTED_LENGTH])
    fb = payload[hdr.flatbuffer_offset: hdr.flatbuffer_offset + hdr.flatbuffer_size]
    schema = res.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs").read_bytes()
    with tempfile.TemporaryDirectory() as d:
        Path(d, "schema.fbs").write_bytes(schema)
        Path(d, "g.bin").write_bytes(fb)
        subprocess.run([_flatc(), "--json", "--strict-json", "--defaults-json", "--raw-binary", "-o", d,
                        str(Path(d, "schema.fbs")), "--", str(Path(d, "g.bin"))], check=True, capture_output=True)
        text = Path(d, "g.json").read_text()
    # flatc writes bare inf / nan (a ReLU's output_max): make them JSON
    text = re.sub(r"(?<=[:\s\[,])(-?)inf\b", r"\1Infinity", text)
    text = re.sub(r"(?<=[:\s\[,])-?nan\b", "NaN", text)
    return json.loads(text)


def inspect_pte(path: Path) -> ArtifactFacts:
    _require()
    from executorch.exir._serialize._program import _extract_delegate_payload, deserialize_pte_binary

    data = Path(path).read_bytes()
    try:
        plan = deserialize_pte_binary(data).program.execution_plan[0]
    except Exception as exc:
        raise DataError(f"{path}: not a readable ExecuTorch program ({' '.join(str(exc).split())[:200]}); "
                        "pass a .pte written by executorch's to_executorch()") from exc
    weights: Counter = Counter()
    xnodes: Counter = Counter()
    for i, dlg in enumerate(plan.delegates):
        if "xnnpack" not in dlg.id.lower():
            continue
        graph = _xnnpack_graph(_extract_delegate_payload(data, "xnnpack", delegate_index=i))
        xnodes.update(n["xnode_union_type"] for n in graph.get("xnodes", []))
        for v in graph.get("xvalues", []):
            tv = v["xvalue_union"].get("tensor_value", v["xvalue_union"])
            if "datatype" in tv and tv.get("constant_buffer_idx", 0):
                weights[tv["datatype"]] += 1
    portable_float = sum(1 for v in plan.values if type(v.val).__name__ == "Tensor" and v.val.data_buffer_idx > 0
                         and v.val.scalar_type.name in ("FLOAT", "HALF", "BFLOAT16"))
    low = sum(weights[k] for k in INT8_WEIGHTS)
    high = sum(weights[k] for k in FLOAT_WEIGHTS) + portable_float
    precision = "fp32" if not low else ("int8" if not sum(weights[k] for k in FLOAT_WEIGHTS) else "mixed-int8")
    inputs = []
    for n, idx in enumerate(plan.inputs):
        t = plan.values[idx].val
        dynamic = t.shape_dynamism.name != "STATIC"
        # planned sizes are the upper bound of a dynamic dim; the leading dim is the batch
        shape = tuple(None if (dynamic and i == 0) else int(s) for i, s in enumerate(t.sizes))
        inputs.append(InputFacts(f"input_{n}", SCALAR_TYPES.get(t.scalar_type.name, t.scalar_type.name.lower()), shape))
    return ArtifactFacts(
        format="pte", inputs=tuple(inputs), precision=precision, quantized_ops=xnodes.get("XNNConvert", 0),
        int8_weight_fraction=low / (low + high) if low + high else 0.0,  # by tensor count: the flatbuffer holds no sizes here
        details={"delegates": [d.id for d in plan.delegates],
                 "non_delegated_ops": sorted({o.name for o in plan.operators}),
                 "delegated_weight_dtypes": dict(weights),
                 "max_batch": int(plan.values[plan.inputs[0]].val.sizes[0]) if plan.inputs else None})


@register_backend("executorch", formats=("pte",), reads={".pte": "pte"})
class ExecuTorchSession(Session):
    @classmethod
    def check_available(cls) -> str:
        _require()
        try:
            from executorch.runtime import Runtime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"executorch: the runtime does not import ({exc}); {INSTALL_HINT}") from exc
        from importlib.metadata import version

        return f"executorch {version('executorch')} (XNNPACK delegate, CPU)"

    @classmethod
    def inspect(cls, path: Path, trust: bool = False) -> ArtifactFacts:
        return inspect_pte(path)

    @classmethod
    def precisions_here(cls) -> dict[str, str | None]:
        return {"fp32": None, "int8": None}

    def load(self) -> None:
        self.check_available()
        from executorch.runtime import Runtime

        self._threads = set_threads(self.threads)
        self._method = Runtime.get().load_program(Path(self.candidate.path)).load_method("forward")
        self._names = list(self.candidate.runtime_options.get("input_names") or [])
        self._max_batch = self.candidate.runtime_options.get("max_batch")

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        names = self._names or list(feeds)
        n = len(feeds[names[0]])
        if self._max_batch and n > self._max_batch:  # the program plans memory up to its max batch: run in chunks
            step = int(self._max_batch)
            return np.concatenate([self.infer({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)])
        out = self._method.execute([torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in names])
        return np.asarray(out[0].numpy(), dtype=np.float32)

    def close(self) -> None:
        self._method = None

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"backend": "executorch", "runtime": f"executorch {version('executorch')} XNNPACK",
                "threads": self._threads}
