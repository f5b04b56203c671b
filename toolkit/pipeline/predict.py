"""Run a bundle on raw inputs: `toolkit.load_bundle(path).predict(["some text", ...])` and `optkit predict`.

The bundle is proven first (check_integrity: digest, hashes, nothing unlisted), then its own tokenizer encodes the
text with the manifest's settings (max length, padding, truncation), its backend runs the model, and the manifest's
confidence semantics turn logits into answers: probabilities = softmax(logits / temperature), the label from the one
decision rule (toolkit.metrics.thresholds.decide) with the validation-tuned thresholds.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.candidate import Candidate
from toolkit.core.errors import DataError, GateFailed
from toolkit.output.bundle import check_integrity
from toolkit.output.manifest import show

MAX_TEXTS = 100_000  # one call; more is a batch job, not a predict


def bundle_candidate(folder: Path, manifest, trust_checkpoint: bool = False) -> Candidate:
    """The bundled model as a Candidate its backend can open (a .pt2 is inspected before it runs, unless trusted)."""
    model = manifest.model
    return Candidate(id=manifest.candidate, path=folder / model.file, format=model.format, precision=model.precision,
                     backend=model.backend, lineage=tuple(model.lineage), engine=model.engine,
                     runtime_options=dict(model.runtime_options), trust_checkpoint=trust_checkpoint)


def encode(folder: Path, manifest, texts: list[str]) -> dict[str, np.ndarray]:
    """Raw text -> the model's inputs, exactly as the manifest's text contract says (the bundled tokenizer)."""
    from toolkit.intake.hf import load_tokenizer

    spec = manifest.text
    if spec is None:
        raise DataError(f"{show(folder)}: this bundle's model takes {', '.join(t.name for t in manifest.io.inputs)} "
                        "arrays, not text; feed its inputs through its backend (see manifest.json io)")
    # the bundle's tokenizer files are hashed and listed (check_integrity): no code, no pickles among them
    tokenizer = load_tokenizer(folder / spec.tokenizer)
    enc = tokenizer(list(texts), padding=spec.padding, truncation=True, max_length=spec.max_length, return_tensors="np")
    return {name: np.asarray(enc[name]).astype(np.int64) for name in spec.inputs}


@dataclasses.dataclass
class Bundle:
    """A verified bundle, ready to answer."""

    folder: Path
    manifest: Any
    trust_checkpoint: bool = False

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        from toolkit.backends import open_session

        with open_session(bundle_candidate(self.folder, self.manifest, self.trust_checkpoint), threads=1) as session:
            return np.asarray(session.infer(inputs), dtype=np.float32)

    def predict(self, texts: list[str] | str) -> list[dict]:
        """One answer per text: label, calibrated confidence, every class's probability, the threshold applied."""
        from toolkit.metrics.calibration import softmax
        from toolkit.metrics.thresholds import decide

        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or len(texts) > MAX_TEXTS or not all(isinstance(t, str) for t in texts):
            raise DataError(f"predict takes 1 to {MAX_TEXTS} strings, got {len(texts)} items; pass texts as a list of str")
        conf = self.manifest.confidence
        logits = self.logits(encode(self.folder, self.manifest, texts))
        probs = softmax(logits, conf.temperature)
        thresholds = conf.decision_thresholds
        if thresholds is None:
            raise GateFailed(f"{show(self.folder / 'manifest.json')}: no decision_thresholds (written before predict "
                             "existed); re-create the bundle with optkit compress")
        decisions = decide(probs, thresholds)
        labels = self.labels
        out = []
        for text, p, k in zip(texts, probs, decisions):
            applied = thresholds[0] if len(labels) == 2 else thresholds[int(k)]
            out.append({"text": text, "label": labels[int(k)], "index": int(k), "confidence": float(p[int(k)]),
                        "probabilities": {labels[j]: float(p[j]) for j in range(len(labels))},
                        "threshold": float(applied),
                        "rule": "p(" + labels[1] + f") >= {applied:.4f}" if len(labels) == 2 else "argmax"})
        return out


def load_bundle(folder: str | Path, trust_checkpoint: bool = False) -> Bundle:
    """Prove the bundle (digest, hashes, nothing unlisted), then keep it open for predict()."""
    folder = Path(folder)
    manifest, _ = check_integrity(folder)
    return Bundle(folder, manifest, trust_checkpoint)


def check_text_fixtures(folder: Path, manifest, feeds: dict[str, np.ndarray]) -> int:
    """verify, for a text bundle: the bundled tokenizer turns the fixture texts into exactly the fixture inputs."""
    try:
        texts = json.loads((folder / manifest.fixtures.texts).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise GateFailed(f"{show(folder / manifest.fixtures.texts)}: unreadable ({exc}); re-create the bundle") from None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise GateFailed(f"{show(folder / manifest.fixtures.texts)}: must be a JSON list of strings; re-create the bundle")
    again = encode(folder, manifest, texts)
    for name, arr in again.items():
        if name not in feeds or feeds[name].shape != arr.shape or not np.array_equal(feeds[name], arr):
            raise GateFailed(f"{show(folder)}: the bundled tokenizer does not reproduce fixture input '{name}' from "
                             "fixtures/texts.json; the tokenizer files or settings changed: re-create the bundle")
    return len(texts)
