"""compress = plan -> run -> evaluate -> select -> report + bundle, inside a staging folder.

Library entry point: `toolkit.compress(...)` does exactly what `optkit compress` does.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from toolkit.core import cache
from toolkit.core.candidate import Candidate
from toolkit.core.result import RunReport, RunResult
from toolkit.intake.data import Dataset, load_npz
from toolkit.pipeline.devices import DeviceProfile, load_device
from toolkit.core.errors import GateFailed
from toolkit.passes import PassContext
from toolkit.pipeline.plan import deployable, plan
from toolkit.pipeline.recipes import BASELINE, Recipe, load_recipe
from toolkit.pipeline.run import STEP_RECORD, Progress, evaluate_all, fault_point, run_passes
from toolkit.pipeline.targets import add_target_estimates, target_builds


# --------------------------------------------------------------------------- pass cache


# --------------------------------------------------------------------------- compress

def _load_data(data: str | Path | None, checkpoint, seed: int, trust: bool = False, text_column: str = "text",
               label_column: str = "label", tokenizer: str | Path | None = None) -> Dataset:
    """The data, checked completely; called before the checkpoint is loaded so a data mistake fails first."""
    from toolkit.core.errors import DataError
    from toolkit.intake import text

    if data is not None and text.is_text_file(data):  # raw text: a tokenizer (not the weights) is read (intake/text.py)
        return text.load_for_checkpoint(Path(data), checkpoint, trust=trust, text_column=text_column,
                                        label_column=label_column, seed=seed, tokenizer=tokenizer)
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
             no_cache: bool = False, reference_only=None,
             measure_on: str | None = None, ssh_key: str | Path | None = None, known_hosts: str | Path | None = None,
             output: str | None = None, text_column: str = "text", label_column: str = "label",
             build_only: bool = False, tokenizer: str | Path | None = None) -> RunResult | dict[str, Any]:
    from toolkit.intake import checkpoints as intake
    from toolkit.output.staging import check_target, staged

    # no_cache: every pass is built afresh (the shared pass cache is neither read nor written).
    # reference_only: fn(report row) -> reason or "": candidates evaluated for comparison, never selected.
    # build_only: a sweep's build phase (pipeline/sweep.py): passes and every candidate's accuracy outputs go into the
    # shared cache, nothing is timed, selected or reported; returns {step_keys, outputs_keys, candidates, failures}.
    progress = progress or Progress()
    t_start = time.time()
    timings: dict[str, float] = {}
    # 1. validate everything at the edge, before compute
    from toolkit.intake import demo_text

    if checkpoint is not None and str(checkpoint) == demo_text.DEMO:  # the text demo, prepared once (optkit prepare)
        demo_model, demo_reviews = demo_text.resolve()
        checkpoint, data = demo_model, (demo_reviews if data is None else data)
    prof = load_device(device)
    from toolkit.intake.hf import TRANSFORMER_RECIPE, transformer_reason

    family = None if recipe else transformer_reason(checkpoint)  # the family's recipe, unless the user chose one
    rec = load_recipe(recipe or (TRANSFORMER_RECIPE if family else prof.default_recipe))
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
    target = None
    if measure_on is not None:  # a bad ssh:// address or key path fails here, before any compute
        from toolkit.pipeline.remote import parse_target

        target = parse_target(measure_on, ssh_key, known_hosts, flag="--measure-on")
    if checkpoint is not None and not str(checkpoint).startswith("builtin:") and not Path(checkpoint).exists():
        from toolkit.core.errors import CheckpointError  # existence only: cheap, and said before the data's problems

        raise CheckpointError(f"{checkpoint}: checkpoint not found; check the path")
    dataset = _load_data(data, checkpoint, seed, trust_checkpoint, text_column, label_column, tokenizer)  # before the checkpoint is opened: a missing or bad --data fails first
    loaded = intake.load(checkpoint, factory=model_factory, trust_checkpoint=trust_checkpoint)
    known_notes = len(loaded.notes)
    if family:
        loaded.notes.append(f"recipe '{TRANSFORMER_RECIPE}' chosen for you: {family} (transformer fusion, dynamic int8, "
                            "NNCF transformer PTQ, minmax calibration only); pass --recipe to choose another")
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
                          threads=effective_threads(prof), log=progress.log, tolerance=rec.search.tolerance,
                          source=loaded.source)
        # 2. baseline + passes
        t0 = time.time()
        candidates: dict[str, Candidate] = {}
        progress.step(f"baseline: {loaded.kind} fp32 reference")
        baseline = _baseline(ctx, loaded)
        candidates[BASELINE] = baseline
        fault_point("baseline")
        ctx.candidates = candidates
        data_key = [dataset.sha256, seed, ctx.calibration_size, rec.search.tolerance]
        run_passes(the_plan, ctx, rec, candidates, data_key, progress, resume, use_cache=not no_cache)
        timings["passes_s"] = round(time.time() - t0, 2)
        if build_only:
            from toolkit.pipeline.evaluate import build_outputs

            built = build_outputs(list({c.id: c for c in candidates.values()}.values()), dataset, prof, progress.log,
                                  use_cache=not no_cache)
            built["step_keys"] = sorted(json.loads(r.read_text())["key"] for r in cand_dir.glob(f"*/{STEP_RECORD}"))
            built["plan"] = [{"id": p.step.id, "status": p.status, "reason": p.reason} for p in the_plan.steps]
            return built

        # 3. evaluate every distinct candidate
        t0 = time.time()
        unique = {c.id: c for c in candidates.values()}
        report_rows, outputs, eval_failures = evaluate_all(list(unique.values()), baseline, dataset, prof, seed,
                                                            threshold_metric, progress, resume,
                                                            use_cache=not no_cache)
        from toolkit.core.shapes import from_arrays

        run_shapes = from_arrays(dataset.test.inputs)  # core/shapes.py: the data's widths, said in every build/estimate
        add_target_estimates(report_rows, unique, prof, shapes=run_shapes)
        not_on_device: dict[str, str] = {}
        from toolkit.pipeline.retime import contenders, retime_contenders

        if target is None and (close := contenders(report_rows)):  # the host's target numbers rank: time the close
            progress.stage("side-by-side timing", 1)                 # ones again round-robin (pipeline/retime.py)
            progress.step(f"the {len(close)} fastest candidates, round-robin")
            retime_contenders(report_rows, unique, dataset, prof, ctx.threads, progress.log)
            progress.advance("retime")
        if target is not None:  # latency, memory and parity measured on the device itself (pipeline/remote_measure.py)
            from toolkit.pipeline.remote_measure import measure_candidates_on

            not_on_device = measure_candidates_on(target, report_rows, unique, outputs, dataset, prof, progress.log)
        timings["evaluate_s"] = round(time.time() - t0, 2)

        # 4. select
        from toolkit.pipeline.select import Scored, checks_for, select, speed_key_for

        gates = _merged_gates(prof, rec)
        base_metrics = next(r["metrics"] for r in report_rows if r["id"] == baseline.id)
        scored = []
        for r in report_rows:
            checks = checks_for(r["metrics"], base_metrics, prof.budgets, gates, r["id"] == baseline.id,
                                measured_kind=r["measured_on"]["kind"],
                                budgets_on_estimate=prof.selection.budgets_on_estimate, device=prof.name,
                                contention=r["measured_on"].get("contention_reason", ""))
            if not deployable(r["backend"], prof):
                checks.append({"name": "deployable", "ok": False, "status": "fail", "value": r["backend"],
                               "limit": prof.backends, "reason": f"{prof.name} does not run {r['backend']} artifacts (reference only)"})
            if reference_only is not None and (why_ref := reference_only(r)):
                checks.append({"name": "reference", "ok": False, "status": "fail", "value": r["id"], "limit": None,
                               "reason": why_ref})
            if r["id"] in not_on_device:  # --measure-on: only numbers from the device rank; a stand-in's never do
                checks.append({"name": "measured_on_target", "ok": False, "status": "fail", "value": None,
                               "limit": target.address, "reason": f"not measured on {target.address}: {not_on_device[r['id']]}"})
            scored.append(Scored(r["id"], r["precision"], r["metrics"], checks))
        speed = speed_key_for(prof.host_is_device() or target is not None)
        selected, why, rule = select(scored, prof.selection.latency_tie_fraction, speed.field)
        by_id = {s.id: s for s in scored}
        for r in report_rows:
            s = by_id[r["id"]]
            r["checks"], r["eligible"], r["on_front"] = s.checks, s.eligible, s.on_front
            r["why_not"] = why.get(r["id"], "") if r["id"] != selected else ""

        # 5. report + bundle (from the same result object)
        report = _report_object(run_id, loaded, dataset, prof, rec, the_plan, report_rows, selected, rule, io,
                                baseline.id, seed, timings, threshold_metric)
        report["selection"].update({"speed_key": speed.field, "speed_kind": speed.kind, "speed_label": speed.label,
                                    "objectives": ["size_mb (min)", f"{speed.field} (min)", "macro_f1 (max)"]})
        from toolkit.output import bundle as bundle_mod
        from toolkit.output import report as report_mod

        t0 = time.time()
        for partial in (stage / "bundle", stage / "report"):  # an interrupted run may have left these half-written
            shutil.rmtree(partial, ignore_errors=True)
        report["target_builds"] = target_builds(report, unique, prof, io, shapes=run_shapes)
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
        typed = RunReport.model_validate(report)  # the report.json schema (toolkit.core.result), checked on every run
        (stage / "report" / "report.json").write_text(typed.to_json())
        for record in cand_dir.glob("*/.optkit-*"):  # resume bookkeeping is not part of the result
            record.unlink()
        fault_point("promote")
    result = RunResult(out_path, typed)
    if selected is None:
        failed = GateFailed(f"{out_path}: no candidate met {prof.name}'s budgets and gates, so nothing was bundled; see "
                            f"{out_path}/report/report.md for each candidate's failures, or relax the budgets in the device profile")
        failed.result = result  # the report was written: the CLI still shows its table and why
        raise failed
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
    io = modelio.from_data(_in_forward_order(loaded, dataset), dataset.n_classes, module=loaded.module)  # a .pt2 keeps its dim ranges
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
