"""The integrator bundle: model files, manifest (I/O contract, confidence semantics, hashes), card, fixtures.

`verify(DIR)` re-hashes every file and re-runs the fixtures through the manifest's backend.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .candidate import Candidate
from .data import file_sha256
from .errors import GateFailed

MANIFEST = "manifest.json"
FIXTURE_ROWS = 8
FORMAT_VERSION = 1


def _tolerances(precision: str, logits: np.ndarray) -> dict:
    """fp32 must reproduce tightly; reduced precisions may differ across CPUs' kernels (VNNI, AMX, NEON)."""
    if precision == "fp32":
        return {"rtol": 1e-3, "atol": 1e-4}
    return {"rtol": 1e-2, "atol": float(round(2e-2 * max(1.0, float(np.abs(logits).max())), 4))}


def _summary_metrics(m: dict) -> dict:
    keys = ["macro_f1", "macro_f1_ci", "accuracy", "ece", "ece_recalibrated", "nll", "nll_recalibrated", "temperature",
            "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "size_mb", "rss_growth_mb", "top1_agreement",
            "max_abs_logit_delta"]
    return {k: m[k] for k in keys if k in m}


def write_bundle(folder: Path, cand: Candidate, report: dict, dataset, outputs, io, build: dict | None = None) -> dict:
    from .metrics.calibration import softmax

    row = next(r for r in report["candidates"] if r["id"] == cand.id)
    m = row["metrics"]
    (folder / "model").mkdir(parents=True)
    (folder / "fixtures").mkdir()
    for p in cand.files():
        shutil.copy2(p, folder / "model" / p.name)
    # fixtures: the first test rows, their logits from the selected candidate, calibrated probabilities, decisions
    feeds = {k: v[:FIXTURE_ROWS] for k, v in dataset.test.inputs.items()}
    logits = outputs.test[:FIXTURE_ROWS]
    probs = softmax(logits, m["temperature"]).astype(np.float32)
    thresholds = np.asarray(m["thresholds"]["values"], dtype=np.float32)
    np.savez(folder / "fixtures" / "inputs.npz", **feeds)
    np.savez(folder / "fixtures" / "expected.npz", logits=logits, probabilities=probs,
             top1=logits.argmax(1).astype(np.int64), above_threshold=(probs >= thresholds[None, :] if len(thresholds) == probs.shape[1] else probs >= 0.5))
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "candidate": cand.id,
        "model": {"file": f"model/{cand.path.name}", "files": [f"model/{p.name}" for p in cand.files()],
                  "format": cand.format, "precision": cand.precision, "backend": cand.backend, "engine": cand.engine,
                  "runtime_options": {k: v for k, v in cand.runtime_options.items()}, "lineage": list(cand.lineage)},
        "io": io.to_dict(),
        "preprocessing": dataset.preprocessing,
        "labels": dataset.labels,
        "confidence": {
            "temperature": m["temperature"],
            "probabilities": "softmax(logits / temperature)",
            "thresholds": m["thresholds"],
            "decision": "top-1 = argmax(logits); class k is flagged when its calibrated probability >= thresholds.values[k] "
                        f"(one-vs-rest, tuned on the validation split for {m['thresholds']['metric']})",
        },
        "metrics": _summary_metrics(m),
        "measured_on": row["measured_on"],
        "device": report["device"]["name"],
        "versions": report["versions"],
        "fixtures": {"inputs": "fixtures/inputs.npz", "expected": "fixtures/expected.npz", "rows": int(logits.shape[0]),
                     **_tolerances(cand.precision, logits)},
    }
    if build is not None:
        # Targets that build their own engines get the exact command, run next to model/ on the device.
        script = folder / "build_engine.sh"
        script.write_text(f"#!/bin/sh\n# Build the TensorRT engine {build['where']} (needs trtexec from TensorRT/JetPack).\n"
                          f"set -e\ncd \"$(dirname \"$0\")/model\"\n{build['command']}\n")
        script.chmod(0o755)
        manifest["build"] = {**build, "script": "build_engine.sh"}
    (folder / "MODEL_CARD.md").write_text(_model_card(manifest, report, row))
    manifest["sha256"] = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return {"path": "bundle", "candidate": cand.id}


def target_builds(report: dict, cands: dict[str, Candidate], device, io) -> list[dict]:
    """For targets that build their own engines (TensorRT): the exact build command per ONNX candidate."""
    if "tensorrt" not in device.backends:
        return []
    from .backends.tensorrt import trtexec_command

    shapes = {}
    for t in io.inputs:
        def concrete(b):
            return tuple(b if d == "batch" else (128 if d == "sequence" else d) for d in t.shape)
        shapes[t.name] = (concrete(1), concrete(max(device.bench.batch_sizes)), concrete(max(device.bench.batch_sizes) * 4))
    builds = []
    for row in report["candidates"]:
        c = cands.get(row["id"])
        if c is None or c.format != "onnx":
            continue
        precision = "int8" if "int8" in c.precision and c.precision != "int8-dynamic" else c.precision
        if precision not in ("fp32", "fp16", "int8"):
            continue
        cmd = trtexec_command(c.path.name, precision, shapes, f"{c.id}.engine")
        builds.append({"candidate": c.id, "precision": precision, "command": cmd, "where": f"on the {device.name}",
                       "status": "to build on the target: TensorRT is not usable on this host"})
    return builds


