"""TensorRT: build an engine from a (QDQ) ONNX model and run it, on the target only.

TensorRT cannot be installed on a host without NVIDIA's libraries and a GPU (see
STACK-NOTES), so this module has two halves:

* the parts that need TensorRT (``build_engine``, ``TensorRTSession``) import it lazily and
  raise ``BackendUnavailable`` naming exactly what is missing: they never pretend;
* pure helpers that run anywhere and tell the integrator how to build the engine on the
  device: ``trtexec_command`` (the exact ``trtexec`` line), ``ort_tensorrt_providers``
  (ONNX Runtime's TensorRT execution provider, the second route) and ``onnx_input_profiles``.

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
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from toolkit.core.errors import BackendUnavailable, DataError, UnsupportedError
from toolkit.backends.base import Session, register_backend
from toolkit.core.artifacts import file_sha256

INSTALL_HINT = "install TensorRT (JetPack on Jetson, or NVIDIA's pip index) on the target"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
PRECISIONS = ("fp32", "fp16", "int8")
# Candidate precisions and the TensorRT build they map to. Dynamic int8 (DynamicQuantizeLinear,
# MatMulInteger) has no TensorRT equivalent, so it is not in the map.
_CANDIDATE_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "mixed-int8": "int8"}
DEFAULT_BATCH = (1, 8, 32)  # min / opt / max batch of the optimization profile

Shape = tuple[int, ...]
ShapeProfile = tuple[Shape, Shape, Shape]


# --------------------------------------------------------------------------- availability
def _import_tensorrt():
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


def _cuda_problem() -> str | None:
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


def _gpu_info() -> dict[str, str]:
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


# --------------------------------------------------------------------------- pure helpers
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


def profile_shapes(input_dims: Mapping[str, Sequence[int | str | None]], *, min_batch: int = DEFAULT_BATCH[0],
                   opt_batch: int = DEFAULT_BATCH[1], max_batch: int = DEFAULT_BATCH[2],
                   input_shapes: Mapping[str, ShapeProfile] | None = None) -> dict[str, ShapeProfile]:
    """(min, opt, max) shapes for every input with a dynamic dimension.

    A dynamic leading dimension is the batch and gets min/opt/max_batch; any other dynamic
    dimension (a sequence length, an image size) has no safe default, so it must come
    from ``input_shapes`` or this raises UnsupportedError. Static inputs are left out:
    TensorRT (and trtexec) take shapes only for dynamic inputs.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UnsupportedError(f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    given = dict(input_shapes or {})
    out: dict[str, ShapeProfile] = {}
    for name, dims in input_dims.items():
        dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int) or isinstance(d, bool) or d < 0]
        if name in given:
            lo, mid, hi = check_shape_profile(name, given[name])
            if not (len(lo) == len(mid) == len(hi) == len(dims)):
                raise UnsupportedError(f"input '{name}': profile shapes {lo}/{mid}/{hi} do not have rank {len(dims)}")
            out[name] = (lo, mid, hi)
            continue
        if not dynamic:
            continue
        if dynamic != [0]:
            raise UnsupportedError(
                f"input '{name}' has dynamic dimensions {dynamic} besides the batch (shape {list(dims)}); "
                "give its (min, opt, max) shapes in input_shapes"
            )
        rest = tuple(int(d) for d in dims[1:])
        out[name] = ((min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    return out


def onnx_input_dims(onnx_path: str | Path) -> dict[str, tuple[int, ...]]:
    """Graph inputs of an ONNX file (initializers excluded) with -1 for every dynamic dim."""
    from toolkit.backends import onnx_graph

    return {i.name: tuple(-1 if d is None else d for d in i.shape)
            for i in onnx_graph.graph_inputs(onnx_graph.load_graph(onnx_path))}


def onnx_input_profiles(onnx_path: str | Path, *, min_batch: int = DEFAULT_BATCH[0], opt_batch: int = DEFAULT_BATCH[1],
                        max_batch: int = DEFAULT_BATCH[2],
                        input_shapes: Mapping[str, ShapeProfile] | None = None) -> dict[str, ShapeProfile]:
    """The optimization-profile shapes for an ONNX file's dynamic inputs (for trtexec_command)."""
    return profile_shapes(onnx_input_dims(onnx_path), min_batch=min_batch, opt_batch=opt_batch,
                          max_batch=max_batch, input_shapes=input_shapes)


def onnx_has_qdq(onnx_path: str | Path) -> bool:
    """True when the model is explicitly quantized (Q/DQ nodes), which is what TensorRT int8 needs here."""
    from toolkit.backends import onnx_graph

    return onnx_graph.has_qdq(onnx_graph.load_graph(onnx_path))


def check_shape_profile(name: str, profile) -> ShapeProfile:
    """A (min, opt, max) profile TensorRT can build: three shapes of one rank, whole dims in 1..SHAPE_DIM_MAX,
    min <= opt <= max in every dimension. A bad one is refused here, not by trtexec on the device."""
    from toolkit.core.bounds import SHAPE_DIM_MAX

    try:
        lo, mid, hi = (tuple(profile[i]) for i in range(3))
        if len(profile) != 3:
            raise ValueError
    except (TypeError, ValueError, IndexError, KeyError):
        raise UnsupportedError(f"input '{name}': a TensorRT profile is three shapes (min, opt, max), got {profile!r}") from None
    if not len(lo) == len(mid) == len(hi):
        raise UnsupportedError(f"input '{name}': profile shapes {list(lo)}/{list(mid)}/{list(hi)} differ in rank")
    for shape in (lo, mid, hi):
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= SHAPE_DIM_MAX:
                raise UnsupportedError(f"input '{name}': profile dimension {d!r} in {list(shape)} must be a whole "
                                       f"number between 1 and {SHAPE_DIM_MAX}; give concrete (min, opt, max) shapes")
    if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
        raise UnsupportedError(f"input '{name}': profile needs min <= opt <= max in every dimension, got "
                               f"{list(lo)}/{list(mid)}/{list(hi)}")
    return lo, mid, hi


def _shape_arg(shapes: Mapping[str, Shape]) -> str:
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in shapes.items())


def trtexec_command(onnx_name: str, precision: str, input_shapes: Mapping[str, ShapeProfile], engine_name: str, *,
                    timing_cache: str | None = "timing.cache", workspace_mb: int | None = None) -> str:
    """The exact trtexec line that builds the engine on the device (goes into the bundle).

    ``input_shapes`` maps each *dynamic* input to its (min, opt, max) shapes (see
    ``onnx_input_profiles``); static inputs must be left out. ``int8`` assumes a QDQ
    model and adds ``--fp16`` so that layers left unquantized run in fp16, not fp32;
    ``fp32`` adds ``--noTF32`` so that fp32 means fp32.
    """
    if precision not in PRECISIONS:
        raise UnsupportedError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    args = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}"]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args += ["--int8", "--fp16"]
    else:
        args.append("--noTF32")
    if input_shapes:
        input_shapes = {k: check_shape_profile(k, v) for k, v in input_shapes.items()}
        args.append("--minShapes=" + _shape_arg({k: v[0] for k, v in input_shapes.items()}))
        args.append("--optShapes=" + _shape_arg({k: v[1] for k, v in input_shapes.items()}))
        args.append("--maxShapes=" + _shape_arg({k: v[2] for k, v in input_shapes.items()}))
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    if workspace_mb:
        args.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    return " ".join(shlex.quote(a) for a in args)


