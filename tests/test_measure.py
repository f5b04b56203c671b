"""The one latency protocol (pipeline/measure.py), thread policy (core/host), shape policy (core/shapes)
and calibration section (metrics/calibration_section): fast, with fake sessions, no host-speed assumptions."""
from __future__ import annotations

import time

import numpy as np
import pytest

from toolkit.core import host as hostinfo
from toolkit.core import shapes
from toolkit.metrics.latency import summarize
from toolkit.pipeline import measure as M
from toolkit.pipeline.devices import Bench, Budgets, Gates


class FakeSession:
    """Returns zeros; sleeps `slow_s` on the calls listed in `slow_calls` (counted over every infer call)."""

    def __init__(self, slow_calls=(), slow_s=0.0):
        self.calls, self.slow_calls, self.slow_s = 0, set(slow_calls), slow_s
        self.batches = []

    def infer(self, feeds):
        n = next(iter(feeds.values())).shape[0]
        self.batches.append(n)
        if self.calls in self.slow_calls:
            time.sleep(self.slow_s)
        self.calls += 1
        return np.zeros((n, 2), np.float32)

    def describe(self):
        return {"backend": "onnxruntime", "runtime": "fake 1.0", "threads": 1}


class FakeDevice:
    def __init__(self, bench: Bench, is_device: bool = False, backends=("onnxruntime",)):
        self.bench, self.name, self._is, self.backends = bench, "fake-device", is_device, list(backends)

    def host_is_device(self):
        return self._is


FEEDS = {"x": np.zeros((1, 3), np.float32)}


def test_protocol_counts_interleaving_and_record():
    dev = FakeDevice(Bench(threads=1, batch_sizes=[1, 4], warmup=4, iterations=20))
    s = FakeSession()
    m = M.measure(s, FEEDS, [1, 4], dev, threads=1, rounds=5)
    # batch 1: warmup 4, 20 timed calls; batch 4: max(3, 4 // 4) = 3 warmup, max(20, 20 // 10) = 20 calls
    assert M.calls_for(dev.bench, 1) == (4, 20) and M.calls_for(dev.bench, 4) == (3, 20)
    assert s.calls == 4 + 3 + 20 + 20
    assert m.stats[1]["runs"] == 20 and m.stats[1]["rounds"] == 5 and len(m.stats[1]["round_p50_ms"]) == 5
    # interleaved: after the warmups, rounds alternate 4 calls of batch 1 with 4 of batch 4
    timed = s.batches[7:]
    assert timed[:8] == [1] * 4 + [4] * 4 and timed[8:16] == [1] * 4 + [4] * 4
    rec = m.measured_on(4)
    assert rec["kind"] == "stand-in" and rec["stand_in_for"] == "fake-device" and rec["batch"] == 4
    assert rec["isa"] == hostinfo.isa_features() and rec["runtime"] == "fake 1.0" and rec["threads"] == 1
    assert "20 runs in 5 rounds after 3 warmup" in rec["label"] and "stand-in for fake-device" in rec["label"]
    assert rec["contended"] == bool(rec["contention_reason"])
    st = m.stats[1]
    assert st["latency_p50_ms"] <= st["latency_p95_ms"] <= st["latency_p99_ms"]


def test_target_only_when_host_is_device_and_backend_is_the_devices():
    bench = Bench(threads=1, batch_sizes=[1], warmup=0, iterations=4)
    assert M.measure(FakeSession(), FEEDS, [1], FakeDevice(bench, True), 1).measured_on(1)["kind"] == "target"
    other = FakeDevice(bench, True, backends=("openvino",))
    assert M.measure(FakeSession(), FEEDS, [1], other, 1).measured_on(1)["kind"] == "stand-in"


def test_a_slow_round_is_seen_as_spread_and_contention():
    # 5 rounds of 6 calls; every call of round 3 sleeps 20 ms, the others do not sleep at all
    dev = FakeDevice(Bench(threads=1, batch_sizes=[1], warmup=0, iterations=30))
    m = M.measure(FakeSession(slow_calls=range(18, 24), slow_s=0.02), FEEDS, [1], dev, 1, rounds=5)
    st = m.stats[1]
    assert st["round_spread"] > M.SPREAD_LIMIT
    assert st["latency_p95_quietest_round_ms"] < 20 <= st["latency_p95_ms"]  # the robust tail ignores the burst
    assert m.contended and "round p50s vary" in m.contention_reason
    assert "CONTENDED" in m.measured_on(1)["label"]


