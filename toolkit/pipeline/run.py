"""run: the passes (through a content-addressed cache, resumable from verified step records) and the
evaluation of every candidate (resumable from verified evaluation records)."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import time
from pathlib import Path

from toolkit.core import cache
from toolkit.core.artifacts import artifact_sha256, file_sha256
from toolkit.core.candidate import Candidate
from toolkit.core.errors import OptkitError, StepNotNeeded
from toolkit.intake.data import Dataset
from toolkit.passes import PassContext
from toolkit.pipeline.devices import DeviceProfile

class Progress:
    """Silent progress; the CLI passes a rich implementation."""

    def stage(self, name: str, total: int) -> None: ...
    def step(self, label: str) -> None: ...  # what is being worked on now (a pass, a candidate), before it starts
    def advance(self, label: str) -> None: ...
    def log(self, message: str) -> None: ...
    def close(self) -> None: ...


def _artifact_hash(c: Candidate) -> str:
    return artifact_sha256(c.files())


@functools.cache
def source_sha256() -> str:
    """optkit's own code: every file of the toolkit package (an editable install's version is always the same)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _device_field(device, dotted: str):
    value = device
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump() if hasattr(value, "model_dump") else value


def step_key(spec, ctx: PassContext, parent: Candidate, opts, cache_parts: list) -> str:
    """Everything a pass reads: its input artifact, name, options, data parts, library versions, optkit's source,
    and what it declares (passes/base.py PassReads): device fields and other candidates' artifacts."""
    from toolkit.core.host import library_versions
    from toolkit.passes.base import READS

    reads = READS.get(spec.name)
    device = {f: _device_field(ctx.device, f) for f in (reads.device if reads else ())}
    upstream = {}
    for cid in (reads.candidates(opts) if reads and reads.candidates else []):
        other = ctx.candidates.get(cid)
        upstream[cid] = _artifact_hash(other) if other is not None else None  # absent is an input too
    return cache.key(_artifact_hash(parent), spec.name, opts.model_dump(), library_versions(), source_sha256(),
                     device, upstream, *cache_parts)


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
               resume: bool = False, use_cache: bool = True) -> tuple[Candidate, str]:
    """Run a pass, or reuse a verified earlier result: this run's own (--resume), then the shared cache.

    Both are keyed by step_key (everything the pass reads); an entry that is corrupt or foreign is said,
    evicted and rebuilt, never trusted. use_cache=False (--no-cache) neither reads nor writes the shared cache.
    """
    key = step_key(spec, ctx, parent, opts, cache_parts)
    folder = ctx.folder(cid)
    if resume and (folder / STEP_RECORD).exists():
        try:
            return dataclasses.replace(_read_entry(folder, key, folder), id=cid,
                                       trust_checkpoint=parent.trust_checkpoint), "resumed"
        except ValueError as exc:
            log(f"[{cid}] the interrupted run's result cannot be reused ({exc}); rebuilding")
    for stale in folder.iterdir():  # start the step from an empty folder
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    entry = cache.cache_dir() / "passes" / key
    if use_cache and (entry / STEP_RECORD).exists():
        try:
            # the key is the work, not the name: an entry another recipe cached under another step id is this step's
            made = dataclasses.replace(_read_entry(entry, key, folder), id=cid, trust_checkpoint=parent.trust_checkpoint)
            _write_entry(folder, made, key)
            return made, "cached"
        except ValueError as exc:
            log(f"[{cid}] cache entry {entry.name} is corrupt or foreign ({exc}); evicted and rebuilt")
            shutil.rmtree(entry, ignore_errors=True)
    made = spec.fn(ctx, parent, opts, cid)
    _write_entry(folder, made, key)
    if not use_cache:
        return made, "built"
    def fill(tmp: Path) -> None:
        for p in made.files():
            shutil.copy2(p, tmp / p.name)
        shutil.copy2(folder / STEP_RECORD, tmp / STEP_RECORD)

    cache.publish(entry, fill)  # atomic; an unwritable cache never fails a run
    return made, "built"


