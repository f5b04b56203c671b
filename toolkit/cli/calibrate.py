"""optkit calibrate: one artifact's calibration before and after temperature, thresholds, slices."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from toolkit.cli.options import json_flag, overwrite_flag, trust_flag
from toolkit.cli.quiet import quiet
from toolkit.cli.render import console, json_errors, print_json


def calibrate(
    artifact: Path = typer.Argument(..., help="Model file: .onnx, .xml (OpenVINO IR), .pt2, or .safetensors/.pt state dict (+ --model-factory)."),
    data: Path = typer.Option(..., "--data", help=".npz with y + inputs named as the model's inputs (optional split, slice_* arrays)."),
    metric: str = typer.Option("f1", "--metric", help="Threshold metric: f1 | youden | balanced | precision@X | recall@X."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default calibration-<artifact stem>/)."),
    model_factory: Optional[str] = typer.Option(None, "--model-factory", help="package.module:function building the architecture for a state dict."),
    trust_checkpoint: bool = trust_flag(),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads (default: up to 4)."),
    overwrite: bool = overwrite_flag(),
    as_json: bool = json_flag("calibration.json"),
    output: Optional[str] = typer.Option(None, "--output", help="Which model output holds the logits (dict key, ONNX output name, tuple position)."),
) -> None:
    """Calibration of one artifact: ECE/NLL/Brier before and after temperature, thresholds, slices, plots."""
    from toolkit.api import calibrate as run_calibrate

    with json_errors(as_json):
        with quiet() as term:
            r = run_calibrate(artifact, data, metric=metric, out=out, model_factory=model_factory,
                              trust_checkpoint=trust_checkpoint, threads=threads, overwrite=overwrite, output=output)
        term.move_into(Path(r["out"]))
    if as_json:
        print_json(r)
        return
    show = console()
    c, q, th = r["calibration"], r["quality"], r["thresholds"]
    t = Table(title=f"{artifact.name}: test split n={r['splits']['n_test']}, T fitted on validation n={r['splits']['n_val']}")
    t.add_column("metric"), t.add_column("before", justify="right"), t.add_column(f"after T={c['temperature']:.3f}", justify="right")
    for key, name in (("ece", "ECE"), ("mce", "MCE"), ("nll", "NLL"), ("brier", "Brier"), ("classwise_ece", "classwise ECE")):
        t.add_row(name, f"{c[key]:.4f}", f"{c[key + '_recalibrated']:.4f}")
    t.add_row("validation NLL", f"{c['val_nll']:.4f}", f"{c['val_nll_recalibrated']:.4f}")
    show.print(t)
    t = Table(title=f"Thresholds tuned on validation for {th['metric']}, test results")
    for col in ("class", "threshold", "precision", "recall", "F1", "F1 at 0.5"):
        t.add_column(col, justify="right")
    for v, m, h in zip(th["validation"], th["test"]["per_class"], th["test_at_0.5"]["per_class"]):
        t.add_row(r["labels"][v["class"]], f"{m['threshold']:.4f}" + (" (fallback)" if v["fallback"] else ""),
                  f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", f"{h['f1']:.4f}")
    show.print(t)
    lo, hi = q["macro_f1_ci"]
    show.print(f"macro-F1 {q['macro_f1']:.4f} [95% CI {lo:.4f}, {hi:.4f}] · accuracy {q['accuracy']:.4f} · "
               f"{r['artifact'].get('runtime', r['artifact']['backend'])}, {r['artifact']['threads']} threads, this host")
    for s, vals in (r.get("slices") or {}).items():
        show.print(f"slice {s}: " + "; ".join(f"{v} macro-F1 {m['macro_f1']:.4f}, ECE {m['ece_before']:.4f}→{m['ece']:.4f} (n={m['n']})"
                                             for v, m in vals.items()))
    for note in r["notes"]:
        show.print(f"[yellow]note:[/] {note}")
    show.print(f"Written: {r['out']}/calibration.md, calibration.json, reliability.png, thresholds.png")
