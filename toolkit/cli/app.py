"""optkit command line: parse, call one library function, render with rich. Nothing else.

Exit codes: 0 ok, 1 `report nightly` found a regression, 2 bad input/config, 3 no candidate met the gates or a
bundle failed verification, 4 backend unavailable, 70 internal error (traceback in a log file), 130 interrupted.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from toolkit.cli.guard import GuardedGroup
from toolkit.core.errors import OptkitError

# GuardedGroup: one wrapper around every command (cli_guard.py): one line and an exit code for any failure.
app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run into the same --out, reusing its verified finished stages."),
    threshold_metric: str = typer.Option("f1", "--threshold-metric", help="f1 | youden | balanced | precision@X | recall@X"),
    output: Optional[str] = typer.Option(None, "--output", help="Which model output holds the logits (dict key, ONNX output name, tuple position); default: the single output, else 'logits'."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json instead of tables."),
) -> None:
    """Compress a checkpoint for a device: candidates, calibration, benchmarks, selection, report and bundle."""
    from toolkit.api import compress as run_compress

    out_console = err_console if as_json else console
    if checkpoint is None and not as_json:
        console.print("No checkpoint given: using the built-in demo [bold]builtin:digits-cnn[/] (a CNN on scikit-learn's digits).")
    progress = RichProgress(out_console)
    # With --json, stdout carries only the report: libraries that print (ORT's calibrators) go to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet:
            result = run_compress(checkpoint, device=device, recipe=recipe, data=data, out=out, model_factory=model_factory,
                                  trust_checkpoint=trust_checkpoint, seed=seed, overwrite=overwrite,
                                  threshold_metric=threshold_metric, progress=progress, resume=resume,
                                  output=output)
    except OptkitError as exc:
        progress.close()
        _fail(exc)
    except BaseException:  # unexpected errors and Ctrl-C: stop the live display, cli_guard says the one line
        progress.close()
        raise
    progress.close()
    report = result.report.model_dump(by_alias=True)
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
           public_key: Optional[Path] = typer.Option(None, "--public-key", help="PEM public key: also check the bundle's model.sig (optkit sign)."),
           trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Run a bundled .pt2 even if it carries code (pickles, custom objects)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Check a bundle: its manifest's digest, paths and every file's sha256 (nothing unlisted), then re-run its fixtures."""
    from toolkit.api import verify as run_verify

    try:
        result = run_verify(bundle, public_key=public_key, trust_checkpoint=trust_checkpoint)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
    else:
        console.print(f"[green]ok[/]: {result['files_checked']} files match their sha256; {result['fixture_rows']} fixture rows "
                      f"reproduce on {result['backend']} (max |diff| {result['max_abs_diff']:.3g}); signature: {result['signature']}.",
                      highlight=False)