def ort_tensorrt_providers(cache_dir: str | Path, fp16: bool, int8: bool) -> list:
    """ONNX Runtime providers for the TensorRT execution provider, with CUDA and CPU fallbacks.

    The second route to TensorRT: ORT builds and caches the engines itself. With a QDQ
    model, ``int8=True`` uses the model's own scales (no calibration table); pass
    ``fp16=True`` too so that unquantized layers fall back to fp16. Engine and timing
    caches go to ``cache_dir`` so the (minutes-long) build happens once per device.
    """
    cache = str(Path(cache_dir))
    trt_options = {
        "trt_fp16_enable": bool(fp16),
        "trt_int8_enable": bool(int8),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
    }
    return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", {}), "CPUExecutionProvider"]


def ort_tensorrt_available() -> tuple[bool, str]:
    """(whether this onnxruntime build offers the TensorRT EP, why/what).

    Listed is not the same as loadable: onnxruntime-gpu lists the EP even when the
    TensorRT libraries are missing and then falls back silently, so check the session's
    ``get_providers()`` after creating it.
    """
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError as exc:
        return False, f"onnxruntime is not installed ({exc})"
    providers = ort.get_available_providers()
    if "TensorrtExecutionProvider" in providers:
        return True, f"onnxruntime {ort.__version__} offers TensorrtExecutionProvider"
    return False, (
        f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider (available: {', '.join(providers)}); "
        "install onnxruntime-gpu with the TensorRT libraries on the target"
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
    trt = _import_tensorrt()
    gpu = _gpu_info()
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
            trt = _import_tensorrt()
        except BackendUnavailable as exc:
            problem = _cuda_problem()
            raise BackendUnavailable(f"{exc}; also {problem}" if problem else str(exc)) from exc
        problem = _cuda_problem()
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
        self._trt = trt = _import_tensorrt()
        self._gpu = _gpu_info()
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
    "ort_tensorrt_available", "INSTALL_HINT", "check_shape_profile",
]
