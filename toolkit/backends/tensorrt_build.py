"""TensorRT on the target: importing it (or saying exactly what is missing), the GPU it runs on, building a
serialized engine from a (QDQ) ONNX model, and the sidecar that says whether an engine can load here.

Everything that needs TensorRT imports it lazily and raises ``BackendUnavailable`` naming what is
missing: it never pretends. Engines are not portable: a serialized engine only loads with the TensorRT
version that built it, on a GPU of the same compute capability, so ``build_engine`` writes a sidecar JSON
next to the engine (``model.engine.json``) that ``check_engine_compat`` reads before TensorRT does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

from toolkit.backends.tensorrt_profiles import DEFAULT_BATCH, PRECISIONS, ShapeProfile, onnx_has_qdq, profile_shapes
from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import BackendUnavailable, DataError, UnsupportedError

INSTALL_HINT = "install TensorRT (JetPack on Jetson, or NVIDIA's pip index) on the target"


# --------------------------------------------------------------------------- availability
def import_tensorrt():
    """Import the tensorrt bindings or raise BackendUnavailable saying which piece is missing."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - lazy on purpose: `import toolkit` must stay lean
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "tensorrt":
            raise BackendUnavailable(f"tensorrt: the bindings import failed, module '{exc.name}' is missing; {INSTALL_HINT}") from exc
        raise BackendUnavailable(f"tensorrt: no `tensorrt` Python package; {INSTALL_HINT}") from exc
    except (ImportError, OSError) as exc:
        text = str(exc)
        lib = re.search(r"(lib[\w+-]+\.so(?:\.[\d.]+)?)", text)
        if lib:
            raise BackendUnavailable(
                f"tensorrt: the Python bindings are installed but the shared library {lib.group(1)} is missing "
                f"(the bindings alone are not TensorRT); {INSTALL_HINT}"
            ) from exc
        raise BackendUnavailable(f"tensorrt: importing the bindings failed ({text}); {INSTALL_HINT}") from exc
    missing = [attr for attr in ("Builder", "OnnxParser", "Runtime") if not hasattr(trt, attr)]
    if missing:
        raise BackendUnavailable(
            f"tensorrt {getattr(trt, '__version__', '?')}: the installed package lacks {', '.join(missing)} "
            f"(a lean/dispatch runtime or a stub, or libnvonnxparser is missing); {INSTALL_HINT}"
        )
    return trt


