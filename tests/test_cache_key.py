"""The pass cache key covers everything a pass reads (issue 14 item 4): change one input, see a rebuild.

A tiny copying pass declares the same kinds of inputs PT2E and QAT do (a device field, an upstream candidate);
each input is changed in turn through pipeline/run.py run_cached and must rebuild, while an unchanged run is
served from the cache. --no-cache (use_cache=False) builds even when an entry exists.
"""
from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel, ConfigDict

from toolkit.core.candidate import Candidate
from toolkit.passes.base import READS, PassContext, PassReads, PassSpec
from toolkit.pipeline import run as run_mod
from toolkit.pipeline.devices import load_device


class CopyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: int = 1
    upstream: str | None = None


CALLS: list[str] = []


def _copy(ctx, parent, opts, cid):
    CALLS.append(cid)
    out = ctx.folder(cid) / "model.onnx"
    out.write_bytes(parent.path.read_bytes() * opts.scale)
    return parent.derive(id=cid, path=out, step="fake_copy")


SPEC = PassSpec("fake_copy", _copy, CopyOptions, ("onnx",), "onnxruntime", None)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    # what the real passes declare: PT2E's `auto` quantizer reads device.arch, QAT's gate an upstream PTQ candidate
    monkeypatch.setitem(READS, "fake_copy", PassReads(("arch",), lambda o: [o.upstream] if o.upstream else []))
    CALLS.clear()

    def make(name: str, content: bytes) -> Candidate:
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(content)
        return Candidate(id=name, path=folder / "model.onnx", format="onnx", precision="fp32", backend="onnxruntime",
                         lineage=("baseline",))

    # content unique per test: the cache is shared by the whole test session
    parent, ptq = make("parent", f"weights-{tmp_path.name}".encode()), make("ptq", b"ptq-1")
    ctx = PassContext(workdir=tmp_path / "cands", data=None, io=None, device=load_device("x86-avx512"), seed=0,
                      calibration_size=1, candidates={"ptq": ptq}, log=lambda m: None)
    return ctx, parent, make


def _run(ctx, parent, opts=None, parts=("data-sha", 0), **kw):
    made, how = run_mod.run_cached(SPEC, ctx, parent, opts or CopyOptions(upstream="ptq"), "step", list(parts),
                                   lambda m: None, **kw)
    return how


def test_each_input_changes_the_key(setup, monkeypatch):
    ctx, parent, make = setup
    assert _run(ctx, parent) == "built"
    assert _run(ctx, parent) == "cached"          # nothing changed: reused
    assert CALLS == ["step"]

    # 1. the input artifact
    assert _run(ctx, make("parent2", b"weights-2")) == "built"
    # 2. the options
    assert _run(ctx, parent, CopyOptions(scale=2, upstream="ptq")) == "built"
    # 3. a device field the pass declares (device.arch: an ARM-quantized artifact is never reused for x86)
    ctx_arm = dataclasses.replace(ctx, device=ctx.device.model_copy(update={"arch": "aarch64"}))
    assert _run(ctx_arm, parent) == "built"
    # 4. the upstream candidate the pass reads (QAT's gate reads the PTQ result)
    ctx_up = dataclasses.replace(ctx, candidates={"ptq": make("ptq-b", b"ptq-2")})
    assert _run(ctx_up, parent) == "built"
    # 5. the data / seed parts
    assert _run(ctx, parent, parts=("data-sha", 1)) == "built"
    # 6. library versions
    from toolkit.core import host

    real = host.library_versions()
    monkeypatch.setattr(host, "library_versions", lambda: {**real, "onnxruntime": "0.0.0-test"})
    assert _run(ctx, parent) == "built"
    monkeypatch.setattr(host, "library_versions", lambda: real)
    # 7. optkit's own source (an editable install's version never changes, its code does)
    monkeypatch.setattr(run_mod, "source_sha256", lambda: "0" * 64)
    assert _run(ctx, parent) == "built"
    monkeypatch.undo()
    monkeypatch.setitem(READS, "fake_copy", PassReads(("arch",), lambda o: [o.upstream] if o.upstream else []))
    assert _run(ctx, parent) == "cached"          # back to the original inputs: the first entry again
    assert len(CALLS) == 8