def fault_point(name: str) -> None:
    """Fault injection for the crash/resume tests: OPTKIT_FAULT_AT=<name> kills the process here, like kill -9."""
    if os.environ.get("OPTKIT_FAULT_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    # OPTKIT_FAULT_ONCE=<marker file>: kill only if the marker can be created, so a retried task survives
    # (the sweep's worker-death test: one worker killed, its retry finishes)
    once = os.environ.get("OPTKIT_FAULT_ONCE")
    if once and os.environ.get("OPTKIT_FAULT_ONCE_AT") == name:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


EVAL_RECORD = ".optkit-eval.json"
EVAL_OUTPUTS = ".optkit-outputs.npz"


def evaluate_all(cands: list[Candidate], baseline: Candidate, dataset: Dataset, prof: DeviceProfile, seed: int,
                  threshold_metric: str, progress: Progress, resume: bool = False,
                  use_cache: bool = True) -> tuple[list[dict], dict, list[dict]]:
    """Evaluate the baseline first (parity reference), then the rest; with resume, reuse recorded evaluations.
    use_cache: the splits' outputs come from the shared cache when recorded there (evaluate.outputs_key)."""
    import hashlib

    import numpy as np

    from toolkit.pipeline.evaluate import Outputs, evaluate

    progress.stage("evaluate", len(cands))
    rows, outputs, failures = [], {}, []
    base_out = None
    for c in [baseline] + [c for c in cands if c.id != baseline.id]:
        progress.step(f"{c.id} ({c.backend} {c.precision})")
        folder = c.path.parent
        # Everything the evaluation reads; the baseline's outputs by their full hash (parity is computed against them).
        key = cache.key(_artifact_hash(c), prof.bench.model_dump(), prof.name, threshold_metric, seed, dataset.sha256,
                        source_sha256(), hashlib.sha256(base_out.test.tobytes()).hexdigest() if base_out is not None else None)
        record = None
        if resume and (folder / EVAL_RECORD).exists():
            try:
                saved = json.loads((folder / EVAL_RECORD).read_text())
                # reused only when made from the same inputs and the outputs file is the one recorded
                if saved["key"] == key and file_sha256(folder / EVAL_OUTPUTS) == saved["outputs_sha256"]:
                    with np.load(folder / EVAL_OUTPUTS) as z:
                        record = (saved["metrics"], saved["measured_on"], Outputs(val=z["val"], test=z["test"]))
                    progress.log(f"[{c.id}] evaluation resumed from its verified record")
                else:
                    progress.log(f"[{c.id}] the interrupted run's evaluation does not match (inputs or outputs file); re-evaluating")
            except (OSError, KeyError, ValueError):
                record = None
        try:
            metrics, measured_on, out = record or evaluate(c, dataset, prof, base_out, threshold_metric, seed,
                                                             use_cache=use_cache)
        except Exception as exc:  # one candidate a runtime cannot execute must not sink the run: say it
            reason = str(exc) if isinstance(exc, OptkitError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            progress.log(f"[{c.id}] cannot be evaluated here: {reason}")
            failures.append({"id": c.id, "reason": reason})
            progress.advance(c.id)
            if c.id == baseline.id:
                raise
            continue
        if record is None:
            np.savez(folder / EVAL_OUTPUTS, val=out.val, test=out.test)
            (folder / EVAL_RECORD).write_text(json.dumps({"key": key, "metrics": metrics, "measured_on": measured_on,
                                                          "outputs_sha256": file_sha256(folder / EVAL_OUTPUTS)},
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


def run_passes(the_plan, ctx: PassContext, rec, candidates: dict[str, Candidate], data_key: list, progress: Progress,
               resume: bool, use_cache: bool = True) -> None:
    """Run every planned step in order into `candidates`; a failing pass is recorded on its step, never raised."""
    from toolkit.passes import load_all

    cand_dir = ctx.workdir
    passes = load_all()
    runnable = [p for p in the_plan.steps if p.status == "run"]
    progress.stage("passes", len(runnable))
    ctx.deadline = time.time() + rec.search.max_minutes * 60  # the recipe's wall-time budget; searches read it too
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
        if time.time() > ctx.deadline:
            p.status, p.reason = "skip", f"over the recipe's time budget (search.max_minutes: {rec.search.max_minutes})"
            progress.advance(p.step.id)
            continue
        t_step = time.time()
        progress.step(f"{p.step.id} ({p.step.pass_name})")
        try:
            made, how = run_cached(passes[p.step.pass_name], ctx, parent, rec.step_options(p.step), p.step.id,
                                   data_key, progress.log, resume=resume, use_cache=use_cache)
            candidates[p.step.id] = made
            p.status = how
        except StepNotNeeded as exc:  # a conditional step with nothing to do: skipped, not failed
            p.status, p.reason = "skip", str(exc)
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