def cuda_problem() -> str | None:
    """Why torch cannot give us CUDA memory here, or None. Sessions use torch CUDA tensors as buffers."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return "torch is not installed (optkit uses torch CUDA tensors as TensorRT I/O buffers)"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build; install a CUDA build of torch to run TensorRT engines"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False; check the driver and CUDA_VISIBLE_DEVICES)"
    return None


def gpu_info() -> dict[str, str]:
    """Name and compute capability of GPU 0, from torch if it has CUDA, else nvidia-smi.

    Needed for the engine sidecar; a build can happen on a host whose torch is a CPU build.
    """
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu_name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.strip().splitlines()
            if out:
                name, cap = (part.strip() for part in out[0].rsplit(",", 1))
                return {"gpu_name": name, "compute_capability": cap}
        except (subprocess.SubprocessError, ValueError, OSError):
            pass
    raise BackendUnavailable("tensorrt: no CUDA GPU visible (neither torch.cuda nor nvidia-smi found one)")


def engine_sidecar_path(engine_path: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`: the build facts that decide whether the engine loads."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def check_engine_compat(sidecar: Mapping[str, Any], tensorrt_version: str, compute_capability: str,
                        engine_path: str | Path = "engine") -> None:
    """Refuse an engine built by another TensorRT version or for another GPU architecture.

    A TensorRT version mismatch is BackendUnavailable (the runtime here is not the one the
    engine needs); a compute-capability mismatch is UnsupportedError (this GPU cannot run
    it). Both say the fix: rebuild from the ONNX on this device.
    """
    built_version = str(sidecar.get("tensorrt_version", "?"))
    built_cc = str(sidecar.get("compute_capability", "?"))
    if built_version != str(tensorrt_version):
        raise BackendUnavailable(
            f"{engine_path}: engine built with TensorRT {built_version}, this host has TensorRT {tensorrt_version}; "
            "engines are not portable across TensorRT versions: rebuild it from the ONNX here (trtexec or optkit)"
        )
    if built_cc != str(compute_capability):
        raise UnsupportedError(
            f"{engine_path}: engine built for a GPU of compute capability {built_cc}, this GPU is {compute_capability}; "
            "engines are not portable across GPU architectures: rebuild it from the ONNX on this device"
        )


# --------------------------------------------------------------------------- building
def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so no half-written engine is ever left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str = "fp16", *,
                 timing_cache_path: str | Path | None = None, min_batch: int = DEFAULT_BATCH[0],
                 opt_batch: int = DEFAULT_BATCH[1], max_batch: int = DEFAULT_BATCH[2],
                 input_shapes: Mapping[str, ShapeProfile] | None = None, workspace_mb: int = 1024,
                 strongly_typed: bool = False) -> dict[str, Any]:
    """Build a serialized TensorRT engine from an ONNX file; returns the sidecar facts.

    Uses the TensorRT Python API the way trtexec does: explicit-batch network (the only
    kind in TensorRT 10), OnnxParser, one optimization profile for the dynamic inputs,
    FP16 flag for fp16 (and as the int8 fallback), INT8 from the model's Q/DQ nodes with no
    calibrator. ``strongly_typed`` takes the precisions from the ONNX types instead of
    builder flags (TensorRT >= 9; then the flags are not set). The timing cache is
    loaded if present and saved after the build, which makes rebuilds much faster.
    """
    if precision not in PRECISIONS:
        raise UnsupportedError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise DataError(f"{onnx_path}: ONNX file not found")
    if precision == "int8" and not strongly_typed and not onnx_has_qdq(onnx_path):
        raise UnsupportedError(
            f"{onnx_path}: int8 needs an explicitly quantized (QDQ) ONNX model; optkit does not calibrate inside "
            "TensorRT: run a static int8 (QDQ) quantize pass first"
        )
    trt = import_tensorrt()
    gpu = gpu_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0
    if major < 10:  # explicit batch is implicit (and the flag deprecated) from TensorRT 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise BackendUnavailable(f"tensorrt {trt.__version__} has no strongly typed networks (needs TensorRT >= 9)")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file, so external data next to it is found
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors or 'no details'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if not strongly_typed:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # scales come from the Q/DQ nodes: explicit quantization
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)

    inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        inputs[tensor.name] = tuple(int(d) for d in tensor.shape)
    profiles = profile_shapes(inputs, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                              input_shapes=input_shapes)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profiles.items():
            profile.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(profile)

    timing_cache_path = Path(timing_cache_path) if timing_cache_path else None
    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path and timing_cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another GPU is rejected

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UnsupportedError(f"{onnx_path}: TensorRT failed to build an engine at {precision} (see the TensorRT log above)")
    _atomic_write(engine_path, bytes(serialized))
    if timing_cache_path:
        _atomic_write(timing_cache_path, bytes(config.get_timing_cache().serialize()))

    facts: dict[str, Any] = {
        "tensorrt_version": str(trt.__version__),
        "compute_capability": gpu["compute_capability"],
        "gpu_name": gpu["gpu_name"],
        "precision": precision,
        "strongly_typed": bool(strongly_typed),
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "profiles": {k: [list(s) for s in v] for k, v in profiles.items()},
        "workspace_mb": int(workspace_mb),
        "engine": engine_path.name,
        "engine_bytes": engine_path.stat().st_size,
    }
    _atomic_write(engine_sidecar_path(engine_path), json.dumps(facts, indent=2).encode())
    return facts


__all__ = ["INSTALL_HINT", "import_tensorrt", "cuda_problem", "gpu_info", "engine_sidecar_path", "check_engine_compat",
           "build_engine"]
