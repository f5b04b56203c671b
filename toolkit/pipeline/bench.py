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

One row per (artifact, backend, precision, batch size of the profile), timed with the one
latency protocol (pipeline/measure.py: the profile's warmup/iterations in interleaved rounds,
contention flagged) under the one thread policy (core/host.effective_threads). A dynamic
non-batch dim runs at the shape policy's value (core/shapes.py: the bundle fixtures' width, else
the documented fallback). A pair that cannot run (no runtime, an op the runtime lacks) is a
*skipped* entry with the reason, never a number. Every row says where it was measured, and
`stand_in_for` names the profile when this host is not the device.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolkit.core.candidate import Candidate
from toolkit.core.artifacts import artifact_sha256
from toolkit.core.errors import ConfigError, DataError, OptkitError, UnsafeCheckpoint
from toolkit.core import shapes as shape_policy
from toolkit.core.host import effective_threads, rss_mb

MEMORY_NOTE = ("peak RSS growth of the optkit process while loading and running this session (psutil, sampled "
               "after load and after each batch size); includes importing the runtime the first time it is used, and "
               "earlier sessions' freed memory may be reused")
SEED = 0


# --------------------------------------------------------------------------- small helpers
def _synth(shape: tuple[int | None, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """One sample: batch 1, dynamic non-batch dims at the shape policy's fallback; integer inputs are ones."""
    dims = shape_policy.concrete(shape, 1, shape_policy.fallback())
    dt = np.dtype(dtype)
    if dt.kind in "iub":
        return np.ones(dims, dtype=dt)  # a valid token id and a full attention mask
    return rng.standard_normal(dims).astype(dt)


def _synth_feeds(inputs) -> tuple[dict[str, np.ndarray], int | None]:
    """Feeds for an artifact's inputs, and its static batch size (None when the batch is dynamic)."""
    rng = np.random.default_rng(SEED)
    feeds, static_batch = {}, None
    for spec in inputs:
        feeds[spec.name] = _synth(tuple(spec.shape), spec.dtype, rng)
        lead = spec.shape[0] if spec.shape else None
        static_batch = static_batch or (int(lead) if isinstance(lead, int) and lead > 0 else None)
    return feeds, static_batch


def _io_spec_inputs(io: dict) -> dict[str, np.ndarray]:
    from toolkit.core.artifacts import InputFacts

    specs = [InputFacts(s["name"], s["dtype"], tuple(d if isinstance(d, int) else None for d in s["shape"]))
             for s in io.get("inputs", [])]
    return _synth_feeds(specs)[0]


# --------------------------------------------------------------------------- what to bench
class _Item:
    """One artifact to time, with the feeds (one sample) it takes."""

    def __init__(self, candidate: Candidate, model: str, feeds: dict[str, np.ndarray], inputs_from: str,
                 static_batch: int | None = None, shapes: shape_policy.ShapePolicy | None = None):
        self.candidate = candidate
        self.model = model
        self.feeds = feeds
        self.inputs_from = inputs_from
        self.static_batch = static_batch
        self.shapes = shapes or shape_policy.fallback()
        self.sha256 = artifact_sha256(candidate.files())


def _artifact_item(path: Path, trust: bool = False) -> _Item:
    from toolkit import backends

    _, fmt = backends.reader_for(path)
    facts = backends.inspect(path, trust=trust)
    feeds, static_batch = _synth_feeds(facts.inputs)
    options: dict[str, Any] = {}
    if facts.details.get("input_names"):
        options["input_names"] = facts.details["input_names"]
    cand = Candidate(id=path.stem, path=path, format=fmt, precision=facts.precision, backend="", lineage=(),
                     runtime_options=options, info={"artifact": facts.to_dict()}, trust_checkpoint=trust)
    model = path.name if path.stem != "model" else f"{path.parent.name}/{path.name}"
    fallback = shape_policy.fallback()
    return _Item(cand, model, feeds, f"synthesized from the {fmt} input shapes (batch 1, dynamic dims "
                 f"{fallback.describe()}, integer inputs = 1, floats ~ N(0,1) seed {SEED})", static_batch, fallback)


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
            rows = {k: np.asarray(z[k]) for k in z.files}
        feeds = {k: np.ascontiguousarray(v[:1]) for k, v in rows.items()}
        shapes = shape_policy.from_arrays(rows)
        inputs_from = f"first row of {fixtures.relative_to(run_dir)}"
    elif report.get("io"):
        feeds = _io_spec_inputs(report["io"])
        shapes = shape_policy.fallback()
        inputs_from = f"synthesized from report.json's io spec (batch 1, dynamic dims {shapes.describe()})"
    else:
        raise DataError(f"{run_dir}: neither bundle fixtures nor an io spec in report.json; re-run optkit compress")

    from toolkit import backends

    items = []
    for c in cands:
        path = run_dir / c["path"]
        if not path.is_file():
            raise DataError(f"{path}: candidate '{c['id']}' is listed in report.json but its file is missing")
        fmt = c.get("format") or backends.readable_suffixes().get(path.suffix.lower(), ("", ""))[1]
        cand = Candidate(id=c["id"], path=path, format=fmt, precision=str(c.get("precision") or "as stored"),
                         backend=str(c.get("backend") or ""), lineage=tuple(c.get("lineage") or ()),
                         engine=c.get("engine"), runtime_options=dict(c.get("runtime_options") or {}),
                         trust_checkpoint=trust)  # from the flag only, never from report.json
        items.append(_Item(cand, f"{source}/{c['id']}", feeds, inputs_from, shapes=shapes))
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


def _pairs(item: _Item, wanted: list[str], explicit: list[str], device,
           avail: dict[str, tuple[bool, str]]) -> list[tuple[str, dict[str, Any], str | None]]:
    """(backend, runtime options, why it cannot run here or None) for every way this artifact can be run."""
    from toolkit.backends import session_class

    fmt, fixed = item.candidate.format, item.candidate.runtime_options
    out: list[tuple[str, dict[str, Any], str | None]] = []
    for name in wanted:
        cls = session_class(name)
        if not cls.applies(fmt, device, name in explicit):
            continue
        ok, why = avail[name]
        out += [(name, o, None) for o in cls.run_modes(fmt, fixed)] if ok else [(name, dict(fixed), why)]
    return out


# --------------------------------------------------------------------------- timing one pair
def _time_pair(item: _Item, backend: str, options: dict, device, threads: int,
               batch_sizes: list[int]) -> list[dict[str, Any]]:
    from toolkit import backends
    from toolkit.backends import open_session
    from toolkit.pipeline.measure import measure

    cand = item.candidate.derive(backend=backend, runtime_options={**item.candidate.runtime_options, **options})
    rss0 = rss_mb()
    with open_session(cand, threads=threads) as session:
        peak = rss_mb()
        m = measure(session, item.feeds, batch_sizes, device, threads, shapes=item.shapes)
        peak = max(peak, rss_mb())
    precision = backends.session_class(backend).precision_label(item.candidate.precision, m.described)
    rows = []
    for batch, stats in m.stats.items():
        where = m.measured_on(batch, MEMORY_NOTE)
        rows.append({
            "model": item.model,
            "model_sha256": item.sha256,
            "artifact": str(item.candidate.path),
            "backend": backend,
            "precision": precision,
            "batch": batch,
            "threads": threads,
            **{k: stats[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                                     "latency_p95_quietest_round_ms", "throughput_per_s", "runs", "rounds",
                                     "round_spread", "warmup")},
            "peak_rss_mb": round(max(0.0, peak - rss0), 2),
            "memory": MEMORY_NOTE,
            "device": device.name,
            "measured_on": where["label"],
            "kind": where["kind"],
            "runtime": where["runtime"],
            "isa": where["isa"],
            "contended": where["contended"],
            "contention_reason": where["contention_reason"],
            "stand_in_for": where["stand_in_for"],
            "sequence": where["sequence"],
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
          trust_checkpoint: bool = False, on: str | None = None, ssh_key: str | Path | None = None,
          known_hosts: str | Path | None = None) -> dict[str, Any]:
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
    from toolkit.backends import names

    known = names()
    wanted = list(backends) if backends else known
    unknown = [b for b in wanted if b not in known]
    if unknown:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(known)}")
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
    if on is not None:  # a bad ssh:// address or key path fails now, before anything is read or timed
        from toolkit.pipeline.remote import parse_target

        parse_target(on, ssh_key, known_hosts, flag="--on")
    items = _collect([Path(p) for p in paths], trust_checkpoint)

    requested = threads if threads is not None else prof.bench.threads
    used_threads = effective_threads(threads, prof.bench.threads)
    stand_in_for = None if prof.host_is_device() else prof.name
    avail = {b: availability(b) for b in wanted}

    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    remote = None
    if on is not None:  # `--on ssh://...`: timed on the device by its own runtimes (pipeline/remote_measure.py)
        from toolkit.pipeline.remote_measure import bench_on_device

        remote = bench_on_device(on, items, wanted, list(backends or []), prof, requested, ssh_key=ssh_key,
                                 known_hosts=known_hosts, log=log)
        rows, skipped = remote["rows"], remote["skipped"]
    for item in items if remote is None else ():
        batch_sizes = sorted(set(prof.bench.batch_sizes))
        if item.static_batch is not None:
            batch_sizes = [item.static_batch]
        for backend, options, why in _pairs(item, wanted, list(backends or []), prof, avail):
            if why is not None:
                skipped.append(_skipped(item, backend, options, why))
                continue
            if log:
                hint = options.get("inference_precision")
                log(f"{item.model} · {backend}{' ' + hint if hint else ''} · {used_threads} threads")
            try:
                rows.extend(_time_pair(item, backend, options, prof, used_threads, batch_sizes))
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
    if remote is not None:
        result.update(remote["summary"])
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
            **({"host_fingerprint": remote["history_fingerprint"]} if remote is not None else {}),
        }
        run_id = hist.record(history, rows, meta)
        result["history"] = {"path": str(history), "run_id": run_id}
    return result


__all__ = ["bench"]
