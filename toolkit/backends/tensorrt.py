"""TensorRT: build an engine from a (QDQ) ONNX model and run it, on the target only.

TensorRT cannot be installed on a host without NVIDIA's libraries and a GPU (see
STACK-NOTES), so this module has two halves:

* the parts that need TensorRT (``build_engine``, ``TensorRTSession``) import it lazily and
  raise ``BackendUnavailable`` naming exactly what is missing: they never pretend;
* pure helpers that run anywhere and tell the integrator how to build the engine on the
  device: ``trtexec_command`` (the exact ``trtexec`` line), ``ort_tensorrt_providers``
  (ONNX Runtime's TensorRT execution provider, the second route) and ``onnx_input_profiles``.

The parts live by concept: tensorrt_profiles.py (shapes and commands, pure), tensorrt_build.py
(import, GPU, engine build and sidecar), and this file (the Session, the registry entry); this
module re-exports the public names of both so ``toolkit.backends.tensorrt`` stays the one face.

Engines are not portable: a serialized engine only loads with the TensorRT version that
built it, on a GPU of the same compute capability. ``build_engine`` therefore writes a
sidecar JSON next to the engine (``model.engine.json``) and ``load()`` checks it before
TensorRT gets a chance to fail with a less readable error.

Precision: ``fp32`` means fp32 (TF32 is switched off, it is a different precision),
``fp16`` sets the FP16 builder flag, ``int8`` builds from the explicit Q/DQ nodes of the
ONNX model (explicit quantization, no calibrator) with FP16 as the fallback precision for
the layers that are not quantized — what NVIDIA recommends for QDQ models.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.backends.base import Session, register_backend
from toolkit.backends.tensorrt_build import (INSTALL_HINT, build_engine, check_engine_compat, cuda_problem,
                                             engine_sidecar_path, gpu_info, import_tensorrt)
from toolkit.backends.tensorrt_profiles import (DEFAULT_BATCH, PRECISIONS, check_shape_profile, onnx_has_qdq,
                                                onnx_input_dims, onnx_input_profiles, ort_tensorrt_available,
                                                ort_tensorrt_providers, profile_shapes, trtexec_command)
from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import BackendUnavailable, DataError, UnsupportedError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# Candidate precisions and the TensorRT build they map to. Dynamic int8 (DynamicQuantizeLinear,
# MatMulInteger) has no TensorRT equivalent, so it is not in the map.
_CANDIDATE_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "mixed-int8": "int8"}


# --------------------------------------------------------------------------- session
def _torch_dtype(trt, dtype):
    """torch dtype for a TensorRT DataType (names looked up so older/newer enums both work)."""
    import torch  # noqa: PLC0415

    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
        "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
    }
    for name, tdtype in table.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return tdtype
    raise UnsupportedError(f"TensorRT I/O tensor dtype {dtype} is not supported by optkit's TensorRT session")


@register_backend("tensorrt", formats=("onnx",))
class TensorRTSession(Session):
    @classmethod
    def applies(cls, fmt: str, device, asked: bool) -> bool:
        """Only for targets that build engines, or when asked: an x86 CPU box has no TensorRT to time."""
        return fmt in cls.formats and (asked or "tensorrt" in device.backends)

    @classmethod
    def precision_label(cls, stored: str, described: dict) -> str:
        return f"{stored} / tensorrt {described.get('precision', stored)}"

    """Runs a TensorRT engine (a .engine/.plan file, or one built from an .onnx candidate).

    An .onnx candidate is built once into a cache folder (``runtime_options['trt_cache_dir']``,
    default ``<candidate folder>/tensorrt-engines``) keyed by the ONNX hash, precision,
    TensorRT version, GPU architecture and profile, so a rebuild only happens when one of
    them changes. Device memory comes from torch CUDA tensors: no pycuda/cuda-python needed.
    """

    @classmethod
    def check_available(cls) -> str:
        # Name every missing piece at once, so a user fixes the host in one go.
        try:
            trt = import_tensorrt()
        except BackendUnavailable as exc:
            problem = cuda_problem()
            raise BackendUnavailable(f"{exc}; also {problem}" if problem else str(exc)) from exc
        problem = cuda_problem()
        if problem:
            raise BackendUnavailable(f"tensorrt {trt.__version__} is installed but {problem}")
        import torch  # noqa: PLC0415

        return f"tensorrt {trt.__version__} on {torch.cuda.get_device_name(0)}"

    def __init__(self, candidate, threads: int):
        super().__init__(candidate, threads)
        self._trt = None
        self._engine = None
        self._context = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self.engine_path: Path | None = None
        self.built_here = False
        self.sidecar: dict[str, Any] | None = None
        self._gpu: dict[str, str] = {}

    def _precision(self) -> str:
        wanted = str(self.candidate.runtime_options.get("trt_precision") or self.candidate.precision)
        if wanted not in _CANDIDATE_PRECISION:
            raise UnsupportedError(
                f"{self.candidate.path}: precision '{wanted}' has no TensorRT build; use fp32, fp16 or int8 (QDQ)"
            )
        return _CANDIDATE_PRECISION[wanted]

    def _engine_for_onnx(self, onnx_path: Path) -> Path:
        opts = self.candidate.runtime_options
        precision = self._precision()
        batch = tuple(opts.get("trt_batch_profile", DEFAULT_BATCH))
        shapes = opts.get("trt_input_shapes")
        workspace_mb = int(opts.get("trt_workspace_mb", 1024))
        cache_dir = Path(opts.get("trt_cache_dir") or onnx_path.parent / "tensorrt-engines")
        h = hashlib.sha256()
        for f in self.candidate.files() if onnx_path == Path(self.candidate.path) else [onnx_path]:
            h.update(file_sha256(f).encode())
        key = json.dumps([precision, list(batch), shapes, workspace_mb, str(self._trt.__version__),
                          self._gpu["compute_capability"]], sort_keys=True, default=str)
        h.update(key.encode())
        engine_path = cache_dir / f"{onnx_path.stem}-{precision}-{h.hexdigest()[:16]}.engine"
        if not (engine_path.is_file() and engine_sidecar_path(engine_path).is_file()):
            build_engine(onnx_path, engine_path, precision, timing_cache_path=cache_dir / "timing.cache",
                         min_batch=int(batch[0]), opt_batch=int(batch[1]), max_batch=int(batch[2]),
                         input_shapes=shapes, workspace_mb=workspace_mb)
            self.built_here = True
        return engine_path

    def load(self) -> None:
        self.check_available()
        self._trt = trt = import_tensorrt()
        self._gpu = gpu_info()
        path = Path(self.candidate.path)
        if path.suffix == ".onnx":
            path = self._engine_for_onnx(path)
        elif path.suffix not in ENGINE_SUFFIXES:
            raise UnsupportedError(f"{path}: TensorRT runs .onnx or serialized engines ({', '.join(ENGINE_SUFFIXES)})")
        if not path.is_file():
            raise DataError(f"{path}: engine file not found")
        sidecar_path = engine_sidecar_path(path)
        if sidecar_path.is_file():
            self.sidecar = json.loads(sidecar_path.read_text())
            check_engine_compat(self.sidecar, trt.__version__, self._gpu["compute_capability"], path)
        self.engine_path = path
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise UnsupportedError(
                f"{path}: TensorRT {trt.__version__} could not deserialize the engine (built by another TensorRT "
                "version or for another GPU?); rebuild it from the ONNX on this device"
            )
        self._context = self._engine.create_execution_context()
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
            else:
                self._outputs.append(name)

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch; returns the first output (the logits) as float32 numpy."""
        import torch  # noqa: PLC0415

        if self._context is None:
            raise UnsupportedError("TensorRT session used before load(); use it as a context manager")
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise DataError(f"TensorRT engine inputs missing from the feeds: {', '.join(missing)} "
                            f"(engine inputs: {', '.join(self._inputs)})")
        engine, context, trt = self._engine, self._context, self._trt
        keep = []  # the tensors must stay alive until the stream has run
        for name in self._inputs:
            arr = np.ascontiguousarray(feeds[name])
            tensor = torch.from_numpy(arr).to(device="cuda", dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)))
            if not context.set_input_shape(name, tuple(arr.shape)):
                lo, _, hi = engine.get_tensor_profile_shape(name, 0)
                raise DataError(f"input '{name}' shape {tuple(arr.shape)} is outside the engine's profile "
                                f"{tuple(lo)}..{tuple(hi)}; rebuild with a larger profile")
            context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self._outputs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UnsupportedError(f"output '{name}' has a data-dependent shape {shape}; not supported")
            out = torch.empty(shape, device="cuda", dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)))
            context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise UnsupportedError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        stream.synchronize()
        return outputs[self._outputs[0]].float().cpu().numpy()

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({
            "tensorrt_version": str(getattr(self._trt, "__version__", "?")),
            "gpu": self._gpu.get("gpu_name"),
            "compute_capability": self._gpu.get("compute_capability"),
            "precision": (self.sidecar or {}).get("precision") or self.candidate.precision,
            "engine": str(self.engine_path) if self.engine_path else None,
            "engine_built_here": self.built_here,
            "sidecar_checked": self.sidecar is not None,
        })
        return info


__all__ = [
    "TensorRTSession", "build_engine", "check_engine_compat", "engine_sidecar_path", "profile_shapes",
    "onnx_input_dims", "onnx_input_profiles", "onnx_has_qdq", "trtexec_command", "ort_tensorrt_providers",
    "ort_tensorrt_available", "INSTALL_HINT", "check_shape_profile", "DEFAULT_BATCH", "PRECISIONS",
]