def _model_card(manifest: dict, report: dict, row: dict) -> str:
    m = row["metrics"]
    lines = [f"# Model card: {manifest['candidate']}", "",
             f"- Source model: `{report['model']['source']}` (sha256 {report['model']['sha256'][:16]}…)",
             f"- Target device: {report['device']['name']} — {report['device']['description']}",
             f"- Format / precision / backend: {manifest['model']['format']} / {manifest['model']['precision']} / {manifest['model']['backend']}",
             f"- Lineage: {' → '.join(manifest['model']['lineage'])}",
             f"- Data: {report['data']['name']} (test n={report['data']['n_test']}, validation n={report['data']['n_val']})", "",
             "## Quality (test split)", "",
             f"- macro-F1 {m['macro_f1']:.4f} (95% bootstrap CI {m['macro_f1_ci'][0]:.4f}–{m['macro_f1_ci'][1]:.4f}), accuracy {m['accuracy']:.4f}",
             f"- ECE {m['ece']:.4f} → {m['ece_recalibrated']:.4f} after temperature T = {m['temperature']:.3f} (fitted on validation)", "",
             "## Speed and size", "",
             f"- p50 {m['latency_p50_ms']} ms, p95 {m['latency_p95_ms']} ms, p99 {m['latency_p99_ms']} ms — {row['measured_on']['label']}",
             f"- size {m['size_mb']} MB on disk (MB = 10^6 bytes)", "",
             "## How to use", "",
             "- Inputs: " + ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in manifest["io"]["inputs"]),
             f"- Preprocessing: {manifest['preprocessing']}",
             f"- Confidence: {manifest['confidence']['probabilities']} with T = {m['temperature']:.4f}; {manifest['confidence']['decision']}",
             "- Check the bundle: `optkit verify .` (hashes and fixtures)", ""]
    return "\n".join(lines)


def verify(folder: str | Path) -> dict:
    """Check every hash, then re-run the fixtures; raise GateFailed naming the first problem."""
    from .backends import availability, open_session
    from .errors import BackendUnavailable

    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.exists():
        raise GateFailed(f"{folder}: no {MANIFEST}; pass the bundle folder written by optkit compress")
    try:
        manifest = json.loads(mpath.read_text())
        hashes = manifest["sha256"]
    except (ValueError, KeyError) as exc:
        raise GateFailed(f"{mpath}: unreadable manifest ({exc}); the bundle is damaged, re-create it") from exc
    for rel, sha in hashes.items():
        p = folder / rel
        if not p.is_file():
            raise GateFailed(f"{p}: listed in the manifest but missing; the bundle is incomplete")
        if file_sha256(p) != sha:
            raise GateFailed(f"{p}: sha256 does not match the manifest; the file was changed or damaged, re-create the bundle")
    extra = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                   and str(p.relative_to(folder)) not in hashes)
    if extra:
        raise GateFailed(f"{folder / extra[0]}: not listed in the manifest; remove it or re-create the bundle")
    model = manifest["model"]
    cand = Candidate(id=manifest["candidate"], path=folder / model["file"], format=model["format"],
                     precision=model["precision"], backend=model["backend"], lineage=tuple(model["lineage"]),
                     engine=model.get("engine"), runtime_options=model.get("runtime_options", {}))
    ok, why = availability(cand.backend)
    if not ok:
        raise BackendUnavailable(f"{folder}: hashes match, but fixtures cannot run here: {why}")
    fx = manifest["fixtures"]
    with np.load(folder / fx["inputs"]) as z:
        feeds = {k: z[k] for k in z.files}
    with np.load(folder / fx["expected"]) as z:
        expected = z["logits"]
    with open_session(cand, threads=1) as session:
        got = session.infer(feeds)
    if got.shape != expected.shape:
        raise GateFailed(f"{folder}: fixture outputs have shape {got.shape}, expected {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=fx["rtol"], atol=fx["atol"]) or not (got.argmax(1) == expected.argmax(1)).all():
        raise GateFailed(f"{folder}: fixture outputs differ from the expected ones (max |diff| {diff:.3g} > atol {fx['atol']}, "
                         f"rtol {fx['rtol']}); the model or runtime does not reproduce the bundle")
    return {"bundle": str(folder), "files_checked": len(hashes), "fixture_rows": int(expected.shape[0]),
            "max_abs_diff": diff, "backend": cand.backend, "ok": True}
