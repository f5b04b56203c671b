"""Round-robin re-timing ranks the models, not the moments (toolkit/pipeline/retime.py).

A fake clock stands in for time.perf_counter, so the host's "speed" is scripted and nothing depends on this
machine: the host runs at half speed from the middle of the timing on, as a shared VM does when a neighbour wakes.
"""
from __future__ import annotations

import types

import numpy as np

from toolkit.metrics import latency
from toolkit.pipeline import retime


class ScriptedHost:
    """time.perf_counter for the latency module; each call costs its model's time, twice that after `slow_from`."""

    def __init__(self, slow_from: float):
        self.now, self.slow_from = 0.0, slow_from

    def perf_counter(self) -> float:
        return self.now

    def run(self, cost_s: float) -> None:
        self.now += cost_s * (2.0 if self.now >= self.slow_from else 1.0)


class FakeSession:
    def __init__(self, host: ScriptedHost, cost_s: float):
        self.host, self.cost_s, self.fixed = host, cost_s, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def fix_shapes(self, feeds_list):
        self.fixed = [{k: v.shape for k, v in f.items()} for f in feeds_list]

    def infer(self, feeds):
        self.host.run(self.cost_s)
        return np.zeros((1, 2), dtype=np.float32)

    def describe(self):
        return {"backend": "onnxruntime", "runtime": "fake runtime", "threads": 2}


def _row(cid: str, p50: float, kind: str = "target") -> dict:
    metrics = {k: p50 for k in retime.LATENCY_KEYS}
    return {"id": cid, "metrics": metrics, "measured_on": {"kind": kind, "label": f"{cid} alone", "node": "here"}}


def test_round_robin_timing_survives_a_host_that_slows_down(monkeypatch):
    # truly: b 0.8 ms, a 1.0 ms. Solo, a was timed before the slowdown (1.0) and b after it (1.6): a looked faster.
    warmup, iterations = 2, 80
    total_s = (warmup + iterations) * (0.001 + 0.0008)
    host = ScriptedHost(slow_from=total_s * 0.35)  # most rounds of both run on the slowed host
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=host.perf_counter))
    sessions = {"a": FakeSession(host, 0.001), "b": FakeSession(host, 0.0008), "far": FakeSession(host, 0.05)}
    monkeypatch.setattr(retime, "open_session", lambda cand, threads: sessions[cand])
    rows = [_row("a", 1.0), _row("b", 1.6), _row("far", 50.0), _row("board", 0.5, kind="stand-in")]
    device = types.SimpleNamespace(name="x86-avx512", bench=types.SimpleNamespace(warmup=warmup, iterations=iterations))
    dataset = types.SimpleNamespace(test=types.SimpleNamespace(inputs={"x": np.zeros((5, 3), dtype=np.float32)}))

    ids = retime.retime_contenders(rows, {"a": "a", "b": "b", "far": "far"}, dataset, device, threads=2)

    by = {r["id"]: r for r in rows}
    assert ids == ["a", "b"]  # "far" is over 3x the fastest, "board" was not timed on the target
    assert by["b"]["metrics"]["latency_p50_ms"] < by["a"]["metrics"]["latency_p50_ms"]  # the true order
    assert by["b"]["metrics"]["latency_p95_ms"] < by["a"]["metrics"]["latency_p95_ms"]
    assert by["far"]["metrics"]["latency_p50_ms"] == 50.0 and by["board"]["measured_on"] == _row("board", 0.5, "stand-in")["measured_on"]
    for cid in ids:
        on = by[cid]["measured_on"]
        assert on["schedule"] == "round-robin with 1 other candidates" and "round-robin" in on["label"]
        assert on["timed_alone"]["label"] == f"{cid} alone" and on["node"] == "here"
        rounds = min(retime.MAX_ROUNDS, iterations // retime.TURN_CALLS)
        assert on["rounds"] == rounds and on["runs"] == rounds * -(-iterations // rounds)
        assert sessions[cid].fixed == [{"x": (1, 3)}]  # timed at batch 1 with the same static shapes as solo
    assert by["a"]["measured_on"]["timed_alone"]["latency_p50_ms"] == 1.0


def test_nothing_to_retime_without_two_target_numbers():
    assert retime.contenders([_row("a", 1.0), _row("b", 1.2, kind="stand-in")]) == []
    assert retime.contenders([_row("a", 1.0), _row("b", 4.0)]) == []
