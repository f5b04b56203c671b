"""optkit command line: parse, call one library function, render with rich. Nothing else.

Exit codes: 0 ok, 2 bad input/config, 3 gate failed / verification failed / regression, 4 backend unavailable.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import OptkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Edge model optimization: distill, quantize, convert, calibrate, benchmark, select, bundle.")
devices_app = typer.Typer(no_args_is_help=True, help="Device profiles (devices/*.yaml).")
recipes_app = typer.Typer(no_args_is_help=True, help="Recipes (recipes/*.yaml).")
app.add_typer(devices_app, name="devices")
app.add_typer(recipes_app, name="recipes")

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _fail(exc: OptkitError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(exc.exit_code)


def _print_json(obj) -> None:
    # plain print: rich would wrap long lines and break the JSON for machines
    print(json.dumps(obj, indent=2, default=str))


class RichProgress:
    """rich progress bar per stage (passes, evaluate) with a running description."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("[bold]{task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False,
                           # no refresh thread: a 10 Hz redraw on a 2-core host would steal time from timed calls
                           auto_refresh=False)
        self._task = None
        self._p.start()

    def stage(self, name: str, total: int) -> None:
        if self._task is not None:
            self._p.update(self._task, description="done")
        self._task = self._p.add_task("", total=max(total, 1), stage=name)
        self._p.refresh()

    def advance(self, label: str) -> None:
        self._p.update(self._task, advance=1, description=label)
        self._p.refresh()

    def log(self, message: str) -> None:
        self._p.console.print(f"  {message}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._task is not None:
            self._p.update(self._task, description="done")
        self._p.refresh()
        self._p.stop()


def _candidates_table(report: dict) -> Table:
    t = Table(title=f"{report['model']['source']} → {report['device']['name']} (latency measured on this host, batch 1)")
    for col in ("id", "precision", "backend", "macro-F1", "ΔF1 [95% CI]", "ECE→T", "p50 ms", "p95 ms", "MB", "front", "verdict"):
        t.add_column(col, overflow="fold", no_wrap=col in ("id", "p50 ms", "p95 ms"))
    for c in report["candidates"]:
        m = c["metrics"]
        d = m.get("macro_f1_delta")
        delta = f"{d['delta']:+.4f} [{d['low']:+.4f},{d['high']:+.4f}]" if d else "baseline"
        verdict = "[bold green]selected[/]" if c["id"] == report["selected"] else _short_verdict(c)
        t.add_row(c["id"], c["precision"], f"{c['backend']} ({c['measured_on']['threads']}t)", f"{m['macro_f1']:.4f}", delta,
                  f"{m['ece']:.3f}→{m['ece_recalibrated']:.3f}", f"{m['latency_p50_ms']:.4g}", f"{m['latency_p95_ms']:.4g}",
                  f"{m['size_mb']:.3g}", "●" if c.get("on_front") else "", verdict)
    return t


def _short_verdict(c: dict) -> str:
    """One or two words for the terminal; report.md has the full reason."""
    if not c.get("eligible", True):
        return "fails " + ", ".join(k["name"] for k in c["checks"] if not k["ok"])
    why = c.get("why_not") or ""
    return why.split(" (")[0].split(":")[0]


@app.command()
def compress(
    checkpoint: Optional[str] = typer.Argument(None, help="Model: .pt2, .safetensors/.pt state dict (+ --model-factory), or .onnx. Omit for the built-in demo."),
    device: str = typer.Option("jetson-orin-nano", "--device", "-d", help="Device profile name or alias (optkit devices list)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe name or YAML path (default: the device's)."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz with y + inputs named as the model's inputs."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<run-id>)."),
    model_factory: Optional[str] = typer.Option(None, "--model-factory", help="package.module:function building the architecture for a state dict."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow checkpoints that carry code (pickled modules, TorchScript)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the recipe's seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    threshold_metric: str = typer.Option("f1", "--threshold-metric", help="f1 | youden | balanced | precision@X | recall@X"),
    as_json: bool = typer.Option(False, "--json", help="Print report.json instead of tables."),
) -> None:
    """Compress a checkpoint for a device: candidates, calibration, benchmarks, selection, report and bundle."""
    from .pipeline import compress as run_compress

    out_console = err_console if as_json else console
    if checkpoint is None and not as_json:
        console.print("No checkpoint given: using the built-in demo [bold]builtin:digits-cnn[/] (a CNN on scikit-learn's digits).")
    progress = RichProgress(out_console)
    try:
        result = run_compress(checkpoint, device=device, recipe=recipe, data=data, out=out, model_factory=model_factory,
                              trust_checkpoint=trust_checkpoint, seed=seed, overwrite=overwrite,
                              threshold_metric=threshold_metric, progress=progress)
    except OptkitError as exc:
        progress.close()
        _fail(exc)
    progress.close()
    report = result.report
    if as_json:
        _print_json(report)
        return
    console.print(_candidates_table(report))
    if report.get("target_note"):
        console.print(f"[dim]{report['target_note']}.[/]")
    console.print(f"Selected [bold green]{report['selected']}[/] — {report['selection']['rule']}.")
    console.print(f"Report: {result.run_dir}/report/index.html · bundle: {result.run_dir}/bundle · "
                  f"{report['timings']['total_s']} s")


@app.command()
def verify(bundle: Path = typer.Argument(..., help="Bundle folder (runs/<id>/bundle)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Check a bundle: every sha256 in the manifest, then re-run its fixtures."""
    from .bundle import verify as run_verify

    try:
        result = run_verify(bundle)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
    else:
        console.print(f"[green]ok[/]: {result['files_checked']} files match their sha256; {result['fixture_rows']} fixture rows "
                      f"reproduce on {result['backend']} (max |diff| {result['max_abs_diff']:.3g}).")


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """Which backends, precisions and quantization engines this host can run, and why not."""
    from .doctor import doctor as run_doctor

    d = run_doctor()
    if as_json:
        _print_json(d)
        return
    h = d["host"]
    console.print(f"Host: {h['cpu']} ({h['arch']}, {h['cores']} cores), {h['os']}, Python {h['python']}")
    t = Table(title="Backends")
    t.add_column("backend"), t.add_column("usable"), t.add_column("detail", overflow="fold")
    for b in d["backends"]:
        t.add_row(b["backend"], "[green]yes[/]" if b["ok"] else "[red]no[/]", b["detail"])
    console.print(t)
    t = Table(title="Quantization engines")
    t.add_column("engine"), t.add_column("usable"), t.add_column("detail", overflow="fold")
    for e in d["engines"]:
        t.add_row(e["engine"], "[green]yes[/]" if e["ok"] else "[red]no[/]", e["why"])
    console.print(t)
    t = Table(title="Precisions on this host")
    t.add_column("precision"), t.add_column("supported", overflow="fold")
    for k, v in d["precisions"].items():
        t.add_row(k, {True: "[green]yes[/]", False: "[red]no[/]"}.get(v, str(v)) if isinstance(v, bool) else str(v))
    console.print(t)


@devices_app.command("list")
def devices_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """All device profiles."""
    from .devices import device_names, load_device

    try:
        profiles = [load_device(n) for n in device_names()]
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json([p.model_dump() for p in profiles])
        return
    t = Table(title="Device profiles")
    for col in ("name", "aliases", "arch", "backends", "precisions", "p95 budget ms", "size budget MB", "stand-in here"):
        t.add_column(col, overflow="fold")
    for p in profiles:
        t.add_row(p.name, ", ".join(p.aliases), p.arch, " > ".join(p.backends), ", ".join(p.precisions),
                  str(p.budgets.latency_p95_ms or "—"), str(p.budgets.size_mb or "—"), p.stand_in.backend)
    console.print(t)


@devices_app.command("show")
def devices_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """One profile, explained."""
    from .devices import load_device

    try:
        p = load_device(name)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(p.model_dump())
        return
    console.print(f"[bold]{p.name}[/] ({p.arch}){' — aliases: ' + ', '.join(p.aliases) if p.aliases else ''}\n{p.description}")
    t = Table(title="Accelerators (public specs)")
    for col in ("name", "kind", "int8 TOPS", "fp16 TFLOPS", "fp32 TFLOPS", "GB/s", "GB", "source"):
        t.add_column(col, overflow="fold")
    for a in p.accelerators:
        t.add_row(a.name, a.kind, *(str(v) if v is not None else "—" for v in (a.peak_int8_tops, a.peak_fp16_tflops,
                  a.peak_fp32_tflops, a.memory_bandwidth_gbs, a.memory_gb)), a.source)
    console.print(t)
    console.print(f"Backends, preferred first: {' > '.join(p.backends)} · precisions: {', '.join(p.precisions)}")
    console.print(f"Budgets: {p.budgets.model_dump()}")
    console.print(f"Gates: {p.gates.model_dump()}")
    console.print(f"Bench: {p.bench.model_dump()}")
    console.print(f"On a host that is not this device, {p.stand_in.backend} stands in: {p.stand_in.note}")
    console.print(f"Default recipe: {p.default_recipe}")


@recipes_app.command("list")
def recipes_list() -> None:
    """All recipes."""
    from .recipes import load_recipe, recipe_names

    t = Table(title="Recipes")
    t.add_column("name"), t.add_column("steps"), t.add_column("description", overflow="fold")
    try:
        for n in recipe_names():
            r = load_recipe(n)
            t.add_row(n, str(len(r.steps)), r.description)
    except OptkitError as exc:
        _fail(exc)
    console.print(t)


@recipes_app.command("show")
def recipes_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """One recipe: its steps and their options."""
    from .recipes import load_recipe

    try:
        r = load_recipe(name)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(r.model_dump(by_alias=True))
        return
    console.print(f"[bold]{r.name}[/]: {r.description}\nseed {r.seed}, calibration samples {r.calibration_size}")
    t = Table()
    for col in ("id", "pass", "from", "options"):
        t.add_column(col, overflow="fold")
    for s in r.steps:
        t.add_row(s.id, s.pass_name, s.source, json.dumps(r.step_options(s).model_dump()))
    console.print(t)


if __name__ == "__main__":  # pragma: no cover
    app()
