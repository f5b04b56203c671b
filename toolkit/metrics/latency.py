"""Latency and throughput of a Session: per-call wall time after warmup (DESIGN.md)."""
from __future__ import annotations

import gc
import time

import numpy as np


def measure_latency(session, feeds: dict, warmup: int, iterations: int) -> dict:
    for _ in range(warmup):
        session.infer(feeds)
    times = np.empty(iterations)
    # As timeit does: collect first, no GC pauses inside the timed loop. In a process holding large
    # torch/ONNX object graphs one gen-2 collection costs tens of ms and would land in the p95.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(iterations):
            start = time.perf_counter()
            session.infer(feeds)
            times[i] = time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
    ms = times * 1e3
    return {"latency_p50_ms": round(float(np.percentile(ms, 50)), 4),
            "latency_p95_ms": round(float(np.percentile(ms, 95)), 4),
            "latency_p99_ms": round(float(np.percentile(ms, 99)), 4),
            "latency_mean_ms": round(float(ms.mean()), 4), "runs": iterations, "warmup": warmup}


def measure_throughput(session, feeds: dict, batch: int, warmup: int, iterations: int) -> dict:
    """Samples per second at a batch size, from the median call time."""
    stats = measure_latency(session, feeds, warmup, iterations)
    return {"batch": batch, "throughput_per_s": round(batch / (stats["latency_p50_ms"] / 1e3), 1),
            "latency_p50_ms": stats["latency_p50_ms"], "runs": iterations}


def tile_batch(feeds: dict, batch: int) -> dict:
    """A batch of `batch` rows built by repeating the given rows (enough for timing)."""
    out = {}
    for k, v in feeds.items():
        reps = -(-batch // v.shape[0])
        out[k] = np.ascontiguousarray(np.concatenate([v] * reps)[:batch])
    return out
