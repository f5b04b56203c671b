"""How optkit's own output looks on a terminal: consoles, one-line errors, JSON, progress, the candidates table.

Everything here reads the typed result (toolkit.core.result); nothing computes. The default table fits 80
columns (an ML engineer's split terminal, a CI log); `--verbose` adds the wide details table.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import TextIO

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit.core.errors import OptkitError
from toolkit.core.result import CandidateResult, RunReport


def _width(stream: TextIO, piped: int) -> int | None:
    # COLUMNS wins (the user or a test said it); a terminal sizes itself; a pipe gets `piped` columns:
    # 100 for prose and the compact table, 160 for wide tables (bench, nightly) read in CI logs.
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return None if stream.isatty() else piped
    except (AttributeError, ValueError):
        return piped


def make_console(stream: TextIO | None = None, stderr: bool = False, wide: bool = False) -> Console:
    stream = stream or (sys.stderr if stderr else sys.stdout)
    return Console(file=stream, width=_width(stream, 160 if wide else 100), highlight=False)


def console(wide: bool = False) -> Console:
    """A console on the current sys.stdout, made at call time (tests and the quiet context swap streams)."""
    return make_console(wide=wide)


def err_console() -> Console:
    return make_console(stderr=True)


def fail(exc: OptkitError) -> None:
    """The one-line error and the error's exit code (the guard does the same for anything a command misses)."""
    sys.stderr.write(f"error: {exc}\n")
    raise typer.Exit(exc.exit_code)


