"""optkit compress and optkit distill: run, show what is being done, then the compact table and why."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolkit.cli.options import flag, json_flag, known_hosts_option, overwrite_flag, ssh_key_option, trust_flag, verbose_flag
from toolkit.cli.quiet import quiet
from toolkit.cli.render import LineProgress, json_errors, make_console, render_run
from toolkit.core.errors import GateFailed
from toolkit.core.result import RunResult

DEMO_LINE = "No checkpoint given: using the built-in demo [bold]builtin:digits-cnn[/] (a CNN on scikit-learn's digits)."


def final_line(out, result: RunResult, log: Path) -> None:
    """The last line: where the report is, where library output went, and the exit status."""
    # paths are printed whole (soft_wrap): a path broken over two lines cannot be copied
    out.print(f"report: {result.report_path}", soft_wrap=True)
    out.print(f"bundle: {result.bundle_path or '— (nothing selected)'} · library log: {log}", soft_wrap=True)
    out.print(f"[green]done[/] in {result.report.timings.get('total_s', 0):.1f} s · exit 0")


def compress(
    checkpoint: Optional[str] = typer.Argument(None, help="Model: .pt2, .safetensors/.pt state dict (+ --model-factory), .onnx, or a Hugging Face folder. Omit for the built-in demo."),
    device: str = typer.Option("jetson-orin-nano", "--device", "-d", help="Device profile name or alias (optkit devices list)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe name or YAML path (default: the device's)."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz with y + inputs named as the model's inputs, or raw text (.csv/.jsonl/.parquet) with a tokenizer (see --tokenizer)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<run-id>)."),
    model_factory: Optional[str] = typer.Option(None, "--model-factory", help="package.module:function building the architecture for a state dict."),
    trust_checkpoint: bool = trust_flag(),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the recipe's seed."),
    overwrite: bool = overwrite_flag(),
    resume: bool = flag("--resume", help="Continue an interrupted run into the same --out, reusing its verified finished stages."),
    no_cache: bool = flag("--no-cache", help="Build every pass afresh: the shared pass cache is neither read nor written."),
    threshold_metric: str = typer.Option("f1", "--threshold-metric", help="f1 | youden | balanced | precision@X | recall@X"),
    output: Optional[str] = typer.Option(None, "--output", help="Which model output holds the logits (dict key, ONNX output name, tuple position); default: the single output, else 'logits'."),
    text_column: str = typer.Option("text", "--text-column", help="Raw-text data (.csv/.jsonl/.parquet): the column holding the text."),
    label_column: str = typer.Option("label", "--label-column", help="Raw-text data: the column holding the label (class name or index)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Raw-text data: the tokenizer folder (tokenizer.save_pretrained). Default: a Hugging Face folder's own, else the tokenizer files next to the checkpoint."),
    measure_on: Optional[str] = typer.Option(None, "--measure-on", help="Time every candidate on this device over SSH: ssh://user@host[:port][?python=PATH]."),
    ssh_key: Optional[Path] = ssh_key_option(),
    known_hosts: Optional[Path] = known_hosts_option(),
    verbose: bool = verbose_flag(),
    as_json: bool = json_flag("report.json"),
) -> None:
    """Compress a checkpoint for a device: candidates, calibration, benchmarks, selection, report and bundle."""
    from toolkit.api import compress as run_compress

    # Library output goes to a log file while the run works; an error propagates out of the `with` first, so the
    # guard's one line reaches the real terminal.
    with json_errors(as_json), quiet(verbose) as term:
        shown = make_console(term.err if as_json else term.out)  # with --json stdout carries the report only
        if checkpoint is None:
            shown.print(DEMO_LINE)
        progress = LineProgress(shown)
        progress.step("checking inputs, loading the checkpoint and the data")
        gate: GateFailed | None = None
        try:
            result = run_compress(checkpoint, device=device, recipe=recipe, data=data, out=out,
                                  model_factory=model_factory, trust_checkpoint=trust_checkpoint, seed=seed,
                                  overwrite=overwrite, threshold_metric=threshold_metric, progress=progress,
                                  resume=resume, no_cache=no_cache, output=output, text_column=text_column,
                                  label_column=label_column, measure_on=measure_on, ssh_key=ssh_key,
                                  known_hosts=known_hosts, tokenizer=tokenizer)
        except GateFailed as exc:  # the run finished and wrote its report; nothing met the gates
            if getattr(exc, "result", None) is None or as_json:
                raise
            gate, result = exc, exc.result
        finally:
            progress.close()
    log = term.move_into(result.run_dir)
    if as_json:
        print(result.report.to_json())
        return
    shown = make_console()
    render_run(shown, result.report, verbose)
    if gate is not None:
        shown.print(f"report: {result.report_path} · library log: {log}", soft_wrap=True)
        raise gate  # the guard says the one error line and exits 3
    final_line(shown, result, log)


def distill(
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
    trust_checkpoint: bool = trust_flag(),
    overwrite: bool = overwrite_flag(),
    verbose: bool = verbose_flag(),
) -> None:
    """Distil a teacher into a smaller student, export it to ONNX and int8 it; report with curves and the no-KD ablation."""
    from toolkit.api import distill as run_distill

    with quiet(verbose) as term:
        shown = make_console(term.out)
        progress = LineProgress(shown)
        progress.step("checking inputs, loading the teacher and the data")
        gate: GateFailed | None = None
        try:
            result = run_distill(teacher, student, data, device, out, epochs, student_factory=student_factory,
                                 alpha=alpha, temperature=temperature, model_factory=model_factory,
                                 trust_checkpoint=trust_checkpoint, overwrite=overwrite, progress=progress)
        except GateFailed as exc:  # report written, no student qualified: still show the table and the ablation
            if getattr(exc, "result", None) is None:
                raise
            gate, result = exc, exc.result
        finally:
            progress.close()
    log = term.move_into(result.run_dir)
    shown = make_console()
    render_run(shown, result.report, verbose)
    st = next((c for c in result.report.candidates if c.id == "student"), None)
    if st is not None:
        i = st.info
        ab = i.get("ablation") or {}
        shown.print(f"Student {i['student_params']:,} params vs teacher {i['teacher_params']:,} ({i['param_ratio']:.3f}); "
                    f"best val macro-F1 with KD {i['best_val_macro_f1']:.4f}, without KD (ablation) "
                    f"{ab.get('best_val_macro_f1', float('nan')):.4f}.")
    if gate is not None:
        shown.print(f"report: {result.report_path} · library log: {log}", soft_wrap=True)
        raise gate  # the guard says the one error line and exits 3
    final_line(shown, result, log)


__all__ = ["compress", "distill"]
