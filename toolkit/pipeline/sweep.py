"""A sweep: models x recipes x devices, every combination one compress run, one history, one nightly report.

    sweep = load_sweep("sweep.yaml")                 # everything validated here, before any compute
    summary = run_sweep(sweep, executor="ray")       # toolkit/pipeline/executors/: local (default) or ray

The file (sweep.yaml; paths are relative to the file's folder):

    models:
      - {name: digits, checkpoint: builtin:digits-cnn}
      - {name: text, checkpoint: enc.safetensors, model_factory: pkg.mod:build, data: text.npz}
    recipes: [default, my-recipe.yaml]
    devices: [x86-avx512, jetson-orin-nano]
    out: sweeps/nightly            # optional (--out wins); default runs/sweep-<file stem>
    history: /ci/cache/bench.db    # optional; default <out>/history.db
    nightly: {window: 5, metric: latency_p50_ms, min_relative: 0.10}

Trust is never read from a file: a checkpoint that carries code needs --trust-checkpoint on the command line.
Phases (timing kept honest): build (passes + accuracy outputs into the shared cache, fanned out), then measure
(compress again: passes and outputs hit the cache, so only timing, selection, report and bundle run), each
measure owning its node's cores. See executors/tasks.py.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolkit.core.errors import ConfigError, OutputError
from toolkit.core.yaml_io import load_yaml_mapping, pydantic_message

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MARKER = ".optkit-sweep"        # an optkit sweep folder: re-running the sweep reuses its finished work
SUMMARY = "sweep.json"


class SweepModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    checkpoint: str = "builtin:digits-cnn"
    data: str | None = None
    model_factory: str | None = None
    output: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    tokenizer: str | None = None         # raw text for a .pt2/.onnx/safetensors model: its tokenizer folder


class NightlySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out: str | None = None               # default <out>/nightly
    window: int = Field(default=5, ge=1, le=1000)
    metric: str = "latency_p50_ms"
    min_relative: float = Field(default=0.10, ge=0, le=10)


class SweepDevice(BaseModel):
    """A device entry timed on the board itself: {profile: jetson-orin-nano, measure_on: ssh://nvidia@jetson}
    (compress --measure-on); a plain name or YAML path times on the sweep's nodes as a stand-in."""
    model_config = ConfigDict(extra="forbid")
    profile: str
    measure_on: str
    ssh_key: str | None = None
    known_hosts: str | None = None


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[SweepModel] = Field(min_length=1)
    recipes: list[str] = Field(min_length=1)
    devices: list[str | SweepDevice] = Field(min_length=1)
    out: str | None = None
    history: str | None = None
    seed: int | None = Field(default=None, ge=0)
    nightly: NightlySettings = NightlySettings()


@dataclasses.dataclass(frozen=True)
class Combination:
    """One model x recipe x device: plain, picklable data (a Ray task receives it as is)."""

    id: str
    model: str
    recipe: str          # the recipe's name (folder names, the summary)
    recipe_ref: str      # what compress loads: a name or an absolute path
    device: str          # the profile's name
    device_ref: str      # what compress loads: a name, alias or an absolute path
    checkpoint: str
    data: str | None
    model_factory: str | None
    output: str | None
    text_column: str
    label_column: str
    tokenizer: str | None
    seed: int | None
    measure_on: str | None   # ssh:// board that times this combination (None: the node it runs on)
    ssh_key: str | None
    known_hosts: str | None
    trust_checkpoint: bool
    run_dir: str
    build_dir: str

    def label(self) -> str:
        return f"{self.model} x {self.recipe} x {self.device}"


@dataclasses.dataclass
class Sweep:
    path: Path
    out: Path
    history: Path
    nightly_out: Path
    nightly: NightlySettings
    combinations: list[Combination]


def _local(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def load_sweep(path: str | Path, out: str | Path | None = None, trust_checkpoint: bool = False) -> Sweep:
    """The sweep file, validated completely: keys, every recipe and device, every checkpoint and data path, unique
    names, the history and the output folder. Raises a one-line ConfigError/OutputError naming the file and key."""
    from toolkit.pipeline.devices import load_device
    from toolkit.pipeline.recipes import load_recipe

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found; pass a sweep.yaml (models, recipes, devices)")
    raw = load_yaml_mapping(path, "sweep")
    for i, m in enumerate(raw.get("models") or []):
        if isinstance(m, dict) and "trust_checkpoint" in m:  # trust is the user's word at the command line, not a file's
            raise ConfigError(f"{path}: models.{i}.trust_checkpoint: trust is never read from a file; remove the key "
                              "and pass --trust-checkpoint to optkit sweep if you trust every checkpoint listed")
    for i, d in enumerate(raw.get("devices") or [] if isinstance(raw.get("devices"), list) else []):
        if isinstance(d, dict):  # a board entry checked on its own: its errors name devices.N.key, not the union's arms
            try:
                SweepDevice.model_validate(d)
            except ValidationError as exc:
                where = "; ".join(f"devices.{i}.{part}" for part in pydantic_message("", exc)[2:].split("; "))
                raise ConfigError(f"{path}: {where}") from exc
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(pydantic_message(path, exc)) from exc
    base = path.resolve().parent
    _unique(path, "models", [m.name for m in spec.models])
    recipes: list[tuple[str, str]] = []  # (name, what compress loads)
    for i, r in enumerate(spec.recipes):
        local = _local(base, r)
        ref = str(local) if local.suffix in (".yaml", ".yml") else r
        try:
            recipes.append((load_recipe(ref).name, ref))
        except ConfigError as exc:
            raise ConfigError(f"{path}: recipes.{i}: {exc}") from exc
    _unique(path, "recipes (their name: fields)", [n for n, _ in recipes])
    devices = []
    for i, d in enumerate(spec.devices):
        entry = d if isinstance(d, SweepDevice) else None
        name = entry.profile if entry else d
        local = _local(base, name)
        ref = str(local) if local.suffix in (".yaml", ".yml") else name
        try:
            devices.append((load_device(ref).name, ref, _checked_target(base, entry)))
        except ConfigError as exc:
            raise ConfigError(f"{path}: devices.{i}: {exc}") from exc
    _unique(path, "devices (after resolving aliases)", [n for n, _, _ in devices])
    models = [_checked_model(path, base, i, m) for i, m in enumerate(spec.models)]

    out_dir = Path(out) if out is not None else (_local(base, spec.out) if spec.out else Path("runs") / f"sweep-{path.stem}")
    out_dir = out_dir.resolve()
    _check_out(out_dir)
    history = _local(base, spec.history).resolve() if spec.history else out_dir / "history.db"
    _check_history(path, history, out_dir)
    from toolkit.output.history import check_metric

    try:
        check_metric(spec.nightly.metric)
    except ConfigError as exc:
        raise ConfigError(f"{path}: nightly.metric: {exc}") from exc
    nightly_out = _local(base, spec.nightly.out).resolve() if spec.nightly.out else out_dir / "nightly"
    combos = []
    for m in models:
        for rname, ref in recipes:
            for dev, dev_ref, target in devices:
                cid = f"{m.name}-{rname}-{dev}"
                combos.append(Combination(
                    id=cid, model=m.name, recipe=rname, recipe_ref=ref, device=dev, device_ref=dev_ref, checkpoint=m.checkpoint,
                    data=m.data, model_factory=m.model_factory, output=m.output, text_column=m.text_column,
                    label_column=m.label_column, tokenizer=m.tokenizer, seed=spec.seed, **target,
                    trust_checkpoint=trust_checkpoint,
                    run_dir=str(out_dir / "runs" / cid), build_dir=str(out_dir / ".build" / cid)))
    _unique(path, "combinations (model-recipe-device folder names)", [c.id for c in combos])
    return Sweep(path=path, out=out_dir, history=history, nightly_out=nightly_out, nightly=spec.nightly,
                 combinations=combos)


def _unique(path: Path, what: str, names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: {what} must be unique; listed twice: {', '.join(dup)}")


def _checked_model(path: Path, base: Path, i: int, m: SweepModel) -> SweepModel:
    """Paths made absolute (tasks run elsewhere) and checked to exist; a factory checked for its form."""
    update: dict[str, Any] = {}
    if not m.checkpoint.startswith("builtin:"):
        ck = _local(base, m.checkpoint)
        if not ck.exists():
            raise ConfigError(f"{path}: models.{i}.checkpoint: {ck} not found; fix the path (relative to the sweep file)")
        update["checkpoint"] = str(ck.resolve())
    if m.data is not None:
        data = _local(base, m.data)
        if not data.is_file():
            raise ConfigError(f"{path}: models.{i}.data: {data} not found; fix the path (relative to the sweep file)")
        update["data"] = str(data.resolve())
    elif not m.checkpoint.startswith("builtin:"):
        raise ConfigError(f"{path}: models.{i}.data: missing; a checkpoint other than a builtin demo needs its data "
                          "(.npz with y + inputs, or raw text)")
    if m.tokenizer is not None:
        tok = _local(base, m.tokenizer)
        if not tok.is_dir():
            raise ConfigError(f"{path}: models.{i}.tokenizer: {tok} is not a folder; fix the path (relative to the sweep file)")
        update["tokenizer"] = str(tok.resolve())
    if m.model_factory is not None and ":" not in m.model_factory:
        raise ConfigError(f"{path}: models.{i}.model_factory: '{m.model_factory}' is not package.module:function")
    return m.model_copy(update=update)


def _checked_target(base: Path, entry: SweepDevice | None) -> dict[str, str | None]:
    """A device entry's ssh:// board, checked like compress --measure-on (address, key, known_hosts) before compute."""
    if entry is None:
        return {"measure_on": None, "ssh_key": None, "known_hosts": None}
    from toolkit.pipeline.remote import parse_target

    key = str(_local(base, entry.ssh_key).resolve()) if entry.ssh_key else None
    known = str(_local(base, entry.known_hosts).resolve()) if entry.known_hosts else None
    parse_target(entry.measure_on, key, known, flag="measure_on")
    return {"measure_on": entry.measure_on, "ssh_key": key, "known_hosts": known}


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputError(f"{out}: the sweep folder is a link or a file; pass a real folder with --out")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise OutputError(f"{out}: holds files no optkit sweep wrote (no {MARKER}); pass a new or empty --out")


def _check_history(path: Path, history: Path, out: Path) -> None:
    from toolkit.output import history as hist

    if history.is_dir():
        raise ConfigError(f"{path}: history: {history} is a folder; give a file path such as bench.db")
    if not history.parent.exists() and history.parent != out:
        raise ConfigError(f"{path}: history: folder {history.parent} does not exist; create it first")
    if history.exists():
        hist.preflight(history)  # a foreign or corrupt file fails now, not after the sweep's compute


# --------------------------------------------------------------------------- running it

def run_sweep(sweep: Sweep, executor: str = "local", address: str | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every combination on `executor`, record each finished one into the history, write the nightly report
    and <out>/sweep.json. Returns the summary; summary["exit_code"]: 0 all ok, 1 a regression, 3 a combination failed."""
    from toolkit.pipeline.executors import get_executor
    from toolkit.pipeline.executors.results import record_history, summary_line

    log = log or (lambda m: None)
    ex = get_executor(executor, address=address)  # an unknown name or a missing ray fails before anything is written
    sweep.out.mkdir(parents=True, exist_ok=True)
    (sweep.out / MARKER).write_text("written by optkit sweep; re-running the sweep reuses its finished work\n")
    t0 = time.time()
    total = 2 * len(sweep.combinations)
    done = 0
    results: dict[str, dict] = {}
    builds: dict[str, dict] = {}

    def on_phase(combo: Combination, phase: str, result: dict) -> None:
        nonlocal done
        done += 1
        if phase == "build":
            builds[combo.id] = result
        else:
            b = builds.get(combo.id, {})
            result.update(build_node=b.get("node"), build_s=b.get("seconds"), build_window=b.get("window"))
            result["history"] = record_history(sweep, combo, result, log)
            results[combo.id] = result
        log(f"[{done}/{total}] {summary_line(combo, phase, result)}")

    from toolkit.core import cache

    ex.run(sweep.combinations, on_phase, shared=[sweep.out, cache.cache_dir()])
    summary = _summary(sweep, ex, results, time.time() - t0, log)
    (sweep.out / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _summary(sweep: Sweep, ex, results: dict[str, dict], wall_s: float, log) -> dict[str, Any]:
    from toolkit.pipeline.executors.results import combination_row, nightly

    rows = [combination_row(c, results.get(c.id)) for c in sweep.combinations]
    failed = [r for r in rows if r["status"] not in ("ok", "reused")]
    night = nightly(sweep, log)
    regressions = len(night.get("regressions") or [])
    if night.get("error"):  # measured, but the nightly report could not be written: CI must hear of it
        failed.append({"id": "nightly-report", "reason": night["error"]})
    code = 3 if failed else (1 if regressions else 0)
    return {
        "sweep": str(sweep.path), "out": str(sweep.out), "executor": ex.name, "nodes": ex.nodes(),
        "wall_s": round(wall_s, 2), "executor_startup_s": ex.startup_s, "history": str(sweep.history), "nightly": night,
        "combinations": rows, "n_ok": sum(r["status"] in ("ok", "reused") for r in rows),
        "n_failed": sum(r["status"] not in ("ok", "reused") for r in rows),
        "ok": code == 0, "exit_code": code,
        "failures": [{"id": r["id"], "reason": r["reason"]} for r in failed],
    }


__all__ = ["SweepSpec", "SweepModel", "Combination", "Sweep", "load_sweep", "run_sweep", "MARKER", "SUMMARY"]
