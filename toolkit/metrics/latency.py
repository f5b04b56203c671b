"""Latency of a Session: per-call wall time after warmup, in interleaved rounds (DESIGN.md, issue 14 item 9).

`timed_rounds` runs the calls, `summarize` turns one batch size's (rounds x calls) matrix into
p50/p95/p99/mean plus the round-to-round spread. The protocol around them (how many calls, which
rounds, whether the host was contended, the provenance record) is toolkit.pipeline.measure.
"""
from __future__ import annotations

import gc
import time

import numpy as np


def timed_rounds(session, feeds_by_batch: dict[int, dict], warmup: dict[int, int], calls: dict[int, int],
                 rounds: int) -> dict[int, np.ndarray]:
    """Per-call times in ms, shape (rounds, calls[b]) for every batch size b.

    Each batch size is warmed up once, then every round runs each batch size's calls in turn,
    so a burst of neighbour load lands in one round of every batch size instead of in all of one.
    """
    return round_robin({b: (lambda f=feeds: session.infer(f)) for b, feeds in feeds_by_batch.items()},
                       warmup, calls, rounds)


def round_robin(calls_of: dict, warmup: dict, calls: dict, rounds: int, turn_warmup: int = 0) -> dict:
    """Per-call times in ms, shape (rounds, calls[k]), of zero-argument callables taking turns: each is warmed up,
    then every round runs each one's calls in turn. Keys are batch sizes (timed_rounds) or candidates (retime).

    turn_warmup untimed calls open every turn: when the callables are different runtimes, the one before may still
    spin its thread pool for a moment after its turn (ONNX Runtime and OpenVINO both spin-wait), and those calls
    would time the neighbour, not the model."""
    for k, call in calls_of.items():
        for _ in range(warmup[k]):
            call()
    times = {k: np.empty((rounds, calls[k])) for k in calls_of}
    # As timeit does: collect first, no GC pauses inside the timed loop. In a process holding large
    # torch/ONNX object graphs one gen-2 collection costs tens of ms and would land in the p95.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for k, call in calls_of.items():
                row = times[k][r]
                for _ in range(turn_warmup):
                    call()
                for i in range(calls[k]):
                    start = time.perf_counter()
                    call()
                    row[i] = time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
    return {k: t * 1e3 for k, t in times.items()}


def _r(x: float) -> float:
    return round(float(x), 4)


def summarize(ms: np.ndarray, batch: int, warmup: int) -> dict:
    """p50/p95/p99/mean over all calls, each round's p50, the spread between rounds, and the quietest round.

    round_spread = (max - min) / median of the round p50s: 0 on a quiet host, large when neighbours
    came and went. The quietest round is the one with the lowest p50; its p95 is the p50-based robust
    tail used when the host was contended (the overall p95 then measures the neighbours).
    """
    ms = np.atleast_2d(np.asarray(ms, dtype=np.float64))
    flat = ms.ravel()
    p50s = np.median(ms, axis=1)
    med = float(np.median(p50s))
    quiet = int(np.argmin(p50s))
    p50 = float(np.percentile(flat, 50))
    return {"latency_p50_ms": _r(p50),
            "latency_p95_ms": _r(np.percentile(flat, 95)),
            "latency_p99_ms": _r(np.percentile(flat, 99)),
            "latency_mean_ms": _r(flat.mean()),
            "latency_p95_quietest_round_ms": _r(np.percentile(ms[quiet], 95)),
            "round_p50_ms": [_r(v) for v in p50s],
            "round_spread": _r((p50s.max() - p50s.min()) / med) if med > 0 else 0.0,
            "throughput_per_s": round(batch / (p50 / 1e3), 1) if p50 > 0 else None,
            "batch": batch, "runs": int(flat.size), "rounds": int(ms.shape[0]), "warmup": int(warmup)}


def tile_batch(feeds: dict, batch: int) -> dict:
    """A batch of `batch` rows built by repeating the given rows (enough for timing)."""
    out = {}
    for k, v in feeds.items():
        reps = -(-batch // v.shape[0])
        out[k] = np.ascontiguousarray(np.concatenate([v] * reps)[:batch])
    return out
