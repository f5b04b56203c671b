"""optkit command line: parse, call one toolkit.api function, render. The commands live beside this file
(compress, bench, bundle, calibrate, catalog); render.py is how output looks, quiet.py keeps libraries quiet.

Exit codes: 0 ok, 1 `report nightly` found a regression, 2 bad input/config, 3 no candidate met the gates or a
bundle failed verification, 4 backend unavailable or ssh:// device unusable, 70 internal error (traceback in a log file), 130 interrupted.
"""
from __future__ import annotations

import typer

from toolkit.cli import bench, bundle, calibrate, catalog, compress, predict, prepare, sweep
from toolkit.cli.guard import GuardedGroup
from toolkit.cli.options import Command

# GuardedGroup: one wrapper around every command (guard.py): one line and an exit code for any failure.
app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Edge model optimization: distill, quantize, convert, calibrate, benchmark, select, bundle.")

app.command(cls=Command)(compress.compress)
app.command("distill", cls=Command)(compress.distill)
app.command(cls=Command)(calibrate.calibrate)
app.command(cls=Command)(bench.bench)
app.command(cls=Command)(bundle.verify)
app.command(cls=Command)(bundle.sign)
app.command(cls=Command)(predict.predict)
app.command(cls=Command)(prepare.prepare)
app.command(cls=Command)(catalog.doctor)
app.command(cls=Command)(sweep.sweep)
app.add_typer(catalog.devices_app, name="devices")
app.add_typer(catalog.recipes_app, name="recipes")
app.add_typer(bench.report_app, name="report")


if __name__ == "__main__":  # pragma: no cover
    app()
