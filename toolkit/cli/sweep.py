"""optkit sweep: every model x recipe x device of a sweep file, one progress line per combination and phase,
then an 80-column summary table. Exit: 0 all ok, 1 the nightly report flags a regression, 3 a combination failed
(named, with its reason), 2 a bad sweep file (before any compute), 4 the executor's runtime is missing."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolkit.cli.options import json_flag, trust_flag, verbose_flag
from toolkit.cli.quiet import quiet
from toolkit.cli.render import json_errors, make_console, print_json
from toolkit.core.errors import GateFailed

# + spaces: 79 wide. "timed": the p50's kind of number — on the device ("target") or this host standing in for it.
COLUMNS = (("combination", 26), ("status", 11), ("selected", 15), ("F1", 6), ("p50 ms", 8), ("timed", 8))


def _cell(text, width: int) -> str:
    text = "—" if text is None or text == "" else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def table_lines(summary: dict) -> list[str]:
    """The summary as fixed-width lines that fit 80 columns (a CI log's width), one per combination."""
    lines = [" ".join(_cell(name, w).ljust(w) for name, w in COLUMNS), " ".join("-" * w for _, w in COLUMNS)]
    for r in summary["combinations"]:
        f1 = None if r["macro_f1"] is None else f"{r['macro_f1']:.4f}"
        p50 = None if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.3g}"
        cells = (r["id"], r["status"], r["selected"], f1, p50, r.get("latency_kind"))
        lines.append(" ".join(_cell(c, w).ljust(w) for c, (_, w) in zip(cells, COLUMNS)).rstrip())
    return lines


def sweep(
    sweep_file: Path = typer.Argument(..., help="sweep.yaml: models (checkpoint + data), recipes, devices; unknown keys are errors."),
    executor: str = typer.Option("local", "--executor", "-e", help="local (in-process, serial) | ray (fans out on a Ray cluster)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local Ray instance."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep folder (runs/<model>-<recipe>-<device>/, sweep.json, nightly/); default the file's out: or runs/sweep-<name>."),
    trust_checkpoint: bool = trust_flag("Allow checkpoints that carry code for every model of the sweep (never read from the file)."),
    verbose: bool = verbose_flag(),
    as_json: bool = json_flag("the sweep summary"),
) -> None:
    """Run a matrix of models x recipes x devices: run folders, one history, the nightly report, a CI exit code."""
    from toolkit.api import sweep as run_sweep

    with json_errors(as_json), quiet(verbose) as term:
        shown = make_console(term.err if as_json else term.out)
        summary = run_sweep(sweep_file, executor=executor, address=address, out=out,
                            trust_checkpoint=trust_checkpoint, log=lambda m: shown.print(m, soft_wrap=True, markup=False))
    log = term.move_into(Path(summary["out"]))
    if as_json:
        print_json(summary)
        if summary["exit_code"]:
            raise typer.Exit(summary["exit_code"])
        return
    shown = make_console()
    for line in table_lines(summary):
        shown.print(line, markup=False, soft_wrap=True)
    night = summary["nightly"]
    shown.print(f"{summary['n_ok']} of {len(summary['combinations'])} combinations ok in {summary['wall_s']:.1f} s "
                f"({summary['executor']} executor, {len(summary['nodes'])} node(s))", markup=False)
    shown.print(f"summary: {summary['out']}/sweep.json · history: {summary['history']} · library log: {log}",
                soft_wrap=True, markup=False)
    if night.get("html"):
        shown.print(f"nightly: {night['html']} ({night['n_regressions']} regression(s), {night['n_ok']} ok, "
                    f"{night['n_insufficient']} without enough history)", soft_wrap=True, markup=False)
    else:
        shown.print(f"nightly: {night.get('skipped') or night.get('error')}", markup=False)
    if summary["failures"]:
        raise GateFailed(f"{sweep_file}: {len(summary['failures'])} combination(s) failed: "
                         + "; ".join(f"{f['id']}: {f['reason']}" for f in summary["failures"])[:600]
                         + f"; see {summary['out']}/sweep.json")
    if summary["exit_code"] == 1:
        shown.print("regression flagged by the nightly report: exit 1", markup=False)
        raise typer.Exit(1)


__all__ = ["sweep", "table_lines"]
