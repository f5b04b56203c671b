"""The evaluation split in two (pipeline/evaluate.py): accuracy outputs, cached by artifact + data + source hash so
a sweep's measure phase only times, and timing; compress's numbers are the same either way."""
from __future__ import annotations

import socket

import numpy as np
import pytest


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_outputs_are_cached_verified_and_reused_without_inference(demo_ctx, digits, fresh_cache, monkeypatch):
    from toolkit.pipeline import evaluate as ev

    ctx, base = demo_ctx
    first = ev.candidate_outputs(base, digits, ctx.device)
    key = ev.outputs_key(base, digits, ev.effective_threads(ctx.device))
    assert (fresh_cache / "outputs" / key / ev.OUTPUTS_FILE).exists()

    def no_session(*a, **k):
        raise AssertionError("a cached output must not open a session")

    monkeypatch.setattr(ev, "open_session", no_session)
    again = ev.candidate_outputs(base, digits, ctx.device)
    np.testing.assert_array_equal(again.val, first.val)
    np.testing.assert_array_equal(again.test, first.test)
    # tampered with: not trusted, evicted (and rebuilt by the next caller)
    entry = fresh_cache / "outputs" / key / ev.OUTPUTS_FILE
    np.savez(entry, val=first.val + 1, test=first.test)
    assert ev.cached_outputs(key) is None and not entry.exists()


def test_cached_outputs_give_the_same_metrics_and_the_node_is_recorded(demo_ctx, digits, fresh_cache):
    from toolkit.pipeline import evaluate as ev

    ctx, base = demo_ctx
    fresh, where, out1 = ev.evaluate(base, digits, ctx.device, None, use_cache=False)
    assert ev.cached_outputs(ev.outputs_key(base, digits, ev.effective_threads(ctx.device))) is None  # not written
    ev.candidate_outputs(base, digits, ctx.device)
    cached, where2, out2 = ev.evaluate(base, digits, ctx.device, None, use_cache=True)
    quality = ("macro_f1", "accuracy", "ece", "nll", "temperature", "confusion_matrix", "thresholds")
    assert {k: cached[k] for k in quality} == {k: fresh[k] for k in quality}
    np.testing.assert_array_equal(out1.test, out2.test)
    assert where["node"] == where2["node"] == socket.gethostname()
    assert cached["latency_p50_ms"] > 0  # the timing still ran, in its own session


def test_the_outputs_key_changes_with_what_the_logits_depend_on(demo_ctx, digits):
    import dataclasses

    from toolkit.pipeline import evaluate as ev

    ctx, base = demo_ctx
    k = ev.outputs_key(base, digits, 2)
    assert ev.outputs_key(base, digits, 1) != k  # threads can change float reduction order
    assert ev.outputs_key(dataclasses.replace(base, runtime_options={"x": 1}), digits, 2) != k
    other = dataclasses.replace(digits, sha256="0" * 64)
    assert ev.outputs_key(base, other, 2) != k
