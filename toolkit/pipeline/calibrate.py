"""Standalone calibration check of one artifact: `optkit calibrate ARTIFACT --data DATA`.

The same calibration section `compress` computes for every candidate, for any model file
optkit can run (.onnx on ONNX Runtime, .xml on OpenVINO, .pt2 on torch, a state dict +
factory in-process on torch), written on its own into a folder:

    calibration.json   ECE / MCE / NLL / Brier / classwise ECE before and after temperature T,
                       T and the validation NLL it achieved, macro-F1 with its bootstrap CI,
                       per-class thresholds tuned on validation for one metric and their test
                       results, slice metrics, and notes where the test split is too small to tell
    calibration.md     the same, for people
    reliability.png    reliability diagrams before / after T (test split)
    thresholds.png     P/R/F1 vs threshold, PR and ROC curves (test split): the positive class of a
                       binary task, else one row per class (the 4 weakest by test F1 beyond 4 classes)

Definitions are DESIGN.md's: T and thresholds are fitted on the validation split and every
reported number is on the test split. `calibration_report()` does the arithmetic on logits
alone, so other code (and tests) can reuse it without a model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolkit.core.errors import CheckpointError, DataError, OptkitError, UnsupportedError
from toolkit.core.host import effective_threads
from toolkit.output.calibration_page import render_markdown, write_plots
from toolkit.pipeline.calibration_report import calibration_report, parse_metric
from toolkit.pipeline.evaluate import EVAL_BATCH


# ----------------------------------------------------------------------------- arguments
def default_out(artifact: str | Path) -> Path:
    return Path(f"calibration-{Path(artifact).stem}")


# ----------------------------------------------------------------------------- running the artifact
def _session_for(artifact: Path, names: list[str], model_factory: str | None, trust_checkpoint: bool,
                 threads: int, output: str | None = None) -> tuple[Callable[[], Any], dict]:
    """(a zero-argument opener of a session, facts about the artifact) for any file optkit can run."""
    from toolkit.intake import checkpoints as intake
    from toolkit.backends import session_class
    from toolkit.core.candidate import Candidate
    from toolkit.core.artifacts import file_sha256

    if not artifact.exists():
        raise CheckpointError(f"{artifact}: artifact not found; pass a .onnx, .xml (OpenVINO IR), .pt2 or .safetensors file")
    suffix = artifact.suffix.lower()
    if suffix == ".xml":
        if not artifact.with_suffix(".bin").exists():
            raise UnsupportedError(f"{artifact}: OpenVINO IR needs its weights file {artifact.with_suffix('.bin').name} next to it")
        cand = Candidate(id=artifact.stem, path=artifact, format="openvino", precision="fp32", backend="openvino",
                         lineage=("given",), runtime_options={"inference_precision": "f32"})
        info = {"path": str(artifact), "format": "openvino", "sha256": file_sha256(artifact)}
        return (lambda: session_class("openvino")(cand, threads=threads)), info
    loaded = intake.load(artifact, factory=model_factory, trust_checkpoint=trust_checkpoint)
    info = {"path": str(artifact), "format": loaded.kind, "sha256": loaded.sha256}
    if loaded.kind == "onnx":
        from toolkit.intake.model_check import choose_onnx_output

        cand = Candidate(id=artifact.stem, path=artifact, format="onnx", precision="fp32", backend="onnxruntime",
                         lineage=("given",), runtime_options={"output": choose_onnx_output(artifact, output)})
        return (lambda: session_class("onnxruntime")(cand, threads=threads)), info
    from toolkit.intake.model_check import select_module

    module = select_module(loaded.module, output, log_probs=False)  # dict/tuple outputs: the logits only
    from toolkit.backends.torch import ModuleSession

    return (lambda: ModuleSession(module, names, threads)), info


def run_logits(open_session: Callable[[], Any], dataset) -> tuple[np.ndarray, np.ndarray, dict]:
    """Logits on validation and test, checked to be (n, n_classes); data/model mismatches are DataErrors."""
    def run(session, split) -> np.ndarray:
        return np.concatenate([np.asarray(session.infer(b), dtype=np.float32) for b in split.batches(EVAL_BATCH)])

    try:
        with open_session() as session:
            val, test = run(session, dataset.val), run(session, dataset.test)
            described = session.describe()
    except OptkitError:
        raise
    except Exception as exc:  # a runtime rejecting the inputs: say which inputs the data gave
        shapes = ", ".join(f"{k} {tuple(v.shape[1:])} {v.dtype}" for k, v in dataset.val.inputs.items())
        raise DataError(f"{dataset.name}: the model does not accept the data's inputs ({shapes}): "
                        f"{' '.join(str(exc).split())[:200]}; name the .npz arrays after the model inputs "
                        "with matching shapes and dtypes") from exc
    for name, z in (("validation", val), ("test", test)):
        if z.ndim != 2 or z.shape[1] != dataset.n_classes:
            raise DataError(f"{dataset.name}: the model outputs shape {tuple(z.shape)} on the {name} split but the data "
                            f"has {dataset.n_classes} classes; logits must be (batch, n_classes)")
        if not np.all(np.isfinite(z)):
            raise DataError(f"{dataset.name}: the model produced NaN/Inf logits on the {name} split; check the inputs' scale")
    return val, test, described


def artifact_logits(artifact: str | Path, dataset, model_factory: str | None = None, trust_checkpoint: bool = False,
                    threads: int | None = None, output: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(validation logits, test logits, what ran: file facts + backend, runtime, threads) for any runnable artifact."""
    threads = effective_threads(threads)  # the one thread policy: asked, else all usable cores, capped by affinity
    opener, info = _session_for(Path(artifact), dataset.input_names, model_factory, trust_checkpoint, threads, output)
    val, test, described = run_logits(opener, dataset)
    from toolkit.intake.model_check import is_probabilities, to_logits

    if is_probabilities(val) and is_probabilities(test):  # log(p): exact for temperature scaling (model_check)
        val, test = to_logits(val), to_logits(test)
        info["outputs"] = "probabilities: log(p) used as logits"
    return val, test, {**info, **described, "measured_on": "this host"}


