"""`optkit verify`: prove a bundle's integrity (and signature), then re-run its fixtures through the manifest's backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.core.candidate import Candidate
from toolkit.core.errors import GateFailed
from toolkit.output.bundle import check_integrity
from toolkit.output.manifest import show

# A re-run's probability may land this close to a threshold on another CPU's kernels: such rows cannot disagree.
_DECISION_MARGIN = 1e-4


def _check_decisions(folder: Path, manifest, got: np.ndarray) -> int:
    """The fixtures' decisions, re-derived from the re-run logits by the one rule (metrics.thresholds.decide) at the
    manifest's temperature and thresholds; GateFailed when they differ. Returns how many rows were checked."""
    from toolkit.metrics.calibration import softmax
    from toolkit.metrics.thresholds import decide

    with np.load(folder / manifest.fixtures.expected, allow_pickle=False) as z:
        if "decision" not in z.files:
            return 0  # a bundle sealed before decisions were recorded: logits and top-1 were checked above
        expected = z["decision"]
    conf = manifest.confidence
    thresholds = getattr(conf, "decision_thresholds", None) or conf.thresholds["values"]
    try:
        probs = softmax(got, conf.temperature)
        mine = decide(probs, thresholds)
    except ValueError as exc:  # a manifest whose temperature or thresholds do not fit the model's outputs
        raise GateFailed(f"{show(folder / 'manifest.json')}: confidence cannot decide the fixtures ({exc}); "
                         "re-create the bundle") from None
    if mine.shape != expected.shape:
        raise GateFailed(f"{show(folder / manifest.fixtures.expected)}: {expected.shape[0]} recorded decisions for "
                         f"{mine.shape[0]} fixture rows; re-create the bundle")
    near = np.abs(probs[:, 1] - thresholds[0]) < _DECISION_MARGIN if probs.shape[1] == 2 else np.zeros(len(mine), bool)
    differ = int(((mine != expected) & ~near).sum())
    if differ:
        raise GateFailed(f"{show(folder)}: {differ} of {len(expected)} fixture decisions differ from the bundle's "
                         "(softmax(logits / temperature) against the manifest's thresholds); re-create the bundle")
    return int(len(expected))


def verify(folder: str | Path, *, public_key: str | Path | None = None, trust_checkpoint: bool = False) -> dict:
    """Prove the bundle's integrity (and its signature with `public_key`), then re-run the fixtures.

    Raises GateFailed naming the first problem; BackendUnavailable when the fixtures cannot run on this host.
    """
    from toolkit.backends import availability, open_session
    from toolkit.core.errors import BackendUnavailable

    folder = Path(folder)
    if public_key is not None:
        # The signature first: with a key, nothing in the bundle is trusted before it is proven to be the signed one.
        if not folder.is_dir():
            raise GateFailed(f"{show(folder)}: not a folder; pass the bundle folder written by optkit compress")
        from toolkit.output.signing import verify_signature

        signature = verify_signature(folder, public_key)
    manifest, info = check_integrity(folder)
    model = manifest.model
    cand = Candidate(id=manifest.candidate, path=folder / model.file, format=model.format,
                     precision=model.precision, backend=model.backend, lineage=tuple(model.lineage),
                     engine=model.engine, runtime_options=dict(model.runtime_options),
                     trust_checkpoint=trust_checkpoint)  # a .pt2 model is inspected before it runs, unless trusted
    ok, why = availability(cand.backend)
    if not ok:
        raise BackendUnavailable(f"{show(folder)}: hashes match, but fixtures cannot run here: {why}")
    fx = manifest.fixtures
    try:
        with np.load(folder / fx.inputs, allow_pickle=False) as z:
            feeds = {k: z[k] for k in z.files}
        with np.load(folder / fx.expected, allow_pickle=False) as z:
            expected = z["logits"]
    except (OSError, ValueError, KeyError) as exc:
        raise GateFailed(f"{show(folder / fx.inputs)}: fixtures cannot be read ({str(exc)[:200]}); "
                         "re-create the bundle") from None
    text_rows = None
    if manifest.text is not None:  # raw text -> the fixture inputs, through the bundled tokenizer and its settings
        from toolkit.pipeline.predict import check_text_fixtures

        text_rows = check_text_fixtures(folder, manifest, feeds)
    with open_session(cand, threads=1) as session:
        got = session.infer(feeds)
    if got.shape != expected.shape:
        raise GateFailed(f"{show(folder)}: fixture outputs have shape {got.shape}, expected {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, rtol=fx.rtol, atol=fx.atol) or not (got.argmax(1) == expected.argmax(1)).all():
        raise GateFailed(f"{show(folder)}: fixture outputs differ from the expected ones (max |diff| {diff:.3g} > atol "
                         f"{fx.atol}, rtol {fx.rtol}); the model or runtime does not reproduce the bundle")
    decisions = _check_decisions(folder, manifest, got)
    return {"bundle": str(folder), "files_checked": info["files_checked"], "fixture_rows": int(expected.shape[0]),
            "decisions_checked": decisions,
            "max_abs_diff": diff, "backend": cand.backend, "ok": True,
            "signature": signature if public_key is not None else ("present, not checked (pass --public-key)"
                                                                    if info["signed"] else "none"),
            "engine_files": info["engine_files"], "text_fixture_rows": text_rows}