def print_json(obj) -> None:
    # plain print: rich would wrap long lines and break the JSON for machines
    print(json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def json_errors(enabled: bool):
    """With --json, a failure is JSON on stdout too (machines parse stdout); the guard still says the one line."""
    try:
        yield
    except OptkitError as exc:
        if enabled:
            print_json({"ok": False, "error": str(exc), "error_type": type(exc).__name__, "exit_code": exc.exit_code})
        raise


class LineProgress:
    """The Progress protocol (toolkit.pipeline.run) as one short line per step, each with the elapsed time.

    A line per event, not a live bar: a redraw thread steals time from timed calls on a 2-core host, and a
    bar that jumps from 0/7 to 7/7 says nothing about the 25 s in between; a line that names the pass or
    candidate being worked on does, and it reads the same in a CI log.
    """

    def __init__(self, out: Console):
        self._c = out
        self._t0 = time.monotonic()
        self._stage = ""
        self._total = 0
        self._done = 0
        self._t_stage = self._t0

    def _line(self, text: str, dim: bool = False) -> None:
        stamp = f"{time.monotonic() - self._t0:6.1f}s"
        self._c.print(f"[dim]{stamp}[/] {'[dim]' if dim else ''}{text}{'[/]' if dim else ''}", highlight=False)

    def stage(self, name: str, total: int) -> None:
        self._finish_stage()
        self._stage, self._total, self._done, self._t_stage = name, total, 0, time.monotonic()
        self._line(f"[bold]{name}[/]: {total} step{'s' if total != 1 else ''}")

    def step(self, label: str) -> None:
        where = f"{self._stage} {self._done + 1}/{self._total}" if self._stage else "start"
        self._line(f"  {where} · {escape(label)}")

    def advance(self, label: str) -> None:
        self._done += 1

    def log(self, message: str) -> None:
        self._line(f"    {escape(message)}", dim=True)  # "[cid] ..." is text, not rich markup

    def _finish_stage(self) -> None:
        if self._stage:
            self._line(f"[bold]{self._stage}[/] done: {self._done}/{self._total} in "
                       f"{time.monotonic() - self._t_stage:.1f} s", dim=True)
            self._stage = ""

    def close(self) -> None:
        self._finish_stage()


# ------------------------------------------------------------------------------------------ candidates table
BACKEND_SHORT = {"onnxruntime": "ORT", "openvino": "OpenVINO", "tensorrt": "TensorRT", "executorch": "ExecuTorch",
                 "torch": "torch"}
MARK_SELECTED, MARK_OK, MARK_FAILS, MARK_LOSES = "★", "✓", "✗", "·"
LEGEND = (f"{MARK_SELECTED} selected · {MARK_OK} meets every budget and gate · "
          f"{MARK_FAILS} fails one (-v: why)")


def mark(c: CandidateResult, selected: str | None) -> str:
    if c.id == selected:
        return f"[bold green]{MARK_SELECTED}[/]"
    return f"[red]{MARK_FAILS}[/]" if not c.eligible else MARK_OK


def verdict(c: CandidateResult, selected: str | None) -> str:
    """The full reason, for --verbose (report.md has the same)."""
    if c.id == selected:
        return "selected"
    failed = [k for k in c.checks if not k.ok]
    if failed:
        return "fails " + "; ".join(f"{k.name}" + (f" ({k.reason})" if k.reason else "") for k in failed)
    return c.why_not or "not chosen"


def _delta(c: CandidateResult) -> str:
    d = c.metrics.macro_f1_delta
    return "base" if d is None else f"{d.delta:+.3f}"


def provenance(report: RunReport) -> str:
    """Where the latencies come from, said once (the rows do not repeat it)."""
    dev = report.device.get("name", "?")
    remote = next((c.measured_on for c in report.candidates if c.measured_on.remote), None)
    if remote is not None:  # --measure-on: the device's own numbers; host timings kept as measured_on.host_timing
        return f"p95: measured on the target {remote.remote} ({remote.host}), batch 1; host timings kept in report.json"
    if report.host_is_device:
        return f"p95: measured on this host (same CPU class as {dev}), batch 1"
    return f"p95: measured on this host as a stand-in for {dev}, batch 1"


def compact_table(report: RunReport) -> Table:
    """id, precision, backend, F1, ΔF1, p95, MB, mark: fits 80 columns with ids up to 20 characters."""
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False,
              title_justify="left",
              title=f"{report.model.source} → {report.device.get('name', '?')}")
    t.add_column("id", overflow="fold", max_width=24)
    t.add_column("prec", overflow="fold", max_width=12)
    t.add_column("backend", overflow="fold", max_width=10)
    for col in ("F1", "ΔF1", "p95 ms", "MB"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("", no_wrap=True)
    for c in selected_first(report):
        m = c.metrics
        t.add_row(c.id, c.precision, BACKEND_SHORT.get(c.backend, c.backend), f"{m.macro_f1:.3f}", _delta(c),
                  f"{m.latency_p95_ms:.3g}", f"{m.size_mb:.2g}", mark(c, report.selected),
                  style="bold" if c.id == report.selected else None)
    return t


def selected_first(report: RunReport) -> list[CandidateResult]:
    return sorted(report.candidates, key=lambda c: c.id != report.selected)


def details(out: Console, report: RunReport) -> None:
    """--verbose: every measured number and the full verdict, one block per candidate (reads at 80 columns)."""
    out.print("[bold]details[/] (test split; latencies on this host, batch 1)")
    for c in selected_first(report):
        m, d = c.metrics, c.metrics.macro_f1_delta
        ci = "baseline" if d is None else f"ΔF1 {d.delta:+.4f} [95% CI {d.low:+.4f}, {d.high:+.4f}]"
        out.print(f"{mark(c, report.selected)} [bold]{c.id}[/]: {ci} · ECE {m.ece:.3f}→{m.ece_recalibrated:.3f} "
                  f"after T={m.temperature:.2f} · p50 {m.latency_p50_ms:.4g} ms · p99 {m.latency_p99_ms:.4g} ms · "
                  f"{c.measured_on.threads} threads{' · Pareto front' if c.on_front else ''}")
        out.print(f"    {verdict(c, report.selected)}")


def why_this_one(report: RunReport) -> str:
    """One paragraph: which candidate, by what rule, with its numbers against the fp32 baseline."""
    if report.selected is None:
        failing = sum(1 for c in report.candidates if not c.eligible)
        return (f"No candidate was selected: {failing} of {len(report.candidates)} fail a budget or gate of "
                f"{report.device.get('name', 'the device')} (-v lists each failure; report.md has them all).")
    s, b = report.candidate(report.selected), report.candidate(report.baseline)
    ms, mb = s.metrics, b.metrics
    parts = [f"[bold]{s.id}[/] ({s.precision}, {s.backend}) was selected: {report.selection.rule}."]
    if s.id != b.id:
        d = ms.macro_f1_delta
        ci = f" [95% CI {d.low:+.3f}, {d.high:+.3f}]" if d is not None else ""
        size = f"{mb.size_mb / ms.size_mb:.1f}× smaller" if ms.size_mb > 0 else "size n/a"
        parts.append(f"Against the fp32 baseline {b.id}: macro-F1 {ms.macro_f1:.4f} vs {mb.macro_f1:.4f}"
                     f"{ci}, p95 {ms.latency_p95_ms:.3g} ms vs {mb.latency_p95_ms:.3g} ms on this host, "
                     f"{ms.size_mb:.2g} MB ({size}).")
    est = s.metrics.target_estimate_ms
    if not report.host_is_device and est is not None:
        parts.append(f"Ranked by the estimate for {report.device.get('name')}: {est:.3g} ms (roofline from the "
                     "profile's specs, not measured).")
    losers = [c for c in report.candidates if c.id != s.id]
    eligible = sum(1 for c in losers if c.eligible)
    parts.append(f"{eligible} other candidate(s) met every budget and gate; {len(losers) - eligible} did not.")
    return " ".join(parts)


def render_run(out: Console, report: RunReport, verbose: bool = False) -> None:
    out.print(compact_table(report))
    out.print(f"[dim]{provenance(report)}[/]")  # under the table, not its caption: a caption wraps at the table's width
    out.print(f"[dim]{LEGEND}[/]")
    if verbose:
        details(out, report)
    if report.target_note:
        out.print(f"[dim]{report.target_note}.[/]")
    out.print()
    out.print(why_this_one(report))