def test_a_cached_entry_takes_this_steps_id(setup):
    """The key is the work, not the name: another recipe's step with the same work is served under this step's id."""
    ctx, parent, _ = setup
    opts = CopyOptions(upstream="ptq")
    first, how = run_mod.run_cached(SPEC, ctx, parent, opts, "ort-int8-minmax", ["data-sha", 0], lambda m: None)
    assert how == "built" and first.id == "ort-int8-minmax"
    again, how = run_mod.run_cached(SPEC, ctx, parent, opts, "ort-int8", ["data-sha", 0], lambda m: None)
    assert how == "cached" and again.id == "ort-int8" and again.path.parent.name == "ort-int8"


def test_irrelevant_device_fields_do_not_rebuild(setup):
    ctx, parent, _ = setup
    assert _run(ctx, parent) == "built"
    other = dataclasses.replace(ctx, device=ctx.device.model_copy(update={"description": "another text"}))
    assert _run(other, parent) == "cached"        # only declared fields are inputs


def test_no_cache_builds_and_does_not_publish(setup):
    ctx, parent, _ = setup
    assert _run(ctx, parent, use_cache=False) == "built"
    assert _run(ctx, parent, use_cache=False) == "built"
    assert _run(ctx, parent) == "built"           # nothing was published by the --no-cache runs
    assert _run(ctx, parent) == "cached"


def test_source_hash_covers_the_package_and_is_cached():
    h = run_mod.source_sha256()
    assert len(h) == 64 and run_mod.source_sha256() is h  # computed once per process


def test_real_passes_declare_what_they_read():
    from toolkit.passes import load_all
    from toolkit.passes.qat import QatOptions

    load_all()
    assert READS["pt2e_ptq"].device == ("arch",)
    assert READS["qat"].device == ("budgets.max_macro_f1_drop",)
    assert READS["qat"].candidates(QatOptions(when="if_ptq_misses_gate", ptq_candidate="pt2e-int8")) == ["pt2e-int8"]


def test_no_cache_is_on_the_api_and_cli():
    import inspect

    import toolkit

    assert inspect.signature(toolkit.compress).parameters["no_cache"].default is False
    from pathlib import Path as _P

    cli = (_P(__file__).resolve().parents[1] / "toolkit" / "cli")
    assert any("--no-cache" in p.read_text() for p in cli.glob("*.py"))


# ----------------------------------------------------------------------------- --resume reuses verified evaluations
def test_resume_reuses_only_verified_evaluations(demo_ctx, digits, monkeypatch):
    """An interrupted run's finished evaluation is reused (no re-measurement); a changed outputs file is not."""
    from toolkit.pipeline import evaluate as ev
    from toolkit.pipeline.run import EVAL_OUTPUTS, EVAL_RECORD, Progress, evaluate_all

    ctx, baseline = demo_ctx
    args = ([baseline], baseline, digits, ctx.device, 0, "f1", Progress())
    first, _, failures = evaluate_all(*args, resume=True)
    assert not failures and (baseline.path.parent / EVAL_RECORD).exists()

    calls = []
    real = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, _, _ = evaluate_all(*args, resume=True)
    assert calls == [] and again[0]["metrics"] == first[0]["metrics"]   # reused, not re-measured

    out = baseline.path.parent / EVAL_OUTPUTS
    import numpy as np

    with np.load(out) as z:
        val, test = z["val"].copy(), z["test"].copy()
    test[0, 0] += 1.0                                                    # a damaged outputs file
    np.savez(out, val=val, test=test)
    evaluate_all(*args, resume=True)
    assert calls == [1]                                                  # not trusted: evaluated again
    evaluate_all(*args, resume=False)
    assert calls == [1, 1]                                               # without --resume nothing is reused