def test_contention_from_load_and_steal_and_quiet():
    quiet = {1: summarize(np.ones((4, 5)), 1, 0)}
    calm = {"load": 0.5, "cpu_times": (0, 1000)}
    assert M.contention(calm, {"load": 0.6, "cpu_times": (1, 2000)}, quiet, cores=2) == (False, "")
    busy, why = M.contention(calm, {"load": 6.0, "cpu_times": (0, 2000)}, quiet, cores=2)
    assert busy and "load average 6.00 on 2 usable cores" in why
    stolen, why = M.contention(calm, {"load": 0.5, "cpu_times": (200, 2000)}, quiet, cores=2)
    assert stolen and "steal time 20%" in why
    tail = {1: summarize(np.array([[1.0] * 18 + [9.0, 9.0]]), 1, 0)}
    assert "over 3x p50" in M.contention(calm, calm, tail, cores=2)[1]
    # no /proc here: nothing is claimed either way
    assert M.contention({"load": None, "cpu_times": None}, {"load": None, "cpu_times": None}, quiet, 2) == (False, "")


def test_summarize_quietest_round():
    ms = np.array([[2.0, 2.0, 2.0, 9.0], [1.0, 1.0, 1.0, 1.5], [3.0, 3.0, 3.0, 3.0]])
    s = summarize(ms, 8, 2)
    assert s["round_p50_ms"] == [2.0, 1.0, 3.0] and s["round_spread"] == 1.0
    assert s["latency_p95_quietest_round_ms"] == pytest.approx(np.percentile([1.0, 1.0, 1.0, 1.5], 95))
    assert s["runs"] == 12 and s["rounds"] == 3 and s["throughput_per_s"] == pytest.approx(8 / (2.0 / 1e3))


def test_effective_threads_capped_by_affinity(monkeypatch):
    monkeypatch.setattr(hostinfo, "usable_cores", lambda: 2)
    assert hostinfo.effective_threads(8, 4) == 2          # asked for more than the affinity mask allows
    assert hostinfo.effective_threads(None, 1) == 1       # the profile's threads when nothing is asked
    assert hostinfo.effective_threads(None, None) == 2    # all usable cores
    assert hostinfo.effective_threads(0, 4) == 1          # never below one


def test_calibrate_uses_the_thread_policy(monkeypatch, tmp_path):
    from toolkit.pipeline import calibrate as C

    seen = {}
    monkeypatch.setattr(C, "effective_threads", lambda t: seen.setdefault("asked", t) or 1)

    def stop(*a, **k):
        seen["threads"] = a[4]
        raise RuntimeError("stop")

    monkeypatch.setattr(C, "_session_for", stop)
    with pytest.raises(RuntimeError):
        C.artifact_logits(tmp_path / "m.onnx", type("D", (), {"input_names": ["x"]})(), threads=None)
    assert seen == {"asked": None, "threads": 1}


def test_shape_policy_from_text_data_and_fallback():
    mask = np.zeros((20, 16), np.int64)
    for i, n in enumerate([4] * 10 + [8] * 8 + [16] * 2):
        mask[i, :n] = 1
    pol = shapes.from_arrays({"input_ids": np.ones_like(mask), "attention_mask": mask})
    d = pol.get("sequence")
    assert (d.value, d.p50, d.p95) == (16, 6, 16) and pol.from_data
    assert d.profile() == (1, 6, 16) and "p50 6, p95 16" in pol.describe()
    fb = shapes.fallback()
    assert fb.value("sequence") == shapes.FALLBACK_DIM == 128 and not fb.from_data
    assert fb.get().profile() == (128, 128, 128) and "fallback 128" in fb.describe()
    images = shapes.from_arrays({"x": np.zeros((4, 1, 8, 8), np.float32)})
    assert images.from_data and images.dims == {} and images.describe() == "no dynamic dims besides the batch"
    assert shapes.concrete((None, "sequence"), 4, pol) == (4, 16)
    assert shapes.concrete(("batch", 3, -1), 2, fb) == (2, 3, 128)


def test_contended_latency_failure_says_so():
    from toolkit.pipeline.select import checks_for

    m = {"latency_p95_ms": 14.0, "latency_p50_ms": 1.3, "latency_p95_quietest_round_ms": 2.1, "size_mb": 1.0,
         "rss_growth_mb": 1.0, "ece": 0.01, "ece_recalibrated": 0.01, "macro_f1": 0.9}
    budgets = Budgets(latency_p95_ms=10)
    c = checks_for(m, m, budgets, Gates(), True, contention="load average 6.00 on 2 usable cores")[0]
    assert not c["ok"] and "contended host" in c["reason"] and "quietest-round p95 2.1 ms" in c["reason"]
    quiet = checks_for(m, m, budgets, Gates(), True)[0]
    assert not quiet["ok"] and "contended" not in quiet["reason"]


def test_one_calibration_section_for_compress_and_calibrate():
    from toolkit.metrics.calibration_section import calibration_section
    from toolkit.pipeline.calibration_report import calibration_report

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    z = rng.normal(size=(300, 3)) + 3.0 * np.eye(3)[y]
    sec = calibration_section(z[:150], y[:150], z[150:], y[150:], "f1")
    rep = calibration_report(z[:150], y[:150], z[150:], y[150:], "f1")
    assert rep["calibration"] == sec.summary and rep["thresholds"]["values"] == sec.thresholds["values"]
    assert rep["reliability"] == sec.reliability and len(sec.thresholds["values"]) == 3
