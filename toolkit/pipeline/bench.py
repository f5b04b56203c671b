"""`optkit bench`: time artifacts on every backend x precision this host can run, honestly labelled.

    result = bench([Path("runs/demo")], device="x86-avx512", history=Path("bench.db"))
    for row in result["rows"]: print(row["backend"], row["precision"], row["latency_p50_ms"])

Inputs are artifacts (.onnx, OpenVINO .xml, torch.export .pt2) or a compress run folder
(its report/report.json names the candidates, its bundle fixtures feed them). Each artifact
runs on every runtime that can execute its format here:

* .onnx  -> onnxruntime (the file as stored), openvino with an explicit f32 inference
  precision and, when this CPU has BF16, bf16; tensorrt where the device uses it or it is
  asked for (on a host without TensorRT: a skipped row with availability()'s reason).
* .xml   -> openvino (f32, and bf16 where the CPU has it).
* .pt2   -> torch (eager, CPU).

One row per (artifact, backend, precision, batch size of the profile). Warmup, iterations,
batch sizes and threads come from the device profile; threads are capped at this host's
cores. A pair that cannot run (no runtime, an op the runtime lacks) is a *skipped* entry with
the reason, never a number. Every row says where it was measured, and `stand_in_for` names
the profile when this host is not the device.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolkit.core.candidate import Candidate
from toolkit.intake.data import file_sha256
from toolkit.core.errors import ConfigError, DataError, OptkitError, UnsafeCheckpoint, UnsupportedError
from toolkit.core.host import rss_mb, usable_cores

ARTIFACT_SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".pt2": "torch"}
BACKEND_NAMES = ("onnxruntime", "openvino", "torch", "tensorrt")
# A dynamic dimension other than the batch (a sequence length, an image side) needs a value to time with.
DEFAULT_DYNAMIC_DIM = 128
MEMORY_NOTE = ("peak RSS growth of the optkit process while loading and running this session (psutil, sampled "
               "after load and after each batch size); includes importing the runtime the first time it is used, and "
               "earlier sessions' freed memory may be reused")
SEED = 0


# --------------------------------------------------------------------------- small helpers
def _sha256(files: list[Path]) -> str:
    """sha256 of one file, or of the files' sha256s in name order (OpenVINO IR is .xml + .bin)."""
    digests = [file_sha256(f) for f in sorted(files)]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _synth(shape: list[int | None], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """One sample: batch 1, dynamic non-batch dims DEFAULT_DYNAMIC_DIM; integer inputs are ones."""
    dims = [1 if i == 0 and (d is None or d < 0) else (DEFAULT_DYNAMIC_DIM if d is None or d < 0 else int(d))
            for i, d in enumerate(shape)]
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        return np.ones(dims, dtype=dtype)  # a valid token id and a full attention mask
    return rng.standard_normal(dims).astype(dtype)


def _batch_dim(shape: list[int | None]) -> int | None:
    """The static batch size of an input, or None when the leading dim is dynamic."""
    if not shape or shape[0] is None or shape[0] < 0:
        return None
    return int(shape[0])


# --------------------------------------------------------------------------- inputs per format
def _onnx_inputs(path: Path) -> tuple[dict[str, np.ndarray], int | None]:
    import onnx  # noqa: PLC0415

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a broken file is the user's input: say so
        raise DataError(f"{path}: not a readable ONNX model ({exc}); pass a valid .onnx file") from exc
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(SEED)
    feeds, static_batch = {}, None
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[inp.name] = _synth(shape, dtype, rng)
        static_batch = static_batch or _batch_dim(shape)
    return feeds, static_batch


def _ir_inputs(path: Path) -> tuple[dict[str, np.ndarray], int | None]:
    import openvino as ov  # noqa: PLC0415

    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a readable OpenVINO IR ({str(exc).splitlines()[0]}); pass the .xml with its .bin next to it") from exc
    rng = np.random.default_rng(SEED)
    feeds, static_batch = {}, None
    for port in model.inputs:
        shape = [None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
        feeds[port.get_any_name()] = _synth(shape, port.get_element_type().to_dtype(), rng)
        static_batch = static_batch or _batch_dim(shape)
    return feeds, static_batch


def _pt2_inputs(path: Path, trust: bool = False) -> tuple[dict[str, np.ndarray], int | None, list[str]]:
    from toolkit.intake.checkpoints import load_pt2  # noqa: PLC0415

    program = load_pt2(path, trust=trust)
    user_inputs = list(program.graph_signature.user_inputs)
    rng = np.random.default_rng(SEED)
    feeds, static_batch = {}, None
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise UnsupportedError(f"{path}: input '{node.name}' is not a tensor; optkit bench times tensor inputs only")
        shape = [d if isinstance(d, int) else None for d in val.shape]
        dtype = np.dtype(str(val.dtype).replace("torch.", ""))
        feeds[node.name] = _synth(shape, dtype, rng)
        static_batch = static_batch or _batch_dim(shape)
    return feeds, static_batch, user_inputs


def _onnx_precision(path: Path) -> str:
    """What a standalone ONNX file stores: int8 (QDQ / QOperator), int8-dynamic, fp16 or fp32."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}:
        return "int8-dynamic"
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger"}:
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def _ir_precision(path: Path) -> str:
    import openvino as ov  # noqa: PLC0415

    model = ov.Core().read_model(str(path))
    ops = model.get_ops()
    if any(op.get_type_name() == "FakeQuantize" for op in ops):
        return "int8"
    consts = [op for op in ops if op.get_type_name() == "Constant"]
    if any(str(op.get_element_type()) in ("i8", "u8", "i4", "u4") for op in consts):
        return "int8 (weights)"
    if any(str(op.get_element_type()) == "f16" for op in consts):
        return "fp16 (weights)"
    return "fp32"


def _pt2_precision(path: Path, trust: bool = False) -> str:
    from toolkit.intake.checkpoints import load_pt2  # noqa: PLC0415

    program = load_pt2(path, trust=trust)
    dtypes = {str(t.dtype).replace("torch.", "") for t in program.state_dict.values() if hasattr(t, "dtype")}
    if dtypes & {"int8", "uint8", "qint8", "quint8"}:
        return "int8"
    for name, label in (("float16", "fp16"), ("bfloat16", "bf16")):
        if name in dtypes:
            return label
    return "fp32"


def _io_spec_inputs(io: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    feeds = {}
    for spec in io.get("inputs", []):
        shape = [d if isinstance(d, int) else None for d in spec["shape"]]
        feeds[spec["name"]] = _synth(shape, np.dtype(spec["dtype"]), rng)
    return feeds


# --------------------------------------------------------------------------- what to bench
class _Item:
    """One artifact to time, with the feeds (one sample) it takes."""

    def __init__(self, candidate: Candidate, model: str, feeds: dict[str, np.ndarray], inputs_from: str,
                 static_batch: int | None = None):
        self.candidate = candidate
        self.model = model
        self.feeds = feeds
        self.inputs_from = inputs_from
        self.static_batch = static_batch
        self.sha256 = _sha256(candidate.files())


def _artifact_item(path: Path, trust: bool = False) -> _Item:
    fmt = ARTIFACT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedError(f"{path}: optkit bench times .onnx, OpenVINO .xml or .pt2 files, or a compress run folder")
    options: dict[str, Any] = {}
    if fmt == "onnx":
        feeds, static_batch = _onnx_inputs(path)
    elif fmt == "openvino":
        if not path.with_suffix(".bin").is_file():
            raise DataError(f"{path}: the OpenVINO weights {path.with_suffix('.bin').name} are missing next to it")
        feeds, static_batch = _ir_inputs(path)
    else:
        feeds, static_batch, names = _pt2_inputs(path, trust)
        options["input_names"] = names
    precision = _pt2_precision(path, trust) if fmt == "torch" else {"onnx": _onnx_precision, "openvino": _ir_precision}[fmt](path)
    cand = Candidate(id=path.stem, path=path, format=fmt, precision=precision, backend="", lineage=(),
                     runtime_options=options, trust_checkpoint=trust)
    model = path.name if path.stem != "model" else f"{path.parent.name}/{path.name}"
    return _Item(cand, model, feeds, f"synthesized from the {fmt} input shapes (batch 1, dynamic dims "
                 f"{DEFAULT_DYNAMIC_DIM}, integer inputs = 1, floats ~ N(0,1) seed {SEED})", static_batch)


def _run_items(run_dir: Path, trust: bool = False) -> list[_Item]:
    report_path = run_dir / "report" / "report.json"
    if not report_path.is_file():
        raise DataError(f"{run_dir}: not an optkit run folder (no report/report.json); pass a folder written by "
                        "optkit compress, or the artifact files themselves")
    try:
        report = json.loads(report_path.read_text())
        source = report["model"]["source"]
        cands = report["candidates"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{report_path}: unreadable run report ({exc}); re-run optkit compress") from exc

    fixtures = run_dir / (report.get("bundle") or {}).get("path", "bundle") / "fixtures" / "inputs.npz"
    if fixtures.is_file():
        with np.load(fixtures, allow_pickle=False) as z:
            feeds = {k: np.ascontiguousarray(z[k][:1]) for k in z.files}
        inputs_from = f"first row of {fixtures.relative_to(run_dir)}"
    elif report.get("io"):
        feeds = _io_spec_inputs(report["io"])
        inputs_from = f"synthesized from report.json's io spec (batch 1, dynamic dims {DEFAULT_DYNAMIC_DIM})"
    else:
        raise DataError(f"{run_dir}: neither bundle fixtures nor an io spec in report.json; re-run optkit compress")

    items = []
    for c in cands:
        path = run_dir / c["path"]
        if not path.is_file():
            raise DataError(f"{path}: candidate '{c['id']}' is listed in report.json but its file is missing")
        fmt = c.get("format") or ARTIFACT_SUFFIXES.get(path.suffix.lower(), "")
        cand = Candidate(id=c["id"], path=path, format=fmt, precision=str(c.get("precision") or "as stored"),
                         backend=str(c.get("backend") or ""), lineage=tuple(c.get("lineage") or ()),
                         engine=c.get("engine"), runtime_options=dict(c.get("runtime_options") or {}),
                         trust_checkpoint=trust)  # from the flag only, never from report.json
        items.append(_Item(cand, f"{source}/{c['id']}", feeds, inputs_from))
    return items


def _collect(paths: list[Path], trust: bool = False) -> list[_Item]:
    if not paths:
        raise ConfigError("nothing to bench: pass artifact files (.onnx, .xml, .pt2) or a compress run folder")
    items: list[_Item] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder; pass .onnx, .xml or .pt2 files or a compress run folder")
        items.extend(_run_items(p, trust) if p.is_dir() else [_artifact_item(p, trust)])
    return items


def _pairs(item: _Item, wanted: list[str], explicit: list[str], device, bf16: bool) -> list[tuple[str, dict[str, Any]]]:
    """(backend, runtime options) for every way this artifact can be run."""
    fmt, opts = item.candidate.format, item.candidate.runtime_options
    out: list[tuple[str, dict[str, Any]]] = []
    if fmt == "onnx":
        out.append(("onnxruntime", {}))
    if fmt in ("onnx", "openvino"):
        fixed = opts.get("inference_precision") if fmt == "openvino" else None
        hints = [fixed] if fixed else ["f32"] + (["bf16"] if bf16 else [])
        out.extend(("openvino", {"inference_precision": h}) for h in hints)
    if fmt == "torch":
        out.append(("torch", {}))
    if fmt == "onnx" and ("tensorrt" in device.backends or "tensorrt" in explicit):
        out.append(("tensorrt", {}))
    return [(b, o) for b, o in out if b in wanted]


def _precision_label(item: _Item, backend: str, described: dict) -> str:
    stored = item.candidate.precision
    if backend == "openvino":
        ran = described.get("inference_precision", "?")
        return f"{stored} / {ran} compute"
    if backend == "tensorrt":
        return f"{stored} / tensorrt {described.get('precision', stored)}"
    return stored


# --------------------------------------------------------------------------- timing one pair
def _time_pair(item: _Item, backend: str, options: dict, device, threads: int, batch_sizes: list[int],
               stand_in_for: str | None) -> list[dict[str, Any]]:
    from toolkit.backends import open_session
    from toolkit.core.host import host_label
    from toolkit.metrics.latency import measure_latency, tile_batch

    b = device.bench
    cand = item.candidate.derive(backend=backend, runtime_options={**item.candidate.runtime_options, **options})
    rss0 = rss_mb()
    peak = rss0
    measured = []
    with open_session(cand, threads=threads) as session:
        peak = max(peak, rss_mb())
        for batch in batch_sizes:
            feeds = item.feeds if batch == 1 else tile_batch(item.feeds, batch)
            warmup, iters = (b.warmup, b.iterations) if batch == 1 else (max(3, b.warmup // 4), max(20, b.iterations // 10))
            stats = measure_latency(session, feeds, warmup, iters)
            measured.append((batch, stats))
            peak = max(peak, rss_mb())
        described = session.describe()
    runtime = described.get("runtime") or described.get("tensorrt_version") or backend
    precision = _precision_label(item, backend, described)
    rows = []
    for batch, stats in measured:
        label = (f"{host_label()} · {runtime} · {threads} threads · batch {batch} · {stats['runs']} runs"
                 + (f" · stand-in for {stand_in_for}" if stand_in_for else ""))
        rows.append({
            "model": item.model,
            "model_sha256": item.sha256,
            "artifact": str(item.candidate.path),
            "backend": backend,
            "precision": precision,
            "batch": batch,
            "threads": threads,
            "latency_p50_ms": stats["latency_p50_ms"],
            "latency_p95_ms": stats["latency_p95_ms"],
            "latency_p99_ms": stats["latency_p99_ms"],
            "latency_mean_ms": stats["latency_mean_ms"],
            "throughput_per_s": round(batch / (stats["latency_p50_ms"] / 1e3), 1) if stats["latency_p50_ms"] else None,
            "peak_rss_mb": round(max(0.0, peak - rss0), 2),
            "memory": MEMORY_NOTE,
            "runs": stats["runs"],
            "warmup": stats["warmup"],
            "device": device.name,
            "measured_on": label,
            "kind": "measured",
            "runtime": runtime,
            "stand_in_for": stand_in_for,
            "inputs": item.inputs_from,
        })
    return rows


def _skipped(item: _Item, backend: str, options: dict, reason: str, status: str = "skipped") -> dict[str, Any]:
    hint = options.get("inference_precision")
    precision = f"{item.candidate.precision} / {hint} compute" if hint else item.candidate.precision
    return {"model": item.model, "model_sha256": item.sha256, "artifact": str(item.candidate.path), "backend": backend,
            "precision": precision, "status": status, "reason": reason}


# --------------------------------------------------------------------------- the API
def bench(paths: list[Path], device: str, threads: int | None = None, history: Path | None = None,
          backends: list[str] | None = None, *, log: Callable[[str], None] | None = None,
          trust_checkpoint: bool = False) -> dict[str, Any]:
    """Time every artifact on every backend x precision usable here; optionally append the rows to a history.

    Returns {"device", "host", "threads", "stand_in_for", "rows", "skipped", "history"}: `rows` are
    measurements (one per artifact, backend, precision, batch), `skipped` the pairs that could not
    run here with the reason. Raises ConfigError/DataError/UnsupportedError on bad input before
    anything is timed.
    """
    from toolkit.backends import availability
    from toolkit.pipeline.devices import load_device
    from toolkit.core.host import host, host_label

    prof = load_device(device)
    wanted = list(backends) if backends else list(BACKEND_NAMES)
    unknown = [b for b in wanted if b not in BACKEND_NAMES]
    if unknown:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKEND_NAMES)}")
    if threads is not None:
        from toolkit.core.bounds import check_threads

        check_threads(threads)
    if history is not None:
        history = Path(history)
        if history.is_dir():
            raise ConfigError(f"{history}: is a folder; --history needs a file path such as bench.db")
        if not history.parent.exists():
            raise ConfigError(f"{history}: folder {history.parent} does not exist; create it first")
        from toolkit.output import history as hist

        hist.preflight(history)  # a foreign or corrupt file fails now, not after minutes of timing
    items = _collect([Path(p) for p in paths], trust_checkpoint)

    cores = usable_cores()
    requested = threads if threads is not None else prof.bench.threads
    used_threads = max(1, min(requested, cores))
    stand_in_for = None if prof.host_is_device() else prof.name
    avail = {b: availability(b) for b in wanted}
    bf16 = False
    if avail.get("openvino", (False, ""))[0]:
        from toolkit.backends.openvino import cpu_capabilities

        bf16 = "BF16" in cpu_capabilities()

    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for item in items:
        batch_sizes = sorted(set(prof.bench.batch_sizes))
        if item.static_batch is not None:
            batch_sizes = [item.static_batch]
        for backend, options in _pairs(item, wanted, list(backends or []), prof, bf16):
            ok, why = avail[backend]
            if not ok:
                skipped.append(_skipped(item, backend, options, why))
                continue
            if log:
                hint = options.get("inference_precision")
                log(f"{item.model} · {backend}{' ' + hint if hint else ''} · {used_threads} threads")
            try:
                rows.extend(_time_pair(item, backend, options, prof, used_threads, batch_sizes, stand_in_for))
            except UnsafeCheckpoint:
                raise  # a refused checkpoint stops the bench (exit 2), it is not one runtime's failure
            except OptkitError as exc:
                skipped.append(_skipped(item, backend, options, str(exc), "failed"))
            except Exception as exc:  # noqa: BLE001 - a runtime rejecting one artifact must not lose the others
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                skipped.append(_skipped(item, backend, options,
                                        f"{backend} could not run it: {type(exc).__name__}: {first}", "failed"))

    result: dict[str, Any] = {
        "device": prof.name,
        "host": host(),
        "measured_on": host_label(),
        "threads": used_threads,
        "threads_requested": requested,
        "stand_in_for": stand_in_for,
        "bench_settings": {"warmup": prof.bench.warmup, "iterations": prof.bench.iterations,
                           "batch_sizes": prof.bench.batch_sizes, "threads": used_threads},
        "rows": rows,
        "skipped": skipped,
        "history": None,
    }
    if history is not None:
        if not rows:
            raise DataError("no bench rows to record: nothing could run on this host (see the skipped reasons)")
        from toolkit.output import history as hist

        meta = {
            "git_revision": hist.git_revision() or hist.git_revision(Path(__file__).resolve().parent),
            "command": "optkit bench",
            "device": prof.name,
            "threads": used_threads,
            "inputs": [str(p) for p in paths],
        }
        run_id = hist.record(history, rows, meta)
        result["history"] = {"path": str(history), "run_id": run_id}
    return result


__all__ = ["bench", "ARTIFACT_SUFFIXES", "BACKEND_NAMES", "DEFAULT_DYNAMIC_DIM"]
