"""What bench and compress measure on a device over SSH (toolkit.pipeline.remote carries it there and back).

* `bench_on_device`: the bench rows of `optkit bench ... --on ssh://...`, one per artifact x backend x
  precision x batch size, timed by the runner on the device and labelled with its fingerprint.
* `measure_candidates_on`: for `optkit compress ... --measure-on ssh://...`, each evaluated candidate's
  latency, throughput and memory replaced by the device's, the host's own timing kept beside it, and
  the candidate's outputs on fixture rows compared with the host's (parity checked on the device).

Numbers from the device are kind "target" (measured on the target); a candidate the device cannot run
keeps its host numbers as a stand-in and says why it was not measured there.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolkit.core.errors import RemoteError
from toolkit.pipeline.remote import Job, RemoteTarget, parse_target, run_on_device

FIXTURE_ROWS = 16
ROUNDS = 5
MEMORY_NOTE = ("RSS growth of the runner process on the device while loading this artifact and running it "
               "(/proc/self/statm; one artifact loaded at a time)")
# Backends the runner executes (toolkit/backends/remote_runner.py SESSIONS). torch eager is a host reference:
# a device is given the exported artifact, and a .pt2 is not opened on a machine optkit cannot vet it on.
ON_DEVICE = ("onnxruntime", "openvino", "tensorrt", "executorch")
NOT_ON_DEVICE = "torch eager is a host reference; devices run the exported artifacts (ONNX, OpenVINO IR, .pte)"


def device_label(fp: dict) -> str:
    board = f", {fp['board']}" if fp.get("board") else ""
    gpus = "".join(f", {a['name']}" for a in fp.get("accelerators") or [])
    isa = f"; {' '.join(fp['isa'])}" if fp.get("isa") else ""
    return f"{fp.get('cpu')} ({fp.get('arch')}, {fp.get('cores')} cores{board}{gpus}{isa})"


def device_contention(r: dict, fp: dict) -> tuple[bool, str]:
    """Was the device busy while it timed this artifact? The host's rule (pipeline/measure.py), on the device's
    load, steal time and round spread."""
    from toolkit.pipeline.measure import contention

    if not r.get("loads_before") or not r.get("loads_after"):
        return False, ""
    return contention(r["loads_before"], r["loads_after"], {t["batch"]: t for t in r["timing"]},
                      int(fp.get("usable_cores") or fp.get("cores") or 1))


def _modes(backend: str, fmt: str, fixed: dict, fp: dict) -> list[dict]:
    """Ways to run an artifact on this device: OpenVINO's precision hint is always explicit (its CPU default
    is not fp32), bf16 too where the device's flags have it; TensorRT runs through ORT's TensorRT EP there."""
    if backend == "openvino":
        if fmt == "openvino" and fixed.get("inference_precision"):
            return [dict(fixed)]
        bf16 = {"avx512_bf16", "amx_bf16"} & set(fp.get("isa") or [])
        return [{**fixed, "inference_precision": h} for h in (["f32", "bf16"] if bf16 else ["f32"])]
    if backend == "tensorrt":
        return [{**fixed, "tensorrt": True}]
    return [dict(fixed)]


def _fixture(feeds: dict[str, np.ndarray], rows: int, static_batch: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows to compare outputs on: the given rows, then (dynamic batch) more float rows ~ N(0,1), integer rows repeated."""
    want = static_batch or rows
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in feeds.items():
        if len(v) >= want:
            out[k] = np.ascontiguousarray(v[:want])
        elif v.dtype.kind == "f" and static_batch is None:
            extra = rng.standard_normal((want - len(v), *v.shape[1:])).astype(v.dtype)
            out[k] = np.ascontiguousarray(np.concatenate([v, extra]))
        else:
            out[k] = np.ascontiguousarray(np.concatenate([v] * -(-want // len(v)))[:want])
    return out


def parity(device_out: np.ndarray, host_out: np.ndarray | None, reference: str) -> dict[str, Any]:
    if host_out is None:
        return {"rows": int(len(device_out)), "checked": False, "reference": reference}
    host_out = np.asarray(host_out, dtype=np.float32)[: len(device_out)]
    return {"rows": int(len(device_out)), "checked": True, "reference": reference,
            "max_abs_diff": float(np.max(np.abs(device_out - host_out))) if device_out.size else 0.0,
            "top1_agreement": float(np.mean(device_out.argmax(1) == host_out.argmax(1))) if device_out.ndim == 2 else None}


def _spec(prof, threads: int, tasks: list[dict]) -> dict:
    b = prof.bench
    return {"warmup": b.warmup, "iterations": b.iterations, "rounds": ROUNDS, "batch_sizes": sorted(set(b.batch_sizes)),
            "threads": threads, "tasks": tasks}


def _files(cand, prefix: str) -> dict[str, Path]:
    return {f"{prefix}/{Path(f).name}": Path(f) for f in cand.files()}


def _host_reference(cand, backend: str, options: dict, fixture: dict) -> tuple[np.ndarray | None, str]:
    """The same artifact, backend and options on this host, for parity; (None, why) when it cannot run here."""
    from toolkit.backends import availability, open_session

    local = "onnxruntime" if backend == "tensorrt" else backend  # TensorRT's reference is the ONNX file on ORT
    ok, why = availability(local)
    if not ok:
        return None, f"not checked: {why}"
    opts = {k: v for k, v in options.items() if k != "tensorrt"}
    try:
        with open_session(cand.derive(backend=local, runtime_options=opts), threads=1) as s:
            return s.infer(fixture), f"{local} on this host"
    except Exception as exc:  # noqa: BLE001 - a reference that cannot run here leaves parity unchecked, said so
        return None, f"not checked: {local} on this host failed ({type(exc).__name__})"


# --------------------------------------------------------------------------- bench --on
def bench_on_device(on: str, items: list, wanted: list[str], explicit: list[str], prof, threads: int, *,
                    ssh_key=None, known_hosts=None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """{"rows", "skipped", "summary"} for bench items timed on the device at `on`."""
    from toolkit.backends import session_class

    target = parse_target(on, ssh_key, known_hosts, flag="--on")
    skipped: list[dict] = []
    planned: list[tuple[Any, str, dict, str]] = []   # (item, backend, options, task id)
    tmp = tempfile.TemporaryDirectory(prefix="optkit-remote-")

    def plan(probe: dict) -> Job | None:
        fp, there = probe.get("fingerprint") or {}, probe.get("runtimes") or {}
        tasks, files = [], {}
        for i, item in enumerate(items):
            fmt = item.candidate.format
            fixture = _fixture(item.feeds, FIXTURE_ROWS, item.static_batch)
            np.savez(Path(tmp.name) / f"fixture-{i}.npz", **fixture)
            for backend in wanted:
                if not session_class(backend).applies(fmt, prof, backend in explicit):
                    continue
                fixed = dict(item.candidate.runtime_options)
                if backend not in ON_DEVICE:
                    skipped.append(_skip(item, backend, fixed, NOT_ON_DEVICE))
                    continue
                if not (there.get(backend) or {}).get("ok"):
                    skipped.append(_skip(item, backend, fixed, f"{backend} is not usable on {target.address}: "
                                         f"{(there.get(backend) or {}).get('detail', 'not reported')}"))
                    continue
                for options in _modes(backend, fmt, fixed, fp):
                    tid = f"t{len(planned)}"
                    planned.append((item, backend, options, tid))
                    tasks.append({"id": tid, "file": f"a{i}/{item.candidate.path.name}", "fixture": f"fixture-{i}.npz",
                                  "backend": backend, "options": options, "precision": item.candidate.precision,
                                  "static_batch": item.static_batch})
                    files.update(_files(item.candidate, f"a{i}"))
                    files[f"fixture-{i}.npz"] = Path(tmp.name) / f"fixture-{i}.npz"
        if log and tasks:
            log(f"{len(tasks)} artifact x backend pairs on {target.address} ({device_label(fp)}), one at a time")
        return Job(_spec(prof, threads, tasks), files) if tasks else None

    try:
        probe, result = run_on_device(target, plan, [b for b in wanted if b in ON_DEVICE])
        fp = probe.get("fingerprint") or {}
        rows = []
        by_id = {r["id"]: r for r in (result or {}).get("results", [])}
        for item, backend, options, tid in planned:
            r = by_id.get(tid)
            if r is None or r.get("error"):
                skipped.append(_skip(item, backend, options, f"{backend} on {target.address} could not run it: "
                                     f"{(r or {}).get('error', 'no result')}", "failed"))
                continue
            fixture = _fixture(item.feeds, FIXTURE_ROWS, item.static_batch)
            ref, where = _host_reference(item.candidate, backend, options, fixture)
            rows += _bench_rows(item, backend, r, prof, fp, target,
                                parity(np.asarray(r["outputs"], dtype=np.float32), ref, where))
    finally:
        tmp.cleanup()
    if not rows and not skipped:
        raise RemoteError(f"{target.address}: nothing to time on the device for these artifacts and backends")
    summary = {"measured_on": f"{device_label(fp)} at {target.address}", "stand_in_for": None, "target": fp,
               "remote": target.address, "threads": rows[0]["threads"] if rows else threads}
    # the history keys series by where they ran: the device's facts, in the shape history.host_key reads
    history_fp = {"cpu_model": fp.get("cpu"), "machine": fp.get("arch"), "cores_usable": fp.get("usable_cores"),
                  "os": fp.get("os"), "python": fp.get("python"), "remote": target.address, "device_fingerprint": fp}
    return {"rows": rows, "skipped": skipped, "summary": summary, "history_fingerprint": history_fp}


def _skip(item, backend: str, options: dict, reason: str, status: str = "skipped") -> dict:
    hint = options.get("inference_precision")
    precision = f"{item.candidate.precision} / {hint} compute" if hint else item.candidate.precision
    return {"model": item.model, "model_sha256": item.sha256, "artifact": str(item.candidate.path), "backend": backend,
            "precision": precision, "status": status, "reason": reason}


def _bench_rows(item, backend: str, r: dict, prof, fp: dict, target: RemoteTarget, par: dict) -> list[dict]:
    from toolkit.backends import session_class

    described = r.get("described") or {}
    runtime = described.get("runtime") or backend
    precision = session_class(backend).precision_label(item.candidate.precision, described)
    contended, why = device_contention(r, fp)
    rows = []
    for t in r["timing"]:
        b = t["batch"]
        rows.append({
            "model": item.model, "model_sha256": item.sha256, "artifact": str(item.candidate.path),
            "backend": backend, "precision": precision, "batch": b, "threads": r["threads"],
            **{k: t[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms")},
            "throughput_per_s": round(b / (t["latency_p50_ms"] / 1e3), 1) if t["latency_p50_ms"] else None,
            "peak_rss_mb": r["rss_growth_mb"], "memory": MEMORY_NOTE, "runs": t["runs"], "warmup": t["warmup"],
            "rounds": t["rounds"], "round_p50_ms": t["round_p50_ms"], "round_spread": t.get("round_spread"),
            "contended": contended, "contention_reason": why, "isa": fp.get("isa") or [], "device": prof.name,
            "measured_on": (f"{device_label(fp)} · {runtime} · {r['threads']} threads · batch {b} · {t['runs']} runs"
                            f" · measured on the target {target.address}"),
            "kind": "target", "runtime": runtime, "stand_in_for": None, "inputs": item.inputs_from,
            "fingerprint": fp, "remote": target.address, "parity": par,
        })
    return rows


# --------------------------------------------------------------------------- compress --measure-on
def measure_candidates_on(target: RemoteTarget, rows: list[dict], candidates: dict, outputs: dict, dataset, prof,
                          log: Callable[[str], None] | None = None) -> dict[str, str]:
    """Replace each row's latency/throughput/memory with the device's (host timing kept beside), in place.

    Returns {candidate id: why it was not measured on the device} for the candidates that keep host numbers.
    """
    not_measured: dict[str, str] = {}
    planned: dict[str, dict] = {}
    tmp = tempfile.TemporaryDirectory(prefix="optkit-remote-")
    fixture = {k: np.ascontiguousarray(v[:FIXTURE_ROWS]) for k, v in dataset.test.inputs.items()}
    np.savez(Path(tmp.name) / "fixture.npz", **fixture)

    def plan(probe: dict) -> Job | None:
        there = probe.get("runtimes") or {}
        tasks, files = [], {"fixture.npz": Path(tmp.name) / "fixture.npz"}
        for i, row in enumerate(rows):
            cand = candidates[row["id"]]
            backend = cand.backend
            if backend not in ON_DEVICE:
                not_measured[row["id"]] = NOT_ON_DEVICE
                continue
            if not (there.get(backend) or {}).get("ok"):
                not_measured[row["id"]] = (f"{backend} is not usable there: "
                                           f"{(there.get(backend) or {}).get('detail', 'not reported')}")
                continue
            options = _modes(backend, cand.format, dict(cand.runtime_options), probe.get("fingerprint") or {})[0]
            task = {"id": row["id"], "file": f"a{i}/{cand.path.name}", "fixture": "fixture.npz", "backend": backend,
                    "options": options, "precision": cand.precision, "static_batch": None}
            planned[row["id"]] = task
            tasks.append(task)
            files.update(_files(cand, f"a{i}"))
        if log:
            log(f"measuring {len(tasks)} candidates on {target.address}, one at a time")
        return Job(_spec(prof, prof.bench.threads, tasks), files) if tasks else None

    try:
        probe, result = run_on_device(target, plan, sorted({c.backend for c in candidates.values()} & set(ON_DEVICE)))
    finally:
        tmp.cleanup()
    fp = probe.get("fingerprint") or {}
    by_id = {r["id"]: r for r in (result or {}).get("results", [])}
    for row in rows:
        r = by_id.get(row["id"])
        if row["id"] in planned and (r is None or r.get("error")):
            not_measured[row["id"]] = f"the device could not run it: {(r or {}).get('error', 'no result')}"
        if row["id"] in not_measured:
            row["measured_on"]["device_skipped"] = f"not measured on {target.address}: {not_measured[row['id']]}"
            continue
        host_out = outputs[row["id"]].test[:FIXTURE_ROWS] if row["id"] in outputs else None
        _apply(row, r, fp, target, parity(np.asarray(r["outputs"], dtype=np.float32), host_out,
                                          "this candidate's outputs on this host (evaluation)"))
    return not_measured


def _apply(row: dict, r: dict, fp: dict, target: RemoteTarget, par: dict) -> None:
    m, host_on = row["metrics"], row["measured_on"]
    one = next(t for t in r["timing"] if t["batch"] == 1) if any(t["batch"] == 1 for t in r["timing"]) else r["timing"][0]
    host_timing = {k: m[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms")}
    host_timing.update(throughput=m.get("throughput"), rss_growth_mb=m.get("rss_growth_mb"), kind=host_on.get("kind"),
                       label=host_on.get("label"))
    m.update({k: one[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms")})
    m["throughput"] = [{"batch": t["batch"], "throughput_per_s": round(t["batch"] / (t["latency_p50_ms"] / 1e3), 1)
                        if t["latency_p50_ms"] else None, "latency_p50_ms": t["latency_p50_ms"], "runs": t["runs"]}
                       for t in r["timing"] if t["batch"] > 1]
    m["rss_growth_mb"] = r["rss_growth_mb"]
    described = r.get("described") or {}
    runtime = described.get("runtime") or row["backend"]
    contended, why = device_contention(r, fp)
    row["measured_on"] = {
        **{k: v for k, v in described.items() if k not in ("runtime",)}, "runtime": runtime,
        "kind": "target", "host": device_label(fp), "backend": row["backend"], "threads": r["threads"], "batch": one["batch"],
        "runs": one["runs"], "warmup": one["warmup"], "memory": MEMORY_NOTE, "stand_in_for": None,
        "label": (f"measured on the target {target.address} ({device_label(fp)}) with {runtime}, {r['threads']} threads, "
                  f"batch {one['batch']}, {one['runs']} runs in {one['rounds']} rounds"),
        "cpu": fp.get("cpu"), "isa": fp.get("isa") or [], "usable_cores": fp.get("usable_cores"),
        "device": fp, "remote": target.address, "rounds": one["rounds"], "round_p50_ms": one["round_p50_ms"],
        "host_timing": host_timing, "device_parity": par, "round_spread": one.get("round_spread"),
        "contended": contended, "contention_reason": why,
        "load_average": (r.get("loads_before") or {}).get("load"),
    }


__all__ = ["bench_on_device", "measure_candidates_on", "parity", "device_label", "FIXTURE_ROWS", "ON_DEVICE"]
