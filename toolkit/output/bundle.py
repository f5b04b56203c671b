"""The integrator bundle: model files, manifest (I/O contract, confidence semantics, hashes), card, fixtures.

`verify(DIR)` proves the bundle is what was sealed (see bundle_manifest: the manifest's own digest, path rules, a
walk that sees every entry, every file's sha256), optionally checks an OpenSSF model-signing signature
(`public_key=`, see signing.py), then re-runs the fixtures through the manifest's backend.
"""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.output.manifest import ENGINE_DIR, FORMAT_VERSION, MANIFEST, SIGNATURE, Manifest, load_manifest, seal, show, walk
from toolkit.core.candidate import Candidate
from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import GateFailed
from toolkit.metrics.thresholds import DECISION_RULE, decide, flags

FIXTURE_ROWS = 8


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


def _decision_thresholds(values: np.ndarray, n_classes: int) -> np.ndarray:
    """What decide() takes: binary tasks use the class-1 threshold (values are one-vs-rest, one per class)."""
    return values[1:] if n_classes == 2 and len(values) == 2 else values


def _temperature_why(m: dict) -> str:
    """Why this T ships (metrics.calibration.fit_temperature_cv): applied only when held-out NLL improved."""
    fit = m.get("temperature_fit") or {}
    return f"; {fit['reason']}" if fit.get("reason") else ""


def write_bundle(folder: Path, cand: Candidate, report: dict, dataset, outputs, io, build: dict | None = None) -> dict:
    from toolkit.metrics.calibration import softmax

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
    decision_thresholds = _decision_thresholds(thresholds, probs.shape[1])
    np.savez(folder / "fixtures" / "inputs.npz", **feeds)
    np.savez(folder / "fixtures" / "expected.npz", logits=logits, probabilities=probs,
             top1=logits.argmax(1).astype(np.int64), above_threshold=flags(probs, decision_thresholds),
             decision=decide(probs, decision_thresholds))
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
            "probabilities": "softmax(logits / temperature)" + _temperature_why(m),
            "thresholds": m["thresholds"],
            "decision": "top-1 = argmax(logits); class k is flagged when its calibrated probability >= thresholds.values[k] "
                        f"(one-vs-rest, tuned on the validation split for {m['thresholds']['metric']})",
            "decision_rule": DECISION_RULE, "decision_thresholds": [float(t) for t in decision_thresholds],
        },
        "metrics": _summary_metrics(m),
        "measured_on": row["measured_on"],
        "device": report["device"]["name"],
        "versions": report["versions"],
        "fixtures": {"inputs": "fixtures/inputs.npz", "expected": "fixtures/expected.npz", "rows": int(logits.shape[0]),
                     **_tolerances(cand.precision, logits)},
    }
    text = getattr(dataset, "text", None)
    if text is not None:  # raw-text models: the tokenizer, its settings and raw-text fixtures ship with the model
        (folder / "tokenizer").mkdir()
        for p in text.tokenizer_files:
            shutil.copy2(p, folder / "tokenizer" / p.name)
        (folder / "fixtures" / "texts.json").write_text(json.dumps(text.texts["test"][:FIXTURE_ROWS], ensure_ascii=False))
        manifest["text"] = {**text.contract(), "tokenizer_files": [f"tokenizer/{p.name}" for p in text.tokenizer_files]}
        manifest["fixtures"]["texts"] = "fixtures/texts.json"
    if build is not None:
        # Targets that build their own engines get the exact command, run from model/ on the device.
        script = folder / "build_engine.sh"
        script.write_text(build_script(build))
        script.chmod(0o755)
        manifest["build"] = {**build, "script": "build_engine.sh", "engine_dir": ENGINE_DIR}
    (folder / "MODEL_CARD.md").write_text(_model_card(manifest, report, row))
    manifest["sha256"] = {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(seal(manifest), indent=2, ensure_ascii=False))
    return {"path": "bundle", "candidate": cand.id}