# ----------------------------------------------------------------------------- entry point
def calibrate(artifact: str | Path, data: str | Path, metric: str = "f1", out: str | Path | None = None,
              model_factory: str | None = None, trust_checkpoint: bool = False, threads: int | None = None,
              overwrite: bool = False, seed: int = 0, output: str | None = None) -> dict:
    """Run ARTIFACT on DATA's validation and test splits and write the calibration section into `out`.

    Returns the calibration.json content plus "out" (the folder written). Everything is validated
    before any compute; the folder appears only when complete (staged, then renamed).
    """
    from toolkit.intake.data import load_npz
    from toolkit.output.staging import check_target, staged

    metric = parse_metric(metric)
    artifact, data = Path(artifact), Path(data)
    out = Path(out) if out is not None else default_out(artifact)
    if threads is not None:
        from toolkit.core.bounds import check_threads

        check_threads(threads)
    from toolkit.core.bounds import check_seed

    check_seed(seed)
    check_target(out, overwrite)
    dataset = load_npz(data, seed=seed)
    logits_val, logits_test, info = artifact_logits(artifact, dataset, model_factory, trust_checkpoint, threads, output)

    r = calibration_report(logits_val, dataset.val.y, logits_test, dataset.test.y, metric, dataset.labels,
                           dataset.test.slices, seed=seed)
    r = {"artifact": info,
         "data": {"name": dataset.name, "path": str(data), "sha256": dataset.sha256}, **r}
    if "outputs" in info:
        r["notes"].insert(0, "the model outputs probabilities; log(p) is used as logits (exact for temperature scaling)")
    r["notes"][:0] = list(dataset.notes)
    with staged(out, overwrite) as stage:
        r["plots"] = write_plots(stage, r, Path(artifact).name)
        curves = r.pop("_curves")
        (stage / "calibration.json").write_text(json.dumps(r, indent=2, default=str))
        (stage / "calibration.md").write_text(render_markdown(r))
    del curves
    r["out"] = str(out)
    return r


__all__ = ["calibrate", "calibration_report", "artifact_logits", "parse_metric", "render_markdown", "default_out"]
