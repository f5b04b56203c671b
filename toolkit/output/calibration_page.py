"""`optkit calibrate`'s page and plots: calibration.md from reports/calibration.md.j2 (style.jinja_env,
style.md_table), reliability.png and thresholds.png (output/plots_calibration.py). Reads the
calibration report dict (pipeline/calibration_report.py) only."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.output.style import fmt, jinja_env, md_table

TEMPLATE = "calibration.md.j2"
MAX_PLOTTED_CLASSES = 4  # multi-class thresholds.png: at most this many (the weakest) classes


def render_markdown(r: dict) -> str:
    c, th = r["calibration"], r["thresholds"]
    cal_rows = [[name, fmt(c[key]), fmt(c[key + "_recalibrated"])]
                for key, name in (("ece", "ECE (top-label, 15 bins)"), ("mce", "MCE"), ("nll", "NLL"),
                                  ("brier", "Brier"), ("classwise_ece", "classwise ECE"))]
    thr_rows = [[r["labels"][v["class"]], fmt(t["threshold"]) + (" (fallback)" if v["fallback"] else ""), fmt(v["value"]),
                 fmt(t["precision"]), fmt(t["recall"]), fmt(t["f1"]), fmt(h["f1"]), fmt(t["value"])]
                for v, t, h in zip(th["validation"], th["test"]["per_class"], th["test_at_0.5"]["per_class"])]
    slice_rows = [[f"{s}={v}", m["n"], fmt(m["macro_f1"]), fmt(m["ece_before"]), fmt(m["ece"])]
                  for s, vals in (r.get("slices") or {}).items() for v, m in vals.items()]
    plots = [(k, v) for k, v in r.get("plots", {}).items() if k in ("reliability", "thresholds")]
    return jinja_env().get_template(TEMPLATE).render(
        r=r, artifact_name=Path(r.get("artifact", {}).get("path", "model")).name, binary=len(r["labels"]) == 2,
        calibration_table=md_table(["test split", "before", "after T"], cal_rows),
        threshold_table=md_table(["class", "threshold", "validation value", "test precision", "test recall", "test F1",
                                  "test F1 at 0.5", "test value"], thr_rows),
        slice_table=md_table(["slice", "n", "macro-F1", "ECE before", "ECE after T"], slice_rows) if slice_rows else "",
        plots=plots)


def write_plots(folder: Path, r: dict, title: str) -> dict[str, str]:
    """reliability.png and thresholds.png (one stacked figure; per-class parts kept when there are several)."""
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
        stack_png(parts, folder / "thresholds.png")
        for p in parts:
            if len(parts) > 1:
                plots[p.stem] = p.name
            else:
                p.unlink()
        plots["thresholds"] = "thresholds.png"
    return plots


def stack_png(parts: list[Path], path: Path) -> None:
    """One tall PNG from per-class figures (padded to the widest with white)."""
    import matplotlib.image as mpimg

    images = [mpimg.imread(str(p))[..., :3] for p in parts]
    width = max(im.shape[1] for im in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0) for im in images]
    mpimg.imsave(str(path), np.clip(np.concatenate(padded, axis=0), 0.0, 1.0))


__all__ = ["render_markdown", "write_plots", "stack_png", "MAX_PLOTTED_CLASSES"]
