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
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolkit.core.errors import CheckpointError, ConfigError, DataError, OptkitError, UnsupportedError
from toolkit.output.style import fmt

CI_TOO_WIDE = 0.02      # macro-F1 bootstrap CI wider than this: the test split cannot tell small differences apart
MAX_PLOTTED_CLASSES = 4  # multi-class thresholds.png: at most this many (the weakest) classes
EVAL_BATCH = 64


# ----------------------------------------------------------------------------- arguments
def parse_metric(metric: str) -> str:
    """The canonical metric string; a typo is a ConfigError (exit 2), not a traceback."""
    from toolkit.metrics.thresholds import parse_metric as _parse

    try:
        return str(_parse(metric))
    except ValueError as exc:
        raise ConfigError(f"--metric: {exc}") from exc


def default_out(artifact: str | Path) -> Path:
    return Path(f"calibration-{Path(artifact).stem}")


# ----------------------------------------------------------------------------- running the artifact
class _ModuleSession:
    """A torch.nn.Module run in-process (state dict + factory): the Session interface, nothing more."""

    def __init__(self, module, names: list[str], threads: int):
        self._module, self._names, self.threads = module, names, threads

    def __enter__(self) -> "_ModuleSession":
        import torch

        self._prev = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self._names))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().float().numpy()

    def describe(self) -> dict:
        import torch

        return {"backend": "torch", "runtime": f"torch {torch.__version__} eager (in-process module)", "threads": self.threads}

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_num_threads(self._prev)


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
    return (lambda: _ModuleSession(module, names, threads)), info


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
    threads = int(threads or max(1, min(4, os.cpu_count() or 1)))
    opener, info = _session_for(Path(artifact), dataset.input_names, model_factory, trust_checkpoint, threads, output)
    val, test, described = run_logits(opener, dataset)
    from toolkit.intake.model_check import is_probabilities, to_logits

    if is_probabilities(val) and is_probabilities(test):  # log(p): exact for temperature scaling (model_check)
        val, test = to_logits(val), to_logits(test)
        info["outputs"] = "probabilities: log(p) used as logits"
    return val, test, {**info, **described, "measured_on": "this host"}


# ----------------------------------------------------------------------------- the arithmetic
def _weakest_classes(per_class_f1: list[float], n_classes: int) -> list[int]:
    if n_classes == 2:
        return [1]  # binary: thresholds are on p(class 1), as in metrics.thresholds
    order = sorted(range(n_classes), key=lambda k: (per_class_f1[k], k))
    return sorted(order[:MAX_PLOTTED_CLASSES]) if n_classes > MAX_PLOTTED_CLASSES else list(range(n_classes))


