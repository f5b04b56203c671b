"""What a sweep keeps of each combination: history rows, artifact hashes, its summary row, its progress line,
and the nightly report over the history (output/nightly.py, the same as `optkit report nightly`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.core.errors import OptkitError


def history_rows(combo, report: dict) -> list[dict[str, Any]]:
    """Bench-history rows (output/history.py ROW_FIELDS) for every candidate the run timed.

    The series' model is model/recipe/candidate: two candidates of one run (e.g. two int8 calibrations on the same
    backend and precision) are different series, never the median of each other."""
    rows = []
    for c in report["candidates"]:
        m, where = c["metrics"], c["measured_on"]
        common = {"model": f"{combo.model}/{combo.recipe}/{c['id']}", "model_sha256": report["model"]["sha256"],
                  "backend": c["backend"], "precision": c["precision"], "threads": where["threads"],
                  "device": combo.device, "measured_on": where["label"], "node": where.get("node"),
                  "kind": where["kind"], "contended": where.get("contended", False), "run_dir": combo.run_dir,
                  "candidate": c["id"], "sweep_combination": combo.id}
        rows.append({**common, "batch": 1, **{k: m.get(k) for k in ("latency_p50_ms", "latency_p95_ms",
                                                                     "latency_p99_ms")},
                     "throughput_per_s": None, "peak_rss_mb": m.get("rss_growth_mb")})
        for t in m.get("throughput") or []:
            rows.append({**common, "batch": t["batch"], "latency_p50_ms": t["latency_p50_ms"], "latency_p95_ms": None,
                         "latency_p99_ms": None, "throughput_per_s": t["throughput_per_s"], "peak_rss_mb": None})
    return rows


def artifact_hashes(run_dir: Path, report: dict) -> dict[str, str]:
    """Each candidate's artifact identity (core/artifacts.artifact_sha256 over its folder's files)."""
    from toolkit.core.artifacts import artifact_sha256

    out = {}
    for c in report["candidates"]:
        folder = run_dir / "candidates" / c["id"]
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".optkit")] if folder.is_dir() else []
        out[c["id"]] = artifact_sha256(files) if files else ""
    return out


def report_digest(run_dir: Path) -> str:
    from toolkit.core.artifacts import file_sha256

    return file_sha256(run_dir / "report" / "report.json")


def record_history(sweep, combo, result: dict, log) -> dict[str, Any] | None:
    """Append a measured combination to the one history (the driver is its only writer). A run folder already
    recorded (same report.json) is not recorded twice: <out>/.recorded/<combination>.json says so."""
    from toolkit.output import history as hist

    if not result.get("rows"):
        return None
    marker = sweep.out / ".recorded" / f"{combo.id}.json"
    try:
        seen = json.loads(marker.read_text())
        if seen.get("report_sha256") == result["report_sha256"]:
            return {"run_id": seen["run_id"], "path": str(sweep.history), "already_recorded": True}
    except (OSError, ValueError):
        pass
    meta = {"command": "optkit sweep", "sweep": str(sweep.path), "combination": combo.id, "node": result.get("node"),
            "host_fingerprint": result["host_fingerprint"],  # the measuring node's, not the driver's
            "git_revision": hist.git_revision() or hist.git_revision(Path(__file__).resolve().parent)}
    try:
        run_id = hist.record(sweep.history, result["rows"], meta)
    except OptkitError as exc:
        log(f"history: {combo.id} not recorded: {exc}")
        result.update(status="failed", reason=f"history: {exc}")
        return {"error": str(exc)}
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run_id, "report_sha256": result["report_sha256"]}))
    return {"run_id": run_id, "path": str(sweep.history), "already_recorded": False}


def nightly(sweep, log) -> dict[str, Any]:
    """The nightly report over the sweep's history; {"skipped": why} when nothing was ever recorded."""
    from toolkit.output.nightly import write_nightly_report

    if not sweep.history.exists():
        return {"skipped": "no measurements recorded, so no nightly report"}
    n = sweep.nightly
    try:
        res = write_nightly_report(sweep.history, sweep.nightly_out, window=n.window, metric=n.metric,
                                   min_relative=n.min_relative)
    except OptkitError as exc:
        log(f"nightly report not written: {exc}")
        return {"error": str(exc)}
    return {"html": res["html"], "json": res["json"], "regressions": res["regressions"],
            "n_regressions": len(res["regressions"]), "n_ok": len(res["ok"]), "n_insufficient": len(res["insufficient"])}


def combination_row(combo, result: dict | None) -> dict[str, Any]:
    r = result or {"status": "failed", "reason": "never finished (the executor lost it)"}
    return {"id": combo.id, "model": combo.model, "recipe": combo.recipe, "device": combo.device,
            "status": r.get("status", "failed"), "reason": r.get("reason", ""), "run_dir": combo.run_dir,
            "selected": r.get("selected"), "macro_f1": r.get("macro_f1"), "latency_p50_ms": r.get("latency_p50_ms"),
            "latency_kind": r.get("latency_kind"), "node": r.get("timing_node") or r.get("node"), "build_node": r.get("build_node"),
            "build_s": r.get("build_s"), "measure_s": r.get("seconds"), "history": r.get("history"),
            "build_window": r.get("build_window"), "measure_window": r.get("window"),
            "metrics": r.get("metrics") or {}, "artifacts": r.get("artifacts") or {}}


def summary_line(combo, phase: str, result: dict) -> str:
    where = f"{phase} {combo.label()} on node {result.get('node')}"
    secs = f"({result.get('seconds', 0):.1f} s)"
    if phase == "build":
        if not result.get("ok"):
            return f"{where}: FAILED {result.get('reason')} {secs}"
        if result.get("reused"):
            return f"{where}: finished run folder found, nothing to build {secs}"
        steps = result.get("plan") or []
        made = {s: sum(1 for p in steps if p["status"] == s) for s in ("built", "cached", "failed")}
        return (f"{where}: {len(result.get('candidates') or {})} candidates; passes {made['built']} built, "
                f"{made['cached']} cached, {made['failed']} failed {secs}")
    if result.get("status") == "failed":
        return f"{where}: FAILED {result.get('reason')} {secs}"
    f1, p50 = result.get("macro_f1"), result.get("latency_p50_ms")
    got = (f"selected {result.get('selected')} (macro-F1 {f1:.4f}, p50 {p50:.3g} ms, {result.get('latency_kind')})"
           if f1 is not None
           else f"nothing selected: {result.get('reason')}")
    return f"{where}: {'reused finished run folder; ' if result.get('status') == 'reused' else ''}{got} {secs}"


__all__ = ["history_rows", "artifact_hashes", "report_digest", "record_history", "nightly", "combination_row",
           "summary_line"]
