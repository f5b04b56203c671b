"""The library API: what `optkit` commands and Python users call. One function per verb.

    import toolkit
    result = toolkit.compress("model.pt2", data="val.npz", device="jetson-orin-nano")
    print(result.selected.id, result.selected.metrics.macro_f1, result.report_path)

Each function does exactly what the command of the same name does (the CLI parses, calls one of
these, and renders). Implementations live in toolkit.pipeline and toolkit.output and are imported
on call, so `import toolkit` stays light: no runtime (onnxruntime, openvino, tensorrt) loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from toolkit.core.result import RunReport, RunResult, load_report


def compress(checkpoint: str | Path | None = None, *, device: str = "jetson-orin-nano", recipe: str | Path | None = None,
             data: str | Path | None = None, out: str | Path | None = None, model_factory: str | None = None,
             trust_checkpoint: bool = False, seed: int | None = None, overwrite: bool = False,
             threshold_metric: str = "f1", progress=None, resume: bool = False, no_cache: bool = False,
             output: str | None = None, text_column: str = "text", label_column: str = "label",
             measure_on: str | None = None, ssh_key: str | Path | None = None,
             known_hosts: str | Path | None = None, tokenizer: str | Path | None = None) -> RunResult:
    """Compress a checkpoint for a device: plan, run the recipe's passes, evaluate, select, report, bundle.

    Returns the typed RunResult (`.selected`, `.candidate(id)`, `.report_path`, `.bundle_path`, `.report`);
    raises GateFailed (with the report written) when no candidate meets the device's budgets and gates.
    no_cache=True builds every pass afresh (the shared pass cache is neither read nor written).
    measure_on="ssh://user@host[:port]" times every candidate on that device with its own runtimes (its latency,
    memory and output parity replace the host's, which stay beside as measured_on.host_timing); key auth only
    (ssh_key, else ~/.ssh and ssh-agent), and the device's host key must be in known_hosts (~/.ssh/known_hosts).
    """
    from toolkit.pipeline.compress import compress as run

    return run(checkpoint, device=device, recipe=recipe, data=data, out=out, model_factory=model_factory,
               trust_checkpoint=trust_checkpoint, seed=seed, overwrite=overwrite, threshold_metric=threshold_metric,
               progress=progress, resume=resume, no_cache=no_cache, output=output, text_column=text_column, label_column=label_column,
               measure_on=measure_on, ssh_key=ssh_key, known_hosts=known_hosts, tokenizer=tokenizer)


def distill(teacher: str | Path | None, student: str, data: str | Path | None = None, device: str = "x86-avx512",
            out: str | Path | None = None, epochs: int = 30, **options: Any) -> RunResult:
    """Distil `teacher` (None = the built-in demo) into `student`, then compress it (see toolkit.pipeline.distill)."""
    from toolkit.pipeline.distill import distill as run

    return run(teacher, student, data, device, out, epochs, **options)


def calibrate(artifact: str | Path, data: str | Path, **options: Any) -> dict:
    """Calibration of one artifact: ECE/NLL/Brier before and after temperature, thresholds, slices, plots."""
    from toolkit.pipeline.calibrate import calibrate as run

    return run(artifact, data, **options)


def bench(paths: list[Path], device: str, **options: Any) -> dict:
    """Time artifacts (or a compress run folder) on every backend x precision usable here, labelled honestly.

    on="ssh://user@host[:port]" (with ssh_key=, known_hosts=) times them on that device instead, with its runtimes.
    """
    from toolkit.pipeline.bench import bench as run

    return run(paths, device=device, **options)


def verify(folder: str | Path, *, public_key: str | Path | None = None, trust_checkpoint: bool = False) -> dict:
    """Prove a bundle's integrity (and its signature with `public_key`), then re-run its fixtures."""
    from toolkit.pipeline.verify import verify as run

    return run(folder, public_key=public_key, trust_checkpoint=trust_checkpoint)


def load_bundle(folder: str | Path, *, trust_checkpoint: bool = False):
    """A verified bundle (digest, hashes) ready to answer: `.predict(["some text", ...])` -> label, calibrated
    confidence, probabilities and the threshold applied, per text (see toolkit.pipeline.predict)."""
    from toolkit.pipeline.predict import load_bundle as run

    return run(folder, trust_checkpoint=trust_checkpoint)


def predict(folder: str | Path, texts: list[str] | str, *, trust_checkpoint: bool = False) -> list[dict]:
    """`optkit predict BUNDLE "some text"`: load_bundle(folder).predict(texts)."""
    return load_bundle(folder, trust_checkpoint=trust_checkpoint).predict(texts)


def prepare(name: str, log: Callable[[str], None] | None = None) -> dict:
    """Build a built-in demo that needs registry files, once (`optkit prepare minilm-sentiment`); cached after."""
    from toolkit.core.errors import ConfigError
    from toolkit.intake import demo_text

    if name not in (demo_text.NAME, demo_text.DEMO):
        raise ConfigError(f"unknown demo '{name}'; `optkit prepare` knows: {demo_text.NAME}")
    return demo_text.prepare(log=log or (lambda m: None))


def sign(folder: str | Path, key: str | Path) -> dict:
    """Sign a bundle (OpenSSF model-signing) into BUNDLE/model.sig; check it with verify(public_key=...)."""
    from toolkit.output.signing import sign as run

    return run(folder, key)


def doctor() -> dict:
    """Which backends, precisions and quantization engines this host can run, and why not."""
    from toolkit.pipeline.doctor import doctor as run

    return run()


def devices() -> list[str]:
    from toolkit.pipeline.devices import device_names

    return device_names()


def device(name: str):
    """A device profile (validated); `name` may be an alias or a YAML path."""
    from toolkit.pipeline.devices import load_device

    return load_device(name)


def recipes() -> list[str]:
    from toolkit.pipeline.recipes import recipe_names

    return recipe_names()


def recipe(name: str):
    """A recipe (validated, pass options included); `name` may be a YAML path."""
    from toolkit.pipeline.recipes import load_recipe

    return load_recipe(name)


def nightly(history: str | Path, out: str | Path, **options: Any) -> dict:
    """The nightly report over a bench history: trends, noise bands, regressions (see toolkit.output.nightly)."""
    from toolkit.output.nightly import write_nightly_report

    return write_nightly_report(history, out, **options)


def sweep(sweep_file: str | Path, *, executor: str = "local", address: str | None = None, out: str | Path | None = None,
          trust_checkpoint: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """`optkit sweep`: every model x recipe x device of a sweep file as a compress run folder, every measurement in one
    history, then the nightly report (see toolkit.pipeline.sweep). Validates the whole file first (ConfigError);
    returns the summary (also <out>/sweep.json) with "exit_code": 0 all ok, 1 a regression, 3 a combination failed."""
    from toolkit.pipeline.sweep import load_sweep, run_sweep

    return run_sweep(load_sweep(sweep_file, out=out, trust_checkpoint=trust_checkpoint), executor=executor,
                     address=address, log=log)


def report(path: str | Path) -> RunReport:
    """A run's report.json (or its run folder) as the typed RunReport."""
    path = Path(path)
    return load_report(path / "report" / "report.json" if path.is_dir() else path)


ProgressLog = Callable[[str], None]

__all__ = ["compress", "distill", "calibrate", "bench", "verify", "load_bundle", "predict", "prepare", "sign", "doctor", "devices", "device", "recipes",
           "recipe", "nightly", "sweep", "report", "RunResult", "RunReport"]
