"""Evaluate one candidate through its backend's Session: quality, calibration, parity, speed, size, memory."""
from __future__ import annotations

import dataclasses

import numpy as np

from toolkit.backends import open_session
from toolkit.core.candidate import Candidate
from toolkit.intake.data import Dataset, Split
from toolkit.core import host as hostinfo
from toolkit.core.host import rss_mb
from toolkit.core.shapes import from_arrays
from toolkit.metrics import classification as cls
from toolkit.metrics.size import size_mb
from toolkit.metrics.calibration_section import calibration_section
from toolkit.pipeline.measure import measure
from toolkit.intake.model_check import check_finite

EVAL_BATCH = 64


@dataclasses.dataclass
class Outputs:
    """Logits on the validation and test splits (kept for parity, calibration and the bundle's fixtures)."""

    val: np.ndarray
    test: np.ndarray


def run_split(session, split: Split, batch: int = EVAL_BATCH) -> np.ndarray:
    return np.concatenate([session.infer(b) for b in split.batches(batch)]).astype(np.float32)


def decisions(out: Outputs, y_val, threshold_metric: str) -> np.ndarray:
    """Test-split decisions by the one rule (metrics.thresholds.decide) at the candidate's own temperature and
    validation-tuned thresholds: what the bundle's fixtures, verify and predict reproduce (binary: the tuned threshold)."""
    from toolkit.metrics import calibration as cal
    from toolkit.metrics import thresholds as thr

    t = cal.fit_temperature_cv(out.val, y_val)["temperature"]
    values = thr.per_class_thresholds(cal.softmax(out.val, t), y_val, threshold_metric)
    return thr.decide(cal.softmax(out.test, t), values)


def effective_threads(device) -> int:
    """The profile's bench threads under the one thread policy (core/host.effective_threads)."""
    return hostinfo.effective_threads(None, device.bench.threads)


def node_name() -> str:
    """The machine a measurement ran on, for measured_on.node: the node an executor placed this work on
    (OPTKIT_NODE, set by a sweep task: toolkit/pipeline/executors/), else this host's name."""
    import os
    import socket

    return os.environ.get("OPTKIT_NODE") or socket.gethostname()


def outputs_key(candidate: Candidate, data: Dataset, threads: int, artifact: str | None = None) -> str:
    """Everything the logits depend on: the artifact's bytes (`artifact`: its sha256 when the caller has it, so a
    large model is not hashed twice), how it is run, the data and optkit's own code."""
    from toolkit.core import cache
    from toolkit.core.artifacts import artifact_sha256
    from toolkit.pipeline.run import source_sha256

    return cache.key(artifact or artifact_sha256(candidate.files()), candidate.backend, candidate.engine,
                     candidate.runtime_options, candidate.precision, data.sha256, threads, source_sha256())


OUTPUTS_FILE, OUTPUTS_RECORD = "outputs.npz", "outputs.json"


def _outputs_entry(key: str):
    from toolkit.core import cache

    return cache.cache_dir() / "outputs" / key


def cached_outputs(key: str) -> Outputs | None:
    """Outputs recorded under `key` in the shared cache, verified by their file's sha256; None when absent or bad."""
    import json
    import shutil

    from toolkit.core.artifacts import file_sha256

    entry = _outputs_entry(key)
    try:
        meta = json.loads((entry / OUTPUTS_RECORD).read_text())
        if meta["key"] != key or file_sha256(entry / OUTPUTS_FILE) != meta["sha256"]:
            raise ValueError("does not match its record")
        with np.load(entry / OUTPUTS_FILE) as z:
            return Outputs(val=z["val"], test=z["test"])
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError):  # corrupt or foreign: never trusted, evicted so it is rebuilt
        shutil.rmtree(entry, ignore_errors=True)
        return None


def store_outputs(key: str, outputs: Outputs) -> None:
    """Publish outputs to the shared cache (core/cache.publish: atomic; an unwritable cache is skipped)."""
    import json

    from toolkit.core import cache
    from toolkit.core.artifacts import file_sha256

    def fill(tmp) -> None:
        np.savez(tmp / OUTPUTS_FILE, val=outputs.val, test=outputs.test)
        (tmp / OUTPUTS_RECORD).write_text(json.dumps({"key": key, "sha256": file_sha256(tmp / OUTPUTS_FILE)}))

    cache.publish(_outputs_entry(key), fill)


def infer_outputs(session, candidate: Candidate, data: Dataset) -> Outputs:
    """The accuracy outputs: logits on the validation and test splits, checked finite."""
    outputs = Outputs(val=run_split(session, data.val), test=run_split(session, data.test))
    for split, z in (("validation", outputs.val), ("test", outputs.test)):  # e.g. fp16 overflow on some rows
        check_finite(z, split, f"candidate {candidate.id} ({candidate.path.name})")
    return outputs