def build_script(build: dict) -> str:
    """build_engine.sh: runs the manifest's trtexec command from model/, writing engine and timing cache to OUT_DIR.

    The outputs never go into model/ (hashed by the manifest: a new file there would fail verify) nor anywhere else in
    the bundle but engine/, the one folder verify allows unlisted in a bundle with a `build` section — an engine is
    built on the device, so no hash written here can cover it (nor can the signature: `optkit sign` leaves engine/ out).
    """
    outputs = ("--saveEngine=", "--timingCacheFile=")
    words = []
    for word in shlex.split(build["command"]):
        flag = next((f for f in outputs if word.startswith(f)), None)
        # "$out"/NAME: the shell expands the folder, the file name stays quoted as trtexec_command quoted it.
        words.append(f'{flag}"$out"/{shlex.quote(word[len(flag):])}' if flag else shlex.quote(word))
    return (f"#!/bin/sh\n# Build the TensorRT engine {build['where']} (needs trtexec from TensorRT/JetPack).\n"
            f"# Usage: ./build_engine.sh [OUT_DIR]  (default: {ENGINE_DIR}/ in this bundle; never inside model/)\n"
            "set -e\n"
            'bundle=$(cd "$(dirname "$0")" && pwd -P)\n'
            f'out=${{1:-"$bundle/{ENGINE_DIR}"}}\n'
            'mkdir -p "$out"\n'
            'out=$(cd "$out" && pwd -P)\n'
            f'case "$out/" in\n  "$bundle/{ENGINE_DIR}/"*) ;;\n'
            f'  "$bundle/"*) echo "build_engine.sh: $out is inside the bundle; use {ENGINE_DIR}/ or a folder outside it '
            '(optkit verify refuses other new files)" >&2; exit 2 ;;\nesac\n'
            'cd "$bundle/model"\n'
            + " ".join(words) + "\n")


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
             (f"- ECE {m['ece']:.4f} → {m['ece_recalibrated']:.4f} after temperature T = {m['temperature']:.3f} (fitted on validation)"
              if (m.get("temperature_fit") or {}).get("applied", True) else
              f"- ECE {m['ece']:.4f}; no temperature scaling, T = 1{_temperature_why(m)}"), "",
             "## Speed and size", "",
             f"- p50 {m['latency_p50_ms']} ms, p95 {m['latency_p95_ms']} ms, p99 {m['latency_p99_ms']} ms — {row['measured_on']['label']}",
             f"- size {m['size_mb']} MB on disk (MB = 10^6 bytes)", "",
             "## How to use", "",
             "- Inputs: " + ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in manifest["io"]["inputs"]),
             f"- Preprocessing: {manifest['preprocessing']}",
             f"- Confidence: {manifest['confidence']['probabilities']} with T = {m['temperature']:.4f}; {manifest['confidence']['decision']}",
             "- Check the bundle: `optkit verify .` (manifest digest, hashes, fixtures; `--public-key K.pub` if signed)", ""]
    return "\n".join(lines)


def _parents(rel: str) -> set[str]:
    parts = rel.split("/")[:-1]
    return {"/".join(parts[: i + 1]) for i in range(len(parts))}


def check_integrity(folder: str | Path) -> tuple[Manifest, dict]:
    """Everything verify proves without running the model; raises GateFailed naming the first problem.

    Rules, in order: the folder is a directory; no symlink or special file anywhere in it; manifest.json parses,
    matches its own digest and the schema; every path it names is listed in `sha256`; every listed file exists and
    matches; nothing else is there — no unlisted file (hidden ones included) and no unlisted directory (an empty
    folder is an entry too). Allowed unlisted: manifest.json, model.sig (the signature cannot hash itself), and
    engine/ in a bundle with a `build` section (engines are built on the device, after the bundle was sealed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GateFailed(f"{show(folder)}: not a folder; pass the bundle folder written by optkit compress")
    files, dirs = walk(folder)
    manifest, _ = load_manifest(folder)
    listed = manifest.sha256
    mpath = folder / MANIFEST
    reserved = {MANIFEST, SIGNATURE}
    engine_dir = manifest.build.engine_dir if manifest.build else None
    for rel in listed:
        if rel in reserved or rel == ENGINE_DIR or rel.startswith(ENGINE_DIR + "/"):
            raise GateFailed(f"{show(mpath)}: lists {show(rel)}, a name the bundle reserves; re-create the bundle")
    named = [("model.file", manifest.model.file), *(("model.files", f) for f in manifest.model.files),
             ("fixtures.inputs", manifest.fixtures.inputs), ("fixtures.expected", manifest.fixtures.expected)]
    if manifest.text:
        named += [("fixtures.texts", manifest.fixtures.texts), *(("text.tokenizer_files", f) for f in manifest.text.tokenizer_files)]
    if manifest.build:
        named.append(("build.script", manifest.build.script))
        if engine_dir != ENGINE_DIR:
            raise GateFailed(f"{show(mpath)}: build.engine_dir must be {ENGINE_DIR!r}; re-create the bundle")
    for field, rel in named:
        if rel not in listed:
            raise GateFailed(f"{show(mpath)}: {field} {show(rel)} has no sha256 entry; re-create the bundle")
    for rel, sha in sorted(listed.items()):
        p = folder / rel
        if rel not in files:
            raise GateFailed(f"{show(p)}: listed in the manifest but missing; the bundle is incomplete")
        if file_sha256(p) != sha:
            raise GateFailed(f"{show(p)}: sha256 does not match the manifest; the file was changed or damaged, "
                             "re-create the bundle")

    def engine_output(rel: str) -> bool:
        return engine_dir is not None and (rel == engine_dir or rel.startswith(engine_dir + "/"))

    extra = sorted(f for f in files - set(listed) - reserved if not engine_output(f))
    if extra:
        raise GateFailed(f"{show(folder / extra[0])}: not listed in the manifest; remove it or re-create the bundle")
    expected_dirs = set().union(*(_parents(r) for r in listed)) if listed else set()
    stray = sorted(d for d in dirs - expected_dirs if not engine_output(d))
    if stray:
        raise GateFailed(f"{show(folder / stray[0])}: a folder the manifest does not list; remove it or re-create "
                         "the bundle")
    info = {"files_checked": len(listed), "signed": SIGNATURE in files,
            "engine_files": sorted(f for f in files if engine_output(f))}
    return manifest, info