@app.command()
def sign(bundle: Path = typer.Argument(..., help="Bundle folder (runs/<id>/bundle)."),
         key: Path = typer.Option(..., "--key", help="PEM elliptic-curve private key (P-256/384/521)."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Sign a bundle (OpenSSF model-signing format) into BUNDLE/model.sig; check it with verify --public-key."""
    from toolkit.api import sign as run_sign

    try:
        result = run_sign(bundle, key)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
    else:
        console.print(f"[green]signed[/]: {result['files_signed']} files into {result['signature']}", highlight=False)


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """Which backends, precisions and quantization engines this host can run, and why not."""
    from toolkit.api import doctor as run_doctor

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
    from toolkit.api import device as load_device
    from toolkit.api import devices as device_names

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
    from toolkit.api import device as load_device

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
    from toolkit.api import recipe as load_recipe
    from toolkit.api import recipes as recipe_names

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
    from toolkit.api import recipe as load_recipe

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


@app.command()
def calibrate(
    artifact: Path = typer.Argument(..., help="Model file: .onnx, .xml (OpenVINO IR), .pt2, or .safetensors/.pt state dict (+ --model-factory)."),
    data: Path = typer.Option(..., "--data", help=".npz with y + inputs named as the model's inputs (optional split, slice_* arrays)."),
    metric: str = typer.Option("f1", "--metric", help="Threshold metric: f1 | youden | balanced | precision@X | recall@X."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default calibration-<artifact stem>/)."),
    model_factory: Optional[str] = typer.Option(None, "--model-factory", help="package.module:function building the architecture for a state dict."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow checkpoints that carry code (pickled modules, TorchScript)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads (default: up to 4)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print calibration.json instead of tables."),
    output: Optional[str] = typer.Option(None, "--output", help="Which model output holds the logits (dict key, ONNX output name, tuple position)."),
) -> None:
    """Calibration of one artifact: ECE/NLL/Brier before and after temperature, thresholds, slices, plots."""
    from toolkit.api import calibrate as run_calibrate

    try:
        r = run_calibrate(artifact, data, metric=metric, out=out, model_factory=model_factory,
                          trust_checkpoint=trust_checkpoint, threads=threads, overwrite=overwrite, output=output)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(r)
        return
    c, q, th = r["calibration"], r["quality"], r["thresholds"]
    t = Table(title=f"{artifact.name}: test split n={r['splits']['n_test']}, T fitted on validation n={r['splits']['n_val']}")
    t.add_column("metric"), t.add_column("before", justify="right"), t.add_column(f"after T={c['temperature']:.3f}", justify="right")
    for key, name in (("ece", "ECE"), ("mce", "MCE"), ("nll", "NLL"), ("brier", "Brier"), ("classwise_ece", "classwise ECE")):
        t.add_row(name, f"{c[key]:.4f}", f"{c[key + '_recalibrated']:.4f}")
    t.add_row("validation NLL", f"{c['val_nll']:.4f}", f"{c['val_nll_recalibrated']:.4f}")
    console.print(t)
    t = Table(title=f"Thresholds tuned on validation for {th['metric']}, test results")
    for col in ("class", "threshold", "precision", "recall", "F1", "F1 at 0.5"):
        t.add_column(col, justify="right")
    for v, m, h in zip(th["validation"], th["test"]["per_class"], th["test_at_0.5"]["per_class"]):
        t.add_row(r["labels"][v["class"]], f"{m['threshold']:.4f}" + (" (fallback)" if v["fallback"] else ""),
                  f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", f"{h['f1']:.4f}")
    console.print(t)
    lo, hi = q["macro_f1_ci"]
    console.print(f"macro-F1 {q['macro_f1']:.4f} [95% CI {lo:.4f}, {hi:.4f}] · accuracy {q['accuracy']:.4f} · "
                  f"{r['artifact'].get('runtime', r['artifact']['backend'])}, {r['artifact']['threads']} threads, this host")
    for s, vals in (r.get("slices") or {}).items():
        console.print(f"slice {s}: " + "; ".join(f"{v} macro-F1 {m['macro_f1']:.4f}, ECE {m['ece_before']:.4f}→{m['ece']:.4f} (n={m['n']})"
                                                for v, m in vals.items()), highlight=False)
    for note in r["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(f"Written: {r['out']}/calibration.md, calibration.json, reliability.png, thresholds.png")


# --------------------------------------------------------------------------- bench + report nightly (issue 6)
def _ms(v) -> str:
    return "—" if v is None else f"{v:.4g}"


@app.command()
def bench(
    inputs: list[Path] = typer.Argument(..., help="Artifacts (.onnx, OpenVINO .xml, .pt2) or compress run folders."),
    device: str = typer.Option(..., "--device", "-d", help="Device profile: bench settings, stand-in labels (optkit devices list)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Override the profile's threads (capped at this host's cores)."),
    history: Optional[Path] = typer.Option(None, "--history", help="Append the rows to this SQLite history (e.g. bench.db)."),
    backend: Optional[list[str]] = typer.Option(None, "--backend", "-b", help="Only these backends (repeatable): onnxruntime, openvino, torch, tensorrt."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow .pt2 artifacts that carry code (pickles, custom objects)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (a 'rows' list, a 'skipped' list)."),
) -> None:
    """Time artifacts on every backend x precision this host can run; label where every number came from."""
    from toolkit.api import bench as run_bench

    log = None if as_json else (lambda m: err_console.print(f"  [dim]timing[/] {m}", highlight=False, soft_wrap=True))
    try:
        result = run_bench(inputs, device=device, threads=threads, history=history, backends=backend or None, log=log,
                           trust_checkpoint=trust_checkpoint)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
        return
    where = (f"stand-in for {result['stand_in_for']}, not the device" if result["stand_in_for"]
             else f"this host is a {result['device']}")
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
    console.print(t)
    console.print("[dim]RSS MB: peak RSS growth of this process while loading and running the session (psutil). "
                  "Latency: per-call wall time after warmup.[/]")
    if result["history"]:
        console.print(f"Recorded {len(result['rows'])} rows as run {result['history']['run_id']} in {result['history']['path']}.")


report_app = typer.Typer(no_args_is_help=True, help="Reports over recorded results (nightly benchmark history).")
app.add_typer(report_app, name="report")


@report_app.command("nightly")
def report_nightly(
    history: Path = typer.Option(..., "--history", help="SQLite history written by optkit bench --history."),
    out: Path = typer.Option(Path("reports/nightly"), "--out", "-o", help="Report folder (index.html, nightly.md, nightly.json, plots/)."),
    window: int = typer.Option(5, "--window", help="Previous runs each latest point is compared with."),
    metric: str = typer.Option("latency_p50_ms", "--metric", help="latency_p50_ms | latency_p95_ms | latency_p99_ms | throughput_per_s | peak_rss_mb"),
    min_relative: float = typer.Option(0.10, "--min-relative", help="Smallest change flagged, as a fraction of the baseline median."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Trend plots and regressions from a bench history; exits 1 when a series regressed (for CI)."""
    from toolkit.api import nightly as write_nightly_report

    try:
        result = write_nightly_report(history, out, window=window, metric=metric, min_relative=min_relative)
    except OptkitError as exc:
        _fail(exc)
    if as_json:
        _print_json(result)
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
        console.print(t)
        console.print(f"Report: {result['html']}")
    if result["regressions"]:
        raise typer.Exit(1)


@app.command("distill")
def distill_command(
    teacher: Optional[str] = typer.Argument(None, help="Teacher: .pt2 or state dict (+ --model-factory). Omit for the built-in demo."),
    student: str = typer.Option("width:0.25", "--student", help="width:W | every_other_layer | factory (with --student-factory)."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz with a train split (split=train/val/test rows)."),
    device: str = typer.Option("x86-avx512", "--device", "-d", help="Device profile name or alias."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<run-id>)."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs (early stopping on validation macro-F1)."),
    student_factory: Optional[str] = typer.Option(None, "--student-factory", help="package.module:function building the student."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the KD term (0 = no KD)."),
    temperature: float = typer.Option(2.0, "--temperature", help="KD temperature."),
    model_factory: Optional[str] = typer.Option(None, "--model-factory", help="package.module:function for a state-dict teacher."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow checkpoints that carry code (pickled modules, TorchScript)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Distil a teacher into a smaller student, export it to ONNX and int8 it; report with curves and the no-KD ablation."""
    from toolkit.api import distill as run_distill

    progress = RichProgress(console)
    try:
        result = run_distill(teacher, student, data, device, out, epochs, student_factory=student_factory, alpha=alpha,
                             temperature=temperature, model_factory=model_factory, trust_checkpoint=trust_checkpoint,
                             overwrite=overwrite, progress=progress)
    except OptkitError as exc:
        progress.close()
        _fail(exc)
    progress.close()
    report = result.report.model_dump(by_alias=True)
    console.print(_candidates_table(report))
    st = next((c for c in report["candidates"] if c["id"] == "student"), None)
    if st:
        i = st["info"]
        ab = i.get("ablation") or {}
        console.print(f"Student {i['student_params']:,} params vs teacher {i['teacher_params']:,} ({i['param_ratio']:.3f}); "
                      f"val macro-F1 with KD {i['best_val_macro_f1']:.4f}, without KD {ab.get('best_val_macro_f1', float('nan')):.4f}.")
    console.print(f"Selected [bold green]{report['selected']}[/]. Report: {result.run_dir}/report/index.html")


if __name__ == "__main__":  # pragma: no cover
    app()
