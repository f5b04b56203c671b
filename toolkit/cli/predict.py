"""optkit predict: run a bundle on raw text; labels with calibrated confidences and the thresholds applied."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from toolkit.cli.options import json_flag, trust_flag
from toolkit.cli.quiet import quiet
from toolkit.cli.render import console, json_errors, print_json


def predict(bundle: Path = typer.Argument(..., help="Bundle folder of a text model (runs/<id>/bundle)."),
            texts: List[str] = typer.Argument(..., help="One or more texts, each quoted."),
            trust_checkpoint: bool = trust_flag("Run a bundled .pt2 even if it carries code (pickles, custom objects)."),
            as_json: bool = json_flag("the predictions")) -> None:
    """Label texts with a bundle: its tokenizer and settings, its model, softmax(logits / T), its tuned thresholds."""
    from toolkit.api import predict as run_predict

    with json_errors(as_json):
        with quiet() as term:  # tokenizer and runtime output go to the log
            answers = run_predict(bundle, list(texts), trust_checkpoint=trust_checkpoint)
        term.move_into(None)
    if as_json:
        print_json({"ok": True, "predictions": answers})
        return
    out = console()
    for a in answers:
        text = a["text"] if len(a["text"]) <= 48 else a["text"][:47] + "…"
        out.print(f"{a['label']:<12} {a['confidence']:.3f}  ({a['rule']})  {text}", markup=False, highlight=False)
