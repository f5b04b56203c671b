"""TensorRT shapes and build commands, pure Python: they run on any host and tell the integrator how to
build the engine on the device — optimization-profile shapes (``profile_shapes``), the exact ``trtexec``
line (``trtexec_command``) and ONNX Runtime's TensorRT execution provider (the second route).
Which batch sizes and dynamic-dim values go in is decided by pipeline/targets.py (device bench batch
sizes, core/shapes.py); ``DEFAULT_BATCH`` is only the fallback for a Session asked to build without one.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Mapping, Sequence

from toolkit.core.errors import UnsupportedError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 8, 32)  # min / opt / max batch of the optimization profile when none is given

Shape = tuple[int, ...]
ShapeProfile = tuple[Shape, Shape, Shape]


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


__all__ = ["PRECISIONS", "DEFAULT_BATCH", "Shape", "ShapeProfile", "profile_shapes", "onnx_input_dims",
           "onnx_input_profiles", "onnx_has_qdq", "check_shape_profile", "trtexec_command", "ort_tensorrt_providers",
           "ort_tensorrt_available"]