def calibration_report(logits_val: np.ndarray, y_val: np.ndarray, logits_test: np.ndarray, y_test: np.ndarray,
                       metric: str = "f1", labels: list[str] | None = None,
                       slices: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict:
    """The calibration section from logits alone: T and thresholds fitted on validation, numbers on test."""
    from toolkit.metrics import calibration as cal
    from toolkit.metrics import classification as cls
    from toolkit.metrics import thresholds as thr

    metric = parse_metric(metric)
    zv, zt = np.asarray(logits_val, dtype=np.float64), np.asarray(logits_test, dtype=np.float64)
    yv, yt = np.asarray(y_val).astype(np.int64), np.asarray(y_test).astype(np.int64)
    n = zt.shape[1]
    labels = [str(x) for x in labels] if labels is not None else [str(k) for k in range(n)]
    pred = zt.argmax(1)

    quality = cls.classification_metrics(yt, pred, n, labels)
    ci = [float(v) for v in cls.macro_f1_ci(yt, pred, n, seed=seed)]
    summary = cal.calibration_summary(zv, yv, zt, yt)
    t = summary["temperature"]
    probs_v, probs_t, probs_t_raw = cal.softmax(zv, t), cal.softmax(zt, t), cal.softmax(zt)

    tuned = thr.tune_thresholds(probs_v, yv, metric)
    values = [0.5 if r["fallback"] else float(r["threshold"]) for r in tuned]
    on_test = thr.thresholded_metrics(probs_t, yt, values, metric)
    at_half = thr.thresholded_metrics(probs_t, yt, [0.5] * len(values), metric)

    report: dict[str, Any] = {
        "metric": metric,
        "splits": {"fit": "validation (temperature and thresholds)", "report": "test",
                   "n_val": int(yv.size), "n_test": int(yt.size)},
        "labels": labels,
        "quality": {"macro_f1": quality["macro_f1"], "accuracy": quality["accuracy"], "macro_f1_ci": ci,
                    "macro_f1_ci_width": ci[1] - ci[0], "per_class": quality["per_class"]},
        "calibration": summary,
        "reliability": {"before": cal.reliability_bins(probs_t_raw, yt), "after": cal.reliability_bins(probs_t, yt)},
        "thresholds": {
            "metric": metric, "values": values, "tuned_on": "validation",
            "applied_to": "softmax(logits / temperature)",
            "classes": [r["class"] for r in tuned],
            "validation": tuned,
            "test": on_test,
            "test_at_0.5": at_half,
        },
    }
    # curves for the classes whose threshold matters most (binary: the positive class)
    plotted = _weakest_classes([c["f1"] for c in quality["per_class"]], n)
    curves = {}
    for k in plotted:
        yb = (yt == k).astype(np.int64)
        if 0 < yb.sum() < yb.size:
            curves[k] = thr.threshold_curves(probs_t[:, k], yb)
    report["curves"] = [{"class": k, "label": labels[k], "auc": c["roc"]["auc"],
                         "average_precision": c["pr_curve"]["average_precision"]} for k, c in curves.items()]
    if slices:
        after = cls.slice_metrics(yt, pred, probs_t, slices, n)
        before = cls.slice_metrics(yt, pred, probs_t_raw, slices, n)
        for s, vals in after.items():
            for v, m in vals.items():
                m["ece_before"] = before[s][v]["ece"]
        report["slices"] = after
    report["notes"] = _notes(report)
    report["_curves"] = curves  # plotting input; dropped before writing JSON
    return report


def _notes(r: dict) -> list[str]:
    """Where the test split is too small to tell: said plainly instead of left to the reader."""
    notes = []
    lo, hi = r["quality"]["macro_f1_ci"]
    width = hi - lo
    n_test = r["splits"]["n_test"]
    if width > CI_TOO_WIDE:
        notes.append(f"too small to tell: the macro-F1 95% bootstrap CI [{lo:.4f}, {hi:.4f}] is {width:.4f} wide "
                     f"(> {CI_TOO_WIDE}) on {n_test} test samples; differences in macro-F1 smaller than about "
                     f"{width / 2:.3f} (between candidates, thresholds or temperatures) are not evidence")
        tuned = r["thresholds"]["test"]["per_class"]
        plain = r["thresholds"]["test_at_0.5"]["per_class"]
        gain = float(np.mean([a["f1"] for a in tuned]) - np.mean([b["f1"] for b in plain]))
        if abs(gain) < width / 2:
            notes.append(f"too small to tell: tuned thresholds change the mean one-vs-rest test F1 by {gain:+.4f} "
                         f"versus 0.5, within the noise of {n_test} test samples")
    fallbacks = [v for v in r["thresholds"]["validation"] if v["fallback"]]
    for v in fallbacks:
        notes.append(f"class {r['labels'][v['class']]}: threshold fell back to 0.5 ({v.get('reason', 'unattainable')})")
    if r["calibration"]["temperature"] == 1.0:
        notes.append("temperature scaling did not lower the validation NLL, so T = 1 (the logits are left as they are)")
    return notes


# ----------------------------------------------------------------------------- writing
def _plot(folder: Path, r: dict, title: str) -> dict[str, str]:
    from toolkit.output import plots_calibration as pc

    t = r["calibration"]["temperature"]
    pc.plot_reliability([(f"{title} before", r["reliability"]["before"]),
                         (f"after T = {t:.3f}", r["reliability"]["after"])], folder / "reliability.png")
    plots = {"reliability": "reliability.png"}
    curves = r["_curves"]
    if curves:
        parts = []
        for k, c in curves.items():
            name = folder / f"thresholds-class-{k}.png"
            where = "positive class" if len(r["labels"]) == 2 else ("weak class" if len(r["labels"]) > MAX_PLOTTED_CLASSES else "class")
            pc.plot_threshold_curves(c, name, f"{title}: {where} '{r['labels'][k]}' one-vs-rest, test split, after T = {t:.3f}")
            parts.append(name)
        _stack_png(parts, folder / "thresholds.png")
        for p in parts:
            if len(parts) > 1:
                plots[p.stem] = p.name
            else:
                p.unlink()
        plots["thresholds"] = "thresholds.png"
    return plots


def _stack_png(parts: list[Path], path: Path) -> None:
    """One tall PNG from per-class figures (padded to the widest with white)."""
    import matplotlib.image as mpimg

    images = [mpimg.imread(str(p))[..., :3] for p in parts]
    width = max(im.shape[1] for im in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0) for im in images]
    mpimg.imsave(str(path), np.clip(np.concatenate(padded, axis=0), 0.0, 1.0))


