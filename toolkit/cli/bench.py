"""optkit bench and optkit report nightly: timings labelled with where they were measured, and their trends."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from toolkit.cli.options import Command, Group, json_flag, known_hosts_option, ssh_key_option, trust_flag
from toolkit.cli.quiet import quiet
from toolkit.cli.render import console, json_errors, make_console, print_json

report_app = typer.Typer(cls=Group, no_args_is_help=True, help="Reports over recorded results (nightly benchmark history).")


def _ms(v) -> str:
    return "—" if v is None else f"{v:.4g}"


def bench(
    inputs: list[Path] = typer.Argument(..., help="Artifacts (.onnx, OpenVINO .xml, .pt2) or compress run folders."),
    device: str = typer.Option(..., "--device", "-d", help="Device profile: bench settings, stand-in labels (optkit devices list)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Override the profile's threads (capped at this host's cores)."),
    history: Optional[Path] = typer.Option(None, "--history", help="Append the rows to this SQLite history (e.g. bench.db)."),
    backend: Optional[list[str]] = typer.Option(None, "--backend", "-b", help="Only these backends (repeatable): onnxruntime, openvino, torch, tensorrt."),
    trust_checkpoint: bool = trust_flag("Allow .pt2 artifacts that carry code (pickles, custom objects)."),
    as_json: bool = json_flag("the result (a 'rows' list, a 'skipped' list)"),
    on: Optional[str] = typer.Option(None, "--on", help="Time on this device over SSH instead: ssh://user@host[:port][?python=PATH]."),
    ssh_key: Optional[Path] = ssh_key_option(),
    known_hosts: Optional[Path] = known_hosts_option(),
) -> None:
    """Time artifacts on every backend x precision this host can run; label where every number came from."""
    from toolkit.api import bench as run_bench

    with json_errors(as_json):
        with quiet() as term:
            shown = make_console(term.err)
            log = None if as_json else (lambda m: shown.print(f"  [dim]timing[/] {m}", highlight=False))
            result = run_bench(inputs, device=device, threads=threads, history=history, backends=backend or None,
                               log=log, trust_checkpoint=trust_checkpoint, on=on, ssh_key=ssh_key,
                               known_hosts=known_hosts)
        term.move_into(None)
    if as_json:
        print_json(result)
        return
    where = (f"stand-in for {result['stand_in_for']}, not the device" if result["stand_in_for"]
             else "measured on the target over SSH" if result.get("remote") else f"this host is a {result['device']}")
    t = Table(title=f"optkit bench · device profile {result['device']} · measured on {result['measured_on']} ({where})")
    for col in ("model", "backend", "precision", "threads", "batch", "p50 ms", "p95 ms", "p99 ms", "items/s", "RSS MB", "measured on"):
        t.add_column(col, overflow="fold", no_wrap=col in ("p50 ms", "p95 ms", "p99 ms", "batch", "threads"))
    for r in result["rows"]:
        t.add_row(r["model"], r["backend"], r["precision"], str(r["threads"]), str(r["batch"]), _ms(r["latency_p50_ms"]),
                  _ms(r["latency_p95_ms"]), _ms(r["latency_p99_ms"]), f"{r['throughput_per_s']:.0f}",
                  f"{r['peak_rss_mb']:.3g}", f"{r['runtime']}, {r['runs']} runs")
    for s in result["skipped"]:
        t.add_row(s["model"], s["backend"], s["precision"], "", "", "—", "—", "—", "—", "—",
                  f"[yellow]{s['status']}[/]: {s['reason']}")
    out = console(wide=True)
    out.print(t)
    memory = (result["rows"][0]["memory"] if result.get("remote") and result["rows"] else
              "peak RSS growth of this process while loading and running the session (psutil)")
    out.print(f"[dim]RSS MB: {memory}. Latency: per-call wall time after warmup.[/]")
    if result["history"]:
        out.print(f"Recorded {len(result['rows'])} rows as run {result['history']['run_id']} in {result['history']['path']}.")


@report_app.command("nightly", cls=Command)
def report_nightly(
    history: Path = typer.Option(..., "--history", help="SQLite history written by optkit bench --history."),
    out: Path = typer.Option(Path("reports/nightly"), "--out", "-o", help="Report folder (index.html, nightly.md, nightly.json, plots/)."),
    window: int = typer.Option(5, "--window", help="Previous runs each latest point is compared with."),
    metric: str = typer.Option("latency_p50_ms", "--metric", help="latency_p50_ms | latency_p95_ms | latency_p99_ms | throughput_per_s | peak_rss_mb"),
    min_relative: float = typer.Option(0.10, "--min-relative", help="Smallest change flagged, as a fraction of the baseline median."),
    as_json: bool = json_flag("the findings"),
) -> None:
    """Trend plots and regressions from a bench history; exits 1 when a series regressed (for CI)."""
    from toolkit.api import nightly as write_nightly_report

    with json_errors(as_json):
        result = write_nightly_report(history, out, window=window, metric=metric, min_relative=min_relative)
    if as_json:
        print_json(result)
    else:
        t = Table(title=f"Nightly: {len(result['regressions'])} regression(s), {len(result['ok'])} ok, "
                        f"{len(result['insufficient'])} without enough history ({metric})")
        for col in ("status", "model", "backend", "precision", "batch", "device", "latest", "baseline", "ratio", "measured on"):
            t.add_column(col, overflow="fold")
        for f in result["regressions"] + result["insufficient"] + result["ok"]:
            s = f["series"]
            status = "[bold red]regression[/]" if f["status"] == "regression" else f["status"]
            t.add_row(status, s["model"], s["backend"], s["precision"], str(s["batch"]), s["device"], _ms(f["latest"]),
                      _ms(f["baseline_median"]), "—" if f["ratio"] is None else f"×{f['ratio']:.2f}",
                      f"{f['measured_on']} ({f['threads']} threads)")
        out_c = console(wide=True)
        out_c.print(t)
        out_c.print(f"Report: {result['html']}")
    if result["regressions"]:
        raise typer.Exit(1)


__all__ = ["bench", "report_app"]
