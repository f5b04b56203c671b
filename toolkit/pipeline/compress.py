"""compress = plan -> run -> evaluate -> select -> report + bundle, inside a staging folder.

Library entry point: `toolkit.compress(...)` does exactly what `optkit compress` does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from toolkit.core import cache
from toolkit.core.candidate import Candidate
from toolkit.intake.data import Dataset, file_sha256, load_npz
from toolkit.pipeline.devices import DeviceProfile, load_device
from toolkit.core.errors import GateFailed, OptkitError
from toolkit.passes import PassContext, load_all
from toolkit.pipeline.recipes import BASELINE, Recipe, Step, load_recipe


class Progress:
    """Silent progress; the CLI passes a rich implementation."""

    def stage(self, name: str, total: int) -> None: ...
    def advance(self, label: str) -> None: ...
    def log(self, message: str) -> None: ...
    def close(self) -> None: ...


@dataclasses.dataclass
class PlannedStep:
    step: Step
    status: str          # "run" | "skip" | "alias" (uses its source as is) | later "done" / "failed" / "cached"
    reason: str = ""
    backend: str = ""
    precision: str | None = None


@dataclasses.dataclass
class Plan:
    steps: list[PlannedStep]
    baseline_format: str
    target_note: str

    def to_list(self) -> list[dict]:
        return [{"id": p.step.id, "pass": p.step.pass_name, "from": p.step.source, "status": p.status,
                 "reason": p.reason, "backend": p.backend, "precision": p.precision} for p in self.steps]


def deployable(backend: str, device: DeviceProfile) -> bool:
    """Can the target run an artifact made for this backend? ONNX feeds TensorRT on targets that build engines."""
    return backend in device.backends or (backend == "onnxruntime" and "tensorrt" in device.backends)


def plan(recipe: Recipe, device: DeviceProfile, baseline_format: str, has_train: bool) -> Plan:
    """Which steps run on this host, which are skipped and why (decided before any compute)."""
    from toolkit.backends import availability, deploy_format

    passes = load_all()
    formats = {BASELINE: baseline_format}
    precisions = {BASELINE: "fp32"}
    planned: list[PlannedStep] = []
    skipped: set[str] = set()
    usable_backends = set(device.backends) | {device.stand_in.backend, "torch"}
    avail_cache: dict[str, tuple[bool, str]] = {}
    for step in recipe.steps:
        spec = passes[step.pass_name]
        opts = recipe.step_options(step)
        out_precision = spec.output_precision(opts) or precisions.get(step.source, "fp32")
        p = PlannedStep(step, "run", backend=spec.backend, precision=out_precision)
        src_format = formats.get(step.source)
        if step.source in skipped:
            p.status, p.reason = "skip", f"its input step '{step.source}' is skipped"
        elif step.pass_name == "export_onnx" and src_format == "onnx":
            p.status, p.reason = "alias", "the input is already ONNX; the baseline is used as is"
        elif src_format not in spec.accepts:
            p.status, p.reason = "skip", f"{step.pass_name} takes {'/'.join(spec.accepts)} models, its input is {src_format}"
        elif spec.needs_training_data and not has_train:
            p.status, p.reason = "skip", "needs a train split: add split=['train',...] rows to the .npz"
        elif spec.backend not in usable_backends:
            p.status, p.reason = "skip", f"{device.name} does not run {spec.backend} (backends: {', '.join(device.backends)})"
        elif out_precision.replace("mixed-", "").replace("-dynamic", "") not in device.precisions and not out_precision.startswith("mixed"):
            p.status, p.reason = "skip", f"{device.name} does not support {out_precision} (precisions: {', '.join(device.precisions)})"
        else:
            if spec.backend not in avail_cache:
                avail_cache[spec.backend] = availability(spec.backend)
            ok, why = avail_cache[spec.backend]
            if not ok:
                p.status, p.reason = "skip", why
            elif spec.precheck is not None and (why_not := spec.precheck(opts)):
                p.status, p.reason = "skip", why_not
        if p.status == "skip":
            skipped.add(step.id)
        formats[step.id] = src_format if p.status == "alias" else deploy_format(spec.backend)
        precisions[step.id] = out_precision if p.status != "alias" else precisions.get(step.source, "fp32")
        planned.append(p)
    target = [b for b in device.target_only_backends]
    note = ""
    if target:
        ok, why = availability("tensorrt")
        note = ("TensorRT engines are built on this host" if ok else
                f"TensorRT engines are built on the target ({why}); the fp16 and int8 QDQ ONNX files are "
                f"measured here with {device.stand_in.backend} as a stand-in and the bundle holds the build command")
    return Plan(planned, baseline_format, note)


# --------------------------------------------------------------------------- pass cache

def _artifact_hash(c: Candidate) -> str:
    return cache.key(*[(p.name, file_sha256(p)) for p in c.files()])


STEP_RECORD = ".optkit-step.json"   # written next to a finished pass's files: what --resume trusts


def _write_entry(folder: Path, made: Candidate, key: str) -> None:
    """Record a finished artifact: its fields, the key it was built for, each file's sha256."""
    from toolkit.core.host import library_versions

    fields = dataclasses.asdict(made)
    fields["path"] = made.path.name
    files = {p.name: file_sha256(p) for p in made.files()}
    meta = {"key": key, "versions": library_versions(), "candidate": fields, "files": files}
    (folder / STEP_RECORD).write_text(json.dumps(meta, default=str))


