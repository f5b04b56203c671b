"""Rank on timings taken side by side: the candidates that can still win, timed again round-robin in one process.

evaluate times each candidate once, one after another, minutes apart. A shared host's speed drifts over minutes
(VM neighbours, CI runners: round spreads of 30-45% on this project's 2-core VM), so two candidates timed minutes
apart can trade places by more than the selection's tie band. On benchmarks/vision.py's MobileNetV3 three runs
picked three ways while, timed round-robin, OpenVINO int8 was 20% faster than ORT fp32 every time. Here every
contender's round r runs within seconds of every other's: a drift lands on all of them alike, and the ranking
compares the models, not the moments.

Only numbers measured on the target are re-timed (this host is the device; a --measure-on board's numbers come from
the board), only at batch 1 (the speed key), with the profile's warmup and iterations split into turns. The
first, solo timing stays in measured_on.timed_alone.
"""
from __future__ import annotations

import contextlib

import numpy as np

from toolkit.backends import open_session
from toolkit.core import host as hostinfo
from toolkit.core.shapes import from_arrays
from toolkit.metrics.latency import round_robin, summarize
from toolkit.pipeline.measure import TARGET, Measurement, calls_for, contention, host_loads

CONTENDERS = 3.0    # within this factor of the fastest p50: drift has never moved a 3x gap
MAX_ROUNDS = 8      # each round is one turn of every contender; the whole timing takes seconds, drift takes minutes
TURN_CALLS = 25     # timed calls per turn at least: a turn must outlast the switch from the runtime before it
TURN_WARMUP = 5     # untimed calls opening every turn, while the previous runtime's spinning threads wind down
LATENCY_KEYS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms", "latency_p95_quietest_round_ms")


def contenders(rows: list[dict]) -> list[dict]:
    """The rows timed on the target whose p50 is within CONTENDERS of the fastest; none when fewer than two."""
    timed = [r for r in rows if r["measured_on"].get("kind") == TARGET and r["metrics"].get("latency_p50_ms")]
    if len(timed) < 2:
        return []
    fastest = min(r["metrics"]["latency_p50_ms"] for r in timed)
    close = [r for r in timed if r["metrics"]["latency_p50_ms"] <= CONTENDERS * fastest]
    return close if len(close) > 1 else []


def retime_contenders(rows: list[dict], candidates: dict, dataset, device, threads: int, log=lambda m: None) -> list[str]:
    """Time the contenders again round-robin and put those batch-1 numbers in their rows; returns the ids re-timed."""
    chosen = contenders(rows)
    if not chosen:
        return []
    one = {k: np.ascontiguousarray(v[:1]) for k, v in dataset.test.inputs.items()}
    warmup, n = calls_for(device.bench, 1)
    rounds = max(1, min(MAX_ROUNDS, n // TURN_CALLS))
    calls = max(1, -(-n // rounds))
    ids = [r["id"] for r in chosen]
    log(f"timing {len(ids)} candidates again round-robin ({rounds} rounds of {calls} calls each): {', '.join(ids)}")
    with contextlib.ExitStack() as stack:
        sessions = {}
        for cid in ids:
            sessions[cid] = stack.enter_context(open_session(candidates[cid], threads=threads))
            sessions[cid].fix_shapes([one])  # the same static shapes as the solo timing
        before = host_loads()
        times = round_robin({cid: (lambda s=s: s.infer(one)) for cid, s in sessions.items()},
                            {cid: warmup for cid in ids}, {cid: calls for cid in ids}, rounds, turn_warmup=TURN_WARMUP)
        after = host_loads()
        described = {cid: s.describe() for cid, s in sessions.items()}
    shapes = from_arrays(dataset.test.inputs)
    for r in chosen:
        stats = summarize(times[r["id"]], 1, warmup)
        contended, why = contention(before, after, {1: stats}, hostinfo.usable_cores())
        m = Measurement(stats={1: stats}, described=described[r["id"]], threads=threads, device_name=device.name,
                        target=True, contended=contended, contention_reason=why, shapes=shapes, load=after,
                        schedule=f"round-robin with {len(ids) - 1} other candidates")
        alone = {k: r["metrics"].get(k) for k in LATENCY_KEYS} | {"label": r["measured_on"].get("label")}
        r["metrics"].update({k: stats[k] for k in LATENCY_KEYS})
        r["measured_on"] = {**m.measured_on(1), "node": r["measured_on"].get("node"), "timed_alone": alone}
    return ids


__all__ = ["retime_contenders", "contenders", "CONTENDERS", "MAX_ROUNDS", "TURN_CALLS", "TURN_WARMUP"]
