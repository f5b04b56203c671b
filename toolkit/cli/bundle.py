"""optkit verify and optkit sign: what an integrator runs on a bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolkit.cli.options import json_flag, trust_flag
from toolkit.cli.quiet import quiet
from toolkit.cli.render import console, json_errors, print_json


def verify(bundle: Path = typer.Argument(..., help="Bundle folder (runs/<id>/bundle)."),
           public_key: Optional[Path] = typer.Option(None, "--public-key", help="PEM public key: also check the bundle's model.sig (optkit sign)."),
           trust_checkpoint: bool = trust_flag("Run a bundled .pt2 even if it carries code (pickles, custom objects)."),
           as_json: bool = json_flag("the verification")) -> None:
    """Check a bundle: its manifest's digest, paths and every file's sha256 (nothing unlisted), then re-run its fixtures."""
    from toolkit.api import verify as run_verify

    with json_errors(as_json):
        with quiet() as term:  # the fixtures run through a runtime: its prints go to the log
            result = run_verify(bundle, public_key=public_key, trust_checkpoint=trust_checkpoint)
        term.move_into(None)
    if as_json:
        print_json({"ok": True, **result})
        return
    console().print(f"[green]ok[/]: {result['files_checked']} files match their sha256; {result['fixture_rows']} fixture "
                    f"rows reproduce on {result['backend']} (max |diff| {result['max_abs_diff']:.3g}); "
                    f"signature: {result['signature']}.")


def sign(bundle: Path = typer.Argument(..., help="Bundle folder (runs/<id>/bundle)."),
         key: Path = typer.Option(..., "--key", help="PEM elliptic-curve private key (P-256/384/521)."),
         as_json: bool = json_flag()) -> None:
    """Sign a bundle (OpenSSF model-signing format) into BUNDLE/model.sig; check it with verify --public-key."""
    from toolkit.api import sign as run_sign

    with json_errors(as_json):
        result = run_sign(bundle, key)
    if as_json:
        print_json(result)
    else:
        console().print(f"[green]signed[/]: {result['files_signed']} files into {result['signature']}")