def _read_entry(folder: Path, key: str, into: Path) -> Candidate:
    """A recorded artifact, verified (key, library versions, every file's hash); raises ValueError otherwise."""
    from toolkit.core.host import library_versions

    try:
        meta = json.loads((folder / STEP_RECORD).read_text())
        if meta["key"] != key:
            raise ValueError("built from other inputs or settings")
        if meta["versions"] != json.loads(json.dumps(library_versions())):
            raise ValueError("made with other library versions")
        for name, sha in meta["files"].items():
            if file_sha256(folder / name) != sha:
                raise ValueError(f"{name} does not match its recorded sha256")
        if folder != into:
            for name in meta["files"]:
                shutil.copy2(folder / name, into / name)
        fields = dict(meta["candidate"])
        fields["path"] = into / fields["path"]
        fields["lineage"] = tuple(fields["lineage"])
        fields.pop("trust_checkpoint", None)  # a record on disk never grants trust; run_cached takes the parent's
        return Candidate(**fields)
    except (KeyError, OSError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable record ({type(exc).__name__})") from exc


def run_cached(spec, ctx: PassContext, parent: Candidate, opts, cid: str, cache_parts: list, log,
               resume: bool = False) -> tuple[Candidate, str]:
    """Run a pass, or reuse a verified earlier result: this run's own (--resume), then the shared cache.

    Both are keyed by (input artifact hash, pass, options, data, seed, library versions); an entry that
    is corrupt or foreign is said, evicted and rebuilt, never trusted.
    """
    from toolkit.core.host import library_versions

    key = cache.key(_artifact_hash(parent), spec.name, opts.model_dump(), library_versions(), *cache_parts)
    folder = ctx.folder(cid)
    if resume and (folder / STEP_RECORD).exists():
        try:
            return dataclasses.replace(_read_entry(folder, key, folder), trust_checkpoint=parent.trust_checkpoint), "resumed"
        except ValueError as exc:
            log(f"[{cid}] the interrupted run's result cannot be reused ({exc}); rebuilding")
    for stale in folder.iterdir():  # start the step from an empty folder
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    entry = cache.cache_dir() / "passes" / key
    if (entry / STEP_RECORD).exists():
        try:
            made = dataclasses.replace(_read_entry(entry, key, folder), trust_checkpoint=parent.trust_checkpoint)
            _write_entry(folder, made, key)
            return made, "cached"
        except ValueError as exc:
            log(f"[{cid}] cache entry {entry.name} is corrupt or foreign ({exc}); evicted and rebuilt")
            shutil.rmtree(entry, ignore_errors=True)
    made = spec.fn(ctx, parent, opts, cid)
    _write_entry(folder, made, key)
    try:  # publish to the shared cache atomically; an unwritable cache never fails a run
        tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for p in made.files():
            shutil.copy2(p, tmp / p.name)
        shutil.copy2(folder / STEP_RECORD, tmp / STEP_RECORD)
        if entry.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(entry)
    except OSError:
        pass
    return made, "built"


def fault_point(name: str) -> None:
    """Fault injection for the crash/resume tests: OPTKIT_FAULT_AT=<name> kills the process here, like kill -9."""
    if os.environ.get("OPTKIT_FAULT_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- compress

@dataclasses.dataclass
class RunResult:
    run_dir: Path
    report: dict

    @property
    def selected(self) -> str | None:
        return self.report.get("selected")


def _load_data(data: str | Path | None, checkpoint, seed: int) -> Dataset:
    """The data, checked completely; called before the checkpoint is loaded so a data mistake fails first."""
    from toolkit.core.errors import DataError

    if data is not None:
        return load_npz(Path(data), seed=seed)
    if checkpoint is None or str(checkpoint).startswith("builtin:"):
        from toolkit.intake.demo import digits_dataset

        return digits_dataset()
    raise DataError(f"{checkpoint}: no data given; pass --data data.npz (y = labels, inputs named as the model's inputs)")


def compress(checkpoint: str | Path | None = None, *, device: str = "jetson-orin-nano", recipe: str | Path | None = None,
             data: str | Path | None = None, out: str | Path | None = None, model_factory: str | None = None,
             trust_checkpoint: bool = False, seed: int | None = None, overwrite: bool = False,
             threshold_metric: str = "f1", progress: Progress | None = None, resume: bool = False,
             output: str | None = None) -> RunResult:
    from toolkit.intake import checkpoints as intake
    from toolkit.output.staging import check_target, staged

    progress = progress or Progress()
    t_start = time.time()
    timings: dict[str, float] = {}
    # 1. validate everything at the edge, before compute
    prof = load_device(device)
    rec = load_recipe(recipe or prof.default_recipe)
    seed = rec.seed if seed is None else seed
    from toolkit.core.bounds import check_seed

    check_seed(seed, "--seed")
    from toolkit.metrics.thresholds import parse_metric

    try:
        parse_metric(threshold_metric)
    except ValueError as exc:
        from toolkit.core.errors import ConfigError

        raise ConfigError(f"--threshold-metric {threshold_metric}: {exc}") from exc
    out_path = Path(out) if out else None
    if out_path is not None:
        check_target(out_path, overwrite)
    if checkpoint is not None and not str(checkpoint).startswith("builtin:") and not Path(checkpoint).exists():
        from toolkit.core.errors import CheckpointError  # existence only: cheap, and said before the data's problems

        raise CheckpointError(f"{checkpoint}: checkpoint not found; check the path")
    dataset = _load_data(data, checkpoint, seed)  # before the checkpoint is opened: a missing or bad --data fails first
    loaded = intake.load(checkpoint, factory=model_factory, trust_checkpoint=trust_checkpoint)
    known_notes = len(loaded.notes)
    loaded, dataset, io = _check_model_fits(loaded, dataset, output)
    for note in (*dataset.notes, *loaded.notes[known_notes:]):  # what the checks found: said once, kept in the report
        progress.log(f"note: {note}")
    timings["intake_s"] = round(time.time() - t_start, 2)
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{prof.name}-{loaded.sha256[:8]}"
    out_path = out_path or Path("runs") / run_id
    the_plan = plan(rec, prof, "onnx" if loaded.kind == "onnx" else "torch", dataset.train is not None)

    with staged(out_path, overwrite, resume=resume, log=progress.log, resumable=True) as stage:
        if (why := cache.cache_problem()) is not None:  # an unusable cache never fails a run: said, then skipped
            progress.log(f"cache not used: {why}; this run goes on without it (set OPTKIT_CACHE_DIR to a writable folder)")
        cand_dir = stage / "candidates"
        cand_dir.mkdir(exist_ok=True)
        from toolkit.pipeline.evaluate import effective_threads

        ctx = PassContext(workdir=cand_dir, data=dataset, io=io, device=prof, seed=seed,
                          calibration_size=min(rec.calibration_size, len(dataset.val)), torch_module=loaded.module,
                          threads=effective_threads(prof), log=progress.log, tolerance=rec.search.tolerance)
        # 2. baseline + passes
        t0 = time.time()
        candidates: dict[str, Candidate] = {}
        baseline = _baseline(ctx, loaded)
        candidates[BASELINE] = baseline
        fault_point("baseline")
        ctx.candidates = candidates
        runnable = [p for p in the_plan.steps if p.status == "run"]
        progress.stage("passes", len(runnable))
        passes = load_all()
        data_key = [dataset.sha256, seed, ctx.calibration_size, rec.search.tolerance]
        for p in the_plan.steps:
            if p.status == "alias":
                candidates[p.step.id] = candidates[p.step.source]
                continue
            if p.status != "run":
                continue
            parent = candidates.get(p.step.source)
            if parent is None:
                p.status, p.reason = "skip", f"its input step '{p.step.source}' failed"
                progress.advance(p.step.id)
                continue
            t_step = time.time()
            try:
                made, how = run_cached(passes[p.step.pass_name], ctx, parent, rec.step_options(p.step), p.step.id,
                                       data_key, progress.log, resume=resume)
                candidates[p.step.id] = made
                p.status = how
            except OptkitError as exc:
                p.status, p.reason = "failed", str(exc)
            except Exception as exc:  # a library failing inside one pass must not sink the run: record it
                p.status, p.reason = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            if p.status == "failed":
                shutil.rmtree(cand_dir / p.step.id, ignore_errors=True)  # no half-made candidate folders
                progress.log(f"[{p.step.id}] failed: {p.reason}")
            p.reason = p.reason or f"{time.time() - t_step:.1f} s"
            fault_point(f"pass:{p.step.id}")
            progress.advance(p.step.id)
        timings["passes_s"] = round(time.time() - t0, 2)

        # 3. evaluate every distinct candidate
        t0 = time.time()
        unique = {c.id: c for c in candidates.values()}
        report_rows, outputs, eval_failures = _evaluate_all(list(unique.values()), baseline, dataset, prof, seed,
                                                            threshold_metric, progress, resume)
        _add_target_estimates(report_rows, unique, prof)
        timings["evaluate_s"] = round(time.time() - t0, 2)

        # 4. select
        from toolkit.pipeline.select import Scored, checks_for, select

        gates = _merged_gates(prof, rec)
        base_metrics = next(r["metrics"] for r in report_rows if r["id"] == baseline.id)
        scored = []
        for r in report_rows:
            checks = checks_for(r["metrics"], base_metrics, prof.budgets, gates, r["id"] == baseline.id)
            if not deployable(r["backend"], prof):
                checks.append({"name": "deployable", "ok": False, "value": r["backend"], "limit": prof.backends,
                               "reason": f"{prof.name} does not run {r['backend']} artifacts (reference only)"})
            scored.append(Scored(r["id"], r["precision"], r["metrics"], checks))
        speed_key = "latency_p95_ms" if prof.host_is_device() else "target_estimate_ms"
        selected, why, rule = select(scored, prof.selection.latency_tie_fraction, speed_key)
        by_id = {s.id: s for s in scored}
        for r in report_rows:
            s = by_id[r["id"]]
            r["checks"], r["eligible"], r["on_front"] = s.checks, s.eligible, s.on_front
            r["why_not"] = why.get(r["id"], "") if r["id"] != selected else ""

        # 5. report + bundle (from the same result object)
        report = _report_object(run_id, loaded, dataset, prof, rec, the_plan, report_rows, selected, rule, io,
                                baseline.id, seed, timings, threshold_metric)
        from toolkit.output import bundle as bundle_mod
        from toolkit.output import report as report_mod

        t0 = time.time()
        for partial in (stage / "bundle", stage / "report"):  # an interrupted run may have left these half-written
            shutil.rmtree(partial, ignore_errors=True)
        report["target_builds"] = bundle_mod.target_builds(report, unique, prof, io)
        if selected is not None:
            build = next((b for b in report["target_builds"] if b["candidate"] == selected), None)
            report["bundle"] = bundle_mod.write_bundle(stage / "bundle", unique[selected], report, dataset,
                                                       outputs[selected], io, build)
        report["evaluation_failures"] = eval_failures
        fault_point("bundle")
        report_mod.write_report(stage / "report", report, dataset, outputs)
        fault_point("report")
        timings["report_s"] = round(time.time() - t0, 2)
        timings["total_s"] = round(time.time() - t_start, 2)
        _write_run_json(stage, report, timings, loaded, dataset, rec, prof, seed)
        report["timings"] = timings
        (stage / "report" / "report.json").write_text(json.dumps(report, indent=2, default=str))
        for record in cand_dir.glob("*/.optkit-*"):  # resume bookkeeping is not part of the result
            record.unlink()
        fault_point("promote")
    result = RunResult(out_path, report)
    if selected is None:
        raise GateFailed(f"{out_path}: no candidate met {prof.name}'s budgets and gates; see {out_path}/report/report.md "
                         "for each candidate's failures, or relax the budgets in the device profile")
    return result


def _in_forward_order(loaded, dataset: Dataset) -> dict:
    """The data's inputs ordered as the model's forward() names them; several inputs must match those names.

    A single input may have any name (it becomes the I/O contract's name); with several, feeding by
    position would silently swap e.g. input_ids and attention_mask, so the names must match.
    """
    import inspect

    from toolkit.core.errors import DataError

    inputs = dataset.val.inputs
    if loaded.kind != "torch" or len(inputs) < 2:
        return inputs
    try:
        params = [p.name for p in inspect.signature(loaded.module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return inputs
    if not params:  # forward(*args): nothing to check against
        return inputs
    missing = [n for n in inputs if n not in params]
    if missing:
        raise DataError(f"{dataset.name}: arrays {missing} are not inputs of the model's forward({', '.join(params)}); "
                        "name the .npz arrays after the forward() arguments")
    return {n: inputs[n] for n in params if n in inputs}


def _check_model_fits(loaded, dataset: Dataset, output: str | None = None):
    """(loaded, dataset, io) once the checkpoint is checked against the data, before any slow step.

    ONNX inputs: names, ranks, fixed dims, dtypes (cast where exact); torch: forward() names. Then a probe
    of validation rows checks the outputs (which one, probabilities, finite, width): toolkit.intake.model_check.
    """
    from toolkit.intake import model_check
    from toolkit.core import modelio

    if loaded.kind == "onnx":
        dataset = model_check.fit_onnx_inputs(loaded.onnx_path, dataset)
    io = modelio.from_data(_in_forward_order(loaded, dataset), dataset.n_classes)
    loaded, _ = model_check.fit_outputs(loaded, dataset, io, output)
    return loaded, dataset, io


def _baseline(ctx: PassContext, loaded) -> Candidate:
    if loaded.kind == "onnx":
        folder = ctx.folder("onnx-fp32")
        path = folder / "model.onnx"
        from toolkit.intake.model_check import write_onnx_baseline

        write_onnx_baseline(loaded, path)  # with its external data, the logits output only
        return Candidate(id="onnx-fp32", path=path, format="onnx", precision="fp32", backend="onnxruntime",
                         lineage=("baseline",))
    from toolkit.passes.export import save_baseline

    return dataclasses.replace(save_baseline(ctx, loaded.module), trust_checkpoint=loaded.trusted)


EVAL_RECORD = ".optkit-eval.json"


def _evaluate_all(cands: list[Candidate], baseline: Candidate, dataset: Dataset, prof: DeviceProfile, seed: int,
                  threshold_metric: str, progress: Progress, resume: bool = False) -> tuple[list[dict], dict, list[dict]]:
    """Evaluate the baseline first (parity reference), then the rest; with resume, reuse recorded evaluations."""
    import numpy as np

    from toolkit.pipeline.evaluate import Outputs, evaluate

    progress.stage("evaluate", len(cands))
    rows, outputs, failures = [], {}, []
    base_out = None
    for c in [baseline] + [c for c in cands if c.id != baseline.id]:
        folder = c.path.parent
        key = cache.key(_artifact_hash(c), prof.bench.model_dump(), threshold_metric, seed, dataset.sha256,
                        base_out.test.tobytes().hex()[:64] if base_out is not None else None)
        record = None
        if resume and (folder / EVAL_RECORD).exists():
            try:
                saved = json.loads((folder / EVAL_RECORD).read_text())
                if saved["key"] == key:
                    with np.load(folder / ".optkit-outputs.npz") as z:
                        record = (saved["metrics"], saved["measured_on"], Outputs(val=z["val"], test=z["test"]))
            except (OSError, KeyError, ValueError):
                record = None
        try:
            metrics, measured_on, out = record or evaluate(c, dataset, prof, base_out, threshold_metric, seed)
        except Exception as exc:  # one candidate a runtime cannot execute must not sink the run: say it
            reason = str(exc) if isinstance(exc, OptkitError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            progress.log(f"[{c.id}] cannot be evaluated here: {reason}")
            failures.append({"id": c.id, "reason": reason})
            progress.advance(c.id)
            if c.id == baseline.id:
                raise
            continue
        if record is None:
            np.savez(folder / ".optkit-outputs.npz", val=out.val, test=out.test)
            (folder / EVAL_RECORD).write_text(json.dumps({"key": key, "metrics": metrics, "measured_on": measured_on},
                                                         default=str))
        fault_point(f"evaluate:{c.id}")
        if c.id == baseline.id:
            base_out = out
        outputs[c.id] = out
        rows.append({"id": c.id, "format": c.format, "precision": c.precision, "backend": c.backend, "engine": c.engine,
                     "lineage": list(c.lineage), "path": f"candidates/{c.id}/{c.path.name}", "info": c.info,
                     "runtime_options": c.runtime_options, "metrics": metrics, "measured_on": measured_on})
        progress.advance(c.id)
    return rows, outputs, failures


def _add_target_estimates(rows: list[dict], cands: dict[str, Candidate], prof: DeviceProfile) -> None:
    """Roofline lower bounds for the target from its public specs: labelled estimates, kept apart from measurements."""
    from toolkit.pipeline.estimates import estimate_for_device

    for row in rows:
        c = cands[row["id"]]
        if c.format != "onnx":
            continue
        precision = "int8" if "int8" in c.precision else c.precision
        try:
            est = estimate_for_device(c.path, precision, prof, dim_values={"sequence": 128})
        except OptkitError as exc:
            est = {"kind": "estimate (roofline lower bound)", "estimate_ms": None, "reason": str(exc)}
        row["target_estimate"] = {k: est.get(k) for k in ("kind", "estimate_ms", "bound", "assumptions", "reason",
                                                         "compute_bound_ms", "memory_bound_ms")}
        row["target_estimate"]["device"] = prof.name
        row["metrics"]["target_estimate_ms"] = est.get("estimate_ms")


def _merged_gates(prof: DeviceProfile, rec: Recipe):
    if rec.gates is None:
        return prof.gates
    return prof.gates.model_copy(update=rec.gates.model_dump(exclude_unset=True))


def _report_object(run_id, loaded, dataset, prof, rec, the_plan, rows, selected, rule, io, baseline_id, seed, timings,
                   threshold_metric) -> dict[str, Any]:
    from toolkit.core.host import host, library_versions

    return {
        "run_id": run_id,
        "selected": selected,
        "baseline": baseline_id,
        "selection": {"rule": rule, "objectives": ["size_mb (min)", "latency_p95_ms (min)", "macro_f1 (max)"]},
        "model": {"source": loaded.source, "sha256": loaded.sha256, "kind": loaded.kind, "notes": loaded.notes,
                  "outputs": "probabilities (log(p) used as logits)" if loaded.probabilities else "logits"},
        "data": {"name": dataset.name, "sha256": dataset.sha256, "labels": dataset.labels, "n_val": len(dataset.val),
                 "notes": list(dataset.notes),
                 "n_test": len(dataset.test), "n_train": len(dataset.train) if dataset.train else 0,
                 "preprocessing": dataset.preprocessing},
        "device": prof.model_dump(),
        "recipe": rec.model_dump(by_alias=True),
        "plan": the_plan.to_list(),
        "target_note": the_plan.target_note,
        "host_is_device": prof.host_is_device(),
        "io": io.to_dict(),
        "host": host(),
        "versions": library_versions(),
        "seed": seed,
        "threshold_metric": threshold_metric,
        "candidates": rows,
    }


def _write_run_json(stage: Path, report: dict, timings: dict, loaded, dataset, rec, prof, seed) -> None:
    run = {"run_id": report["run_id"], "inputs": {"checkpoint": loaded.source, "checkpoint_sha256": loaded.sha256,
                                                   "data": dataset.name, "data_sha256": dataset.sha256},
           "device": prof.name, "recipe": rec.name, "seed": seed, "versions": report["versions"], "host": report["host"],
           "timings": timings, "selected": report["selected"]}
    (stage / "run.json").write_text(json.dumps(run, indent=2, default=str))
