"""`optkit verify`: prove a bundle's integrity (and signature), then re-run its fixtures through the manifest's backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.core.candidate import Candidate
from toolkit.core.errors import GateFailed
from toolkit.output.bundle import check_integrity
from toolkit.output.manifest import show

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
    with open_session(cand, threads=1) as session:
        got = session.infer(feeds)
    if got.shape != expected.shape:
        raise GateFailed(f"{show(folder)}: fixture outputs have shape {got.shape}, expected {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, rtol=fx.rtol, atol=fx.atol) or not (got.argmax(1) == expected.argmax(1)).all():
        raise GateFailed(f"{show(folder)}: fixture outputs differ from the expected ones (max |diff| {diff:.3g} > atol "
                         f"{fx.atol}, rtol {fx.rtol}); the model or runtime does not reproduce the bundle")
    return {"bundle": str(folder), "files_checked": info["files_checked"], "fixture_rows": int(expected.shape[0]),
            "max_abs_diff": diff, "backend": cand.backend, "ok": True,
            "signature": signature if public_key is not None else ("present, not checked (pass --public-key)"
                                                                    if info["signed"] else "none"),
            "engine_files": info["engine_files"]}
