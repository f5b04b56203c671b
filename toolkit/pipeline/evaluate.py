"""Evaluate one candidate through its backend's Session: quality, calibration, parity, speed, size, memory."""
from __future__ import annotations

import dataclasses

import numpy as np

from toolkit.backends import open_session
from toolkit.core.candidate import Candidate
from toolkit.intake.data import Dataset, Split
from toolkit.core.host import host_label, rss_mb, usable_cores
from toolkit.metrics import calibration as cal
from toolkit.metrics import classification as cls
from toolkit.metrics import thresholds as thr
from toolkit.metrics.latency import measure_latency, measure_throughput, tile_batch
from toolkit.metrics.size import size_mb
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
    """The profile's threads, capped at this host's cores (a stand-in cannot use cores it does not have)."""
    return max(1, min(device.bench.threads, usable_cores()))


def evaluate(candidate: Candidate, data: Dataset, device, baseline: Outputs | None, threshold_metric: str = "f1",
             seed: int = 0) -> tuple[dict, dict, Outputs]:
    """Returns (metrics, measured_on, outputs)."""
    threads = effective_threads(device)
    rss0 = rss_mb()
    with open_session(candidate, threads=threads) as session:
        outputs = Outputs(val=run_split(session, data.val), test=run_split(session, data.test))
        for split, z in (("validation", outputs.val), ("test", outputs.test)):  # e.g. fp16 overflow on some rows
            check_finite(z, split, f"candidate {candidate.id} ({candidate.path.name})")
        one = {k: v[:1] for k, v in data.test.inputs.items()}
        latency = measure_latency(session, one, device.bench.warmup, device.bench.iterations)
        throughput = [measure_throughput(session, tile_batch(one, b), b, max(3, device.bench.warmup // 4),
                                         max(20, device.bench.iterations // 10))
                      for b in device.bench.batch_sizes if b > 1]
        rss_growth = max(0.0, rss_mb() - rss0)
        described = session.describe()

    y_test, n = data.test.y, data.n_classes
    pred = decisions(outputs, data.val.y, threshold_metric)  # the one decision rule, as the bundle applies it
    metrics: dict = {}
    quality = cls.classification_metrics(y_test, pred, n, data.labels)
    metrics.update({"macro_f1": quality["macro_f1"], "accuracy": quality["accuracy"]})
    metrics["macro_f1_ci"] = list(cls.macro_f1_ci(y_test, pred, n, seed=seed))
    metrics["per_class"] = quality["per_class"]
    metrics["confusion_matrix"] = quality["confusion_matrix"]

    summary = cal.calibration_summary(outputs.val, data.val.y, outputs.test, y_test)
    metrics.update(summary)
    probs_t = cal.softmax(outputs.test, summary["temperature"])
    probs_v = cal.softmax(outputs.val, summary["temperature"])
    metrics["reliability"] = {"before": cal.reliability_bins(cal.softmax(outputs.test), y_test),
                              "after": cal.reliability_bins(probs_t, y_test)}
    thresholds = thr.per_class_thresholds(probs_v, data.val.y, threshold_metric)
    metrics["thresholds"] = {"metric": threshold_metric, "values": [float(t) for t in thresholds],
                             "tuned_on": "validation", "applied_to": "softmax(logits / temperature)",
                             "test": thr.thresholded_metrics(probs_t, y_test, thresholds, threshold_metric)}
    if data.test.slices:
        metrics["slices"] = cls.slice_metrics(y_test, pred, probs_t, data.test.slices, n)

    if baseline is not None:
        metrics.update(cls.output_parity(outputs.test, baseline.test))
        base_pred = decisions(baseline, data.val.y, threshold_metric)
        metrics["macro_f1_delta"] = cls.paired_f1_delta_ci(y_test, pred, base_pred, n, seed=seed)

    metrics.update({k: latency[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms")})
    metrics["throughput"] = throughput
    metrics["size_mb"] = size_mb(candidate.files())
    metrics["rss_growth_mb"] = round(rss_growth, 2)

    # The host is the device only when it has the profile's ISA features and cores (devices.HostMatch).
    stand_in = not device.host_is_device() or described["backend"] not in device.backends
    measured_on = {
        "kind": "stand-in" if stand_in else "target",  # result.NumberKind: budgets are judged on target numbers only
        "host": host_label(),
        **described,
        "batch": 1,
        "runs": latency["runs"],
        "warmup": latency["warmup"],
        "memory": "RSS growth of the optkit process while loading and running this session",
        "stand_in_for": device.name if stand_in else None,
        "label": (f"measured on this host ({host_label()}) with {described.get('runtime', described['backend'])}, "
                  f"{threads} threads, batch 1, {latency['runs']} runs"
                  + (f"; a stand-in for {device.name}, not the device" if stand_in else "")),
    }
    return metrics, measured_on, outputs