def candidate_outputs(candidate: Candidate, data: Dataset, device, use_cache: bool = True, *, session=None,
                      key: str | None = None) -> Outputs:
    """Outputs only (no timing): from the shared cache when recorded there, else inferred (in `session`, or one
    opened for it) and recorded. A sweep's build phase calls this so its measure phase times without re-running
    the splits; evaluate() calls it inside its own session."""
    threads = effective_threads(device)
    key = key or outputs_key(candidate, data, threads)
    if use_cache and (hit := cached_outputs(key)) is not None:
        return hit
    if session is None:
        with open_session(candidate, threads=threads) as opened:
            outputs = infer_outputs(opened, candidate, data)
    else:
        outputs = infer_outputs(session, candidate, data)
    if use_cache:
        store_outputs(key, outputs)
    return outputs


def build_outputs(cands: list[Candidate], data: Dataset, device, log, use_cache: bool = True) -> dict:
    """Every candidate's outputs into the shared cache (a sweep's build phase); a candidate a runtime cannot run is
    listed with the reason and left to the evaluation, which reports it the same way compress always has."""
    from toolkit.core.artifacts import artifact_sha256

    threads = effective_threads(device)
    built: dict = {"candidates": {}, "outputs_keys": [], "failures": []}
    for c in cands:
        digest = built["candidates"][c.id] = artifact_sha256(c.files())
        key = outputs_key(c, data, threads, artifact=digest)
        try:
            candidate_outputs(c, data, device, use_cache=use_cache, key=key)
            built["outputs_keys"].append(key)
        except Exception as exc:  # noqa: BLE001 - one runtime rejecting one artifact must not lose the others
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            log(f"[{c.id}] outputs not built: {reason}")
            built["failures"].append({"id": c.id, "reason": reason})
    return built


def evaluate(candidate: Candidate, data: Dataset, device, baseline: Outputs | None, threshold_metric: str = "f1",
             seed: int = 0, use_cache: bool = True) -> tuple[dict, dict, Outputs]:
    """Returns (metrics, measured_on, outputs): outputs (cached by outputs_key unless use_cache=False), then timing.

    Both in one Session: the timing never shares the cores with the split inference, which runs before it."""
    threads = effective_threads(device)
    rss0 = rss_mb()
    shapes = from_arrays(data.test.inputs)  # the data's own widths: what this measurement runs at
    with open_session(candidate, threads=threads) as session:
        outputs = candidate_outputs(candidate, data, device, use_cache, session=session)
        one = {k: v[:1] for k, v in data.test.inputs.items()}
        m = measure(session, one, [1, *device.bench.batch_sizes], device, threads, shapes=shapes)
        rss_growth = max(0.0, rss_mb() - rss0)

    y_test, n = data.test.y, data.n_classes
    pred = decisions(outputs, data.val.y, threshold_metric)  # the one decision rule, as the bundle applies it
    metrics: dict = {}
    quality = cls.classification_metrics(y_test, pred, n, data.labels)
    metrics.update({"macro_f1": quality["macro_f1"], "accuracy": quality["accuracy"]})
    metrics["macro_f1_ci"] = list(cls.macro_f1_ci(y_test, pred, n, seed=seed))
    metrics["per_class"] = quality["per_class"]
    metrics["confusion_matrix"] = quality["confusion_matrix"]

    section = calibration_section(outputs.val, data.val.y, outputs.test, y_test, threshold_metric)
    metrics.update(section.summary)
    probs_t = section.probs_test
    metrics["reliability"] = section.reliability
    metrics["thresholds"] = {k: section.thresholds[k] for k in ("metric", "values", "tuned_on", "applied_to", "test")}
    if data.test.slices:
        metrics["slices"] = cls.slice_metrics(y_test, pred, probs_t, data.test.slices, n)

    if baseline is not None:
        metrics.update(cls.output_parity(outputs.test, baseline.test))
        base_pred = decisions(baseline, data.val.y, threshold_metric)
        metrics["macro_f1_delta"] = cls.paired_f1_delta_ci(y_test, pred, base_pred, n, seed=seed)

    one_stats = m.stats[1]
    metrics.update({k: one_stats[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                                              "latency_p95_quietest_round_ms")})
    metrics["throughput"] = [{k: st[k] for k in ("batch", "throughput_per_s", "latency_p50_ms", "runs")}
                             for b, st in m.stats.items() if b > 1]
    metrics["size_mb"] = size_mb(candidate.files())
    metrics["rss_growth_mb"] = round(rss_growth, 2)

    where = {**m.measured_on(1), "node": node_name()}  # which machine of a sweep timed it
    return metrics, where, outputs