def render_markdown(r: dict) -> str:
    c, q = r["calibration"], r["quality"]
    a = r.get("artifact", {})
    d = r.get("data", {})
    lines = [f"# Calibration — {Path(a.get('path', 'model')).name}", ""]
    if a:
        lines.append(f"Artifact `{a['path']}` ({a['format']}, sha256 {a['sha256'][:12]}) run with "
                     f"{a.get('runtime', a.get('backend', '?'))}, {a.get('threads', '?')} threads, on this host.")
    if d:
        lines.append(f"Data `{d['name']}`: validation n={r['splits']['n_val']} fits T and thresholds; "
                     f"test n={r['splits']['n_test']} reports every number below.")
    lines += ["", f"macro-F1 {q['macro_f1']:.4f} (95% bootstrap CI [{q['macro_f1_ci'][0]:.4f}, {q['macro_f1_ci'][1]:.4f}]), "
              f"accuracy {q['accuracy']:.4f}.", "",
              "## Temperature scaling", "",
              f"T = {c['temperature']:.4f}, fitted on validation by minimising NLL: validation NLL "
              f"{c['val_nll']:.4f} → {c['val_nll_recalibrated']:.4f}.", "",
              "| test split | before | after T |", "|---|---|---|"]
    for key, name in (("ece", "ECE (top-label, 15 bins)"), ("mce", "MCE"), ("nll", "NLL"), ("brier", "Brier"),
                      ("classwise_ece", "classwise ECE")):
        lines.append(f"| {name} | {c[key]:.4f} | {c[key + '_recalibrated']:.4f} |")
    th = r["thresholds"]
    lines += ["", f"## Thresholds ({th['metric']})", "",
              f"Tuned on validation for {th['metric']} on softmax(logits / T), one-vs-rest"
              + (" on the positive class" if len(r["labels"]) == 2 else " per class")
              + "; reported on test, next to the plain 0.5 rule.", "",
              "| class | threshold | validation value | test precision | test recall | test F1 | test F1 at 0.5 | test value |",
              "|---|---|---|---|---|---|---|---|"]
    for v, t, h in zip(th["validation"], th["test"]["per_class"], th["test_at_0.5"]["per_class"]):
        thr_txt = f"{t['threshold']:.4f}" + (" (fallback)" if v["fallback"] else "")
        lines.append(f"| {r['labels'][v['class']]} | {thr_txt} | {fmt(v['value'])} | {t['precision']:.4f} | "
                     f"{t['recall']:.4f} | {t['f1']:.4f} | {h['f1']:.4f} | {fmt(t['value'])} |")
    if r.get("curves"):
        lines += ["", "Curves (test split): " + "; ".join(
            f"class {x['label']}: ROC AUC {x['auc']:.4f}, average precision {x['average_precision']:.4f}" for x in r["curves"]) + "."]
    if r.get("slices"):
        lines += ["", "## Slices (test split)", "", "| slice | n | macro-F1 | ECE before | ECE after T |", "|---|---|---|---|---|"]
        for s, vals in r["slices"].items():
            for v, m in vals.items():
                lines.append(f"| {s}={v} | {m['n']} | {m['macro_f1']:.4f} | {m['ece_before']:.4f} | {m['ece']:.4f} |")
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in r["notes"]]
    lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in r.get("plots", {}).items()
                                        if k in ("reliability", "thresholds")]
    return "\n".join(lines) + "\n"


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
        r["plots"] = _plot(stage, r, Path(artifact).name)
        curves = r.pop("_curves")
        (stage / "calibration.json").write_text(json.dumps(r, indent=2, default=str))
        (stage / "calibration.md").write_text(render_markdown(r))
    del curves
    r["out"] = str(out)
    return r


__all__ = ["calibrate", "calibration_report", "artifact_logits", "parse_metric", "render_markdown", "default_out"]
