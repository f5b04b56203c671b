"""The two tasks every executor runs per combination, plain functions of plain data (a Ray worker runs them as is).

build_combination (phase A): compress in build mode into a scratch folder: intake, the plan's passes and every
  candidate's accuracy outputs, all into the shared cache by content hash (pipeline/run.py run_cached,
  pipeline/evaluate.py outputs_key). Nothing is timed, so builds may share a node's cores.
measure_combination (phase B): the full compress into the combination's run folder; its passes and outputs hit
  the cache (verified against their records), so what runs is timing, selection, report and bundle. The
  executor gives it the whole node (nothing else runs there while it times). A run folder whose report.json
  validates is reused, not redone; an interrupted one is resumed (compress --resume).
Both are idempotent by cache key and run folder, so a retried task (a worker killed mid-task) redoes no
finished work and makes the same bytes.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from toolkit.core.errors import GateFailed, OptkitError


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, OptkitError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _compress_args(combo) -> dict[str, Any]:
    return dict(device=combo.device_ref, recipe=combo.recipe_ref, data=combo.data, model_factory=combo.model_factory,
                trust_checkpoint=combo.trust_checkpoint, seed=combo.seed, output=combo.output,
                text_column=combo.text_column, label_column=combo.label_column, tokenizer=combo.tokenizer,
                measure_on=combo.measure_on, ssh_key=combo.ssh_key, known_hosts=combo.known_hosts)


def finished_report(combo) -> dict | None:
    """The run folder's report.json as a dict when it validates (a finished run), else None."""
    import json

    from toolkit.core.result import load_report

    path = Path(combo.run_dir) / "report" / "report.json"
    if not path.is_file():
        return None
    try:
        load_report(path)
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _build(combo, node: str) -> dict[str, Any]:
    from toolkit.pipeline.compress import compress

    t0 = time.time()
    base = {"node": node, "phase": "build"}
    if finished_report(combo) is not None:
        return {**base, "ok": True, "reused": True, "seconds": round(time.time() - t0, 2)}
    build_dir = Path(combo.build_dir)
    try:
        built = compress(combo.checkpoint, out=build_dir, overwrite=True, resume=True, build_only=True,
                         **_compress_args(combo))
        return {**base, "ok": True, **built, "seconds": round(time.time() - t0, 2)}
    except Exception as exc:  # noqa: BLE001 - one combination's failure is reported, the others go on
        return {**base, "ok": False, "reason": f"build: {_reason(exc)}", "seconds": round(time.time() - t0, 2)}
    finally:
        if (build_dir / ".optkit-output").exists():  # scratch: the cache holds what was built
            shutil.rmtree(build_dir, ignore_errors=True)


def _measure(combo, built: dict, node: str) -> dict[str, Any]:
    from toolkit.output.history import host_fingerprint
    from toolkit.pipeline.compress import compress
    from toolkit.pipeline.executors.results import artifact_hashes, history_rows, report_digest

    t0 = time.time()
    out: dict[str, Any] = {"node": node, "phase": "measure", "status": "ok", "reason": ""}
    if not built.get("ok"):
        return {**out, "status": "failed", "reason": built.get("reason", "build failed"), "seconds": 0.0}
    report = finished_report(combo)
    if report is not None:
        out.update(status="reused", reason="finished run folder reused (its report.json validates)")
    else:
        run_dir = Path(combo.run_dir)
        try:
            compress(combo.checkpoint, out=run_dir, overwrite=run_dir.exists(), resume=True, **_compress_args(combo))
        except GateFailed as exc:  # the run finished and wrote its report: its measurements still count
            out.update(status="gate-failed", reason=str(exc))
        except Exception as exc:  # noqa: BLE001
            return {**out, "status": "failed", "reason": f"measure: {_reason(exc)}", "seconds": round(time.time() - t0, 2)}
        report = finished_report(combo)
        if report is None:
            return {**out, "status": "failed", "reason": f"measure: no valid report.json in {run_dir}",
                    "seconds": round(time.time() - t0, 2)}
    if report.get("selected") is None and out["status"] == "reused":
        out.update(status="gate-failed", reason="no candidate met the gates (finished run folder reused)")
    sel = next((c for c in report["candidates"] if c["id"] == report.get("selected")), None)
    out.update(selected=report.get("selected"), macro_f1=sel["metrics"].get("macro_f1") if sel else None,
               latency_p50_ms=sel["metrics"].get("latency_p50_ms") if sel else None,
               # where that p50 was timed: on the device itself ("target") or on this host standing in for it
               latency_kind=sel["measured_on"].get("kind") if sel else None,
               timing_node=sel["measured_on"].get("node") if sel else None,
               metrics={c["id"]: {k: c["metrics"].get(k) for k in ("macro_f1", "accuracy", "ece")}
                        for c in report["candidates"]},
               artifacts=artifact_hashes(Path(combo.run_dir), report), rows=history_rows(combo, report),
               report_sha256=report_digest(Path(combo.run_dir)), host_fingerprint=host_fingerprint(),
               seconds=round(time.time() - t0, 2))
    return out


def _windowed(fn, *args) -> dict[str, Any]:
    """fn's result with its wall-clock window [start, end] (epoch s): what shows that no timing overlapped other work."""
    start = time.time()
    result = fn(*args)
    result["window"] = [start, time.time()]
    return result


def build_combination(combo, node: str) -> dict[str, Any]:
    return _windowed(_build, combo, node)


def measure_combination(combo, built: dict, node: str) -> dict[str, Any]:
    return _windowed(_measure, combo, built, node)


__all__ = ["build_combination", "measure_combination", "finished_report"]
