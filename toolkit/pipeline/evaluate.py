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


def evaluate(candidate: Candidate, data: Dataset, device, baseline: Outputs | None, threshold_metric: str = "f1",
             seed: int = 0) -> tuple[dict, dict, Outputs]:
    """Returns (metrics, measured_on, outputs)."""
    threads = effective_threads(device)
    rss0 = rss_mb()
    shapes = from_arrays(data.test.inputs)  # the data's own widths: what this measurement runs at
    with open_session(candidate, threads=threads) as session:
        outputs = Outputs(val=run_split(session, data.val), test=run_split(session, data.test))
        for split, z in (("validation", outputs.val), ("test", outputs.test)):  # e.g. fp16 overflow on some rows
            check_finite(z, split, f"candidate {candidate.id} ({candidate.path.name})")
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

    return metrics, m.measured_on(1), outputs
