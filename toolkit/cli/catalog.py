"""What optkit knows: devices, recipes, and what this host can run (doctor)."""
from __future__ import annotations

import json

import typer
from rich import box
from rich.table import Table

from toolkit.cli.options import Command, Group, json_flag
from toolkit.cli.render import console, json_errors, print_json

devices_app = typer.Typer(cls=Group, no_args_is_help=True, help="Device profiles (devices/*.yaml).")
recipes_app = typer.Typer(cls=Group, no_args_is_help=True, help="Recipes (recipes/*.yaml).")

YES, NO = "[green]yes[/]", "[red]no[/]"
# units for the budget/gate keys a reader sees (the keys carry them in their names already)
LABELS = {"latency_p95_ms": "p95 latency (ms)", "size_mb": "size (MB)", "peak_memory_mb": "peak memory (MB)",
          "max_macro_f1_drop": "macro-F1 drop vs fp32 (max)", "max_ece": "ECE (max)",
          "max_ece_recalibrated": "ECE after temperature (max)", "max_calibration_drift": "calibration drift (max)",
          "max_worst_slice_drop": "worst-slice F1 drop (max)", "require_ci_support": "CI must support the drop",
          "threads": "threads", "batch_sizes": "batch sizes", "warmup": "warmup calls", "iterations": "timed calls"}


def _kv_table(values: dict) -> Table:
    t = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 2))
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in values.items():
        shown = "—" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else
                                      ("yes" if v is True else "no" if v is False else str(v)))
        t.add_row(LABELS.get(k, k.replace("_", " ")), shown)
    return t


def doctor(as_json: bool = json_flag("the findings")) -> None:
    """Which backends, precisions and quantization engines this host can run, and why not."""
    from toolkit.api import doctor as run_doctor

    d = run_doctor()
    if as_json:
        print_json(d)
        return
    out = console()
    h = d["host"]
    out.print(f"Host: {h['cpu']} ({h['arch']}, {h['cores']} cores), {h['os']}, Python {h['python']}")
    for title, rows, name, why in (("Backends", d["backends"], "backend", "detail"),
                                   ("Quantization engines", d["engines"], "engine", "why")):
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        t.add_column(name), t.add_column("usable"), t.add_column("detail", overflow="fold")
        for r in rows:
            t.add_row(r[name], YES if r["ok"] else NO, r[why])
        out.print(t)
    t = Table(title="Precisions on this host", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("precision"), t.add_column("supported", overflow="fold")
    for k, v in d["precisions"].items():
        t.add_row(k, (YES if v else NO) if isinstance(v, bool) else str(v))
    out.print(t)


@devices_app.command("list", cls=Command)
def devices_list(as_json: bool = json_flag("every profile")) -> None:
    """All device profiles."""
    from toolkit.api import device as load_device
    from toolkit.api import devices as device_names

    with json_errors(as_json):
        profiles = [load_device(n) for n in device_names()]
    if as_json:
        print_json([p.model_dump() for p in profiles])
        return
    t = Table(title="Device profiles (optkit devices show NAME)", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("name", "arch", "backends, preferred first", "p95 ms", "MB", "stand-in here"):
        t.add_column(col, overflow="fold")
    for p in profiles:
        t.add_row(p.name + (f"\n[dim]{', '.join(p.aliases)}[/]" if p.aliases else ""), p.arch, " > ".join(p.backends),
                  str(p.budgets.latency_p95_ms or "—"), str(p.budgets.size_mb or "—"), p.stand_in.backend)
    console().print(t)


@devices_app.command("show", cls=Command)
def devices_show(name: str, as_json: bool = json_flag("the profile")) -> None:
    """One profile, explained: accelerators, budgets, gates, bench settings, and what stands in for it here."""
    from toolkit.api import device as load_device

    with json_errors(as_json):
        p = load_device(name)
    if as_json:
        print_json(p.model_dump())
        return
    out = console()
    out.print(f"[bold]{p.name}[/] ({p.arch}){' — aliases: ' + ', '.join(p.aliases) if p.aliases else ''}")
    out.print(p.description)
    t = Table(title="Accelerators (public specs)", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("name", "kind", "int8 TOPS", "fp16 TFLOPS", "fp32 TFLOPS", "GB/s", "GB"):
        t.add_column(col, overflow="fold")
    for a in p.accelerators:
        t.add_row(a.name, a.kind, *(str(v) if v is not None else "—" for v in (a.peak_int8_tops, a.peak_fp16_tflops,
                  a.peak_fp32_tflops, a.memory_bandwidth_gbs, a.memory_gb)))
    out.print(t)
    for a in p.accelerators:
        if a.source:
            out.print(f"[dim]{a.name} specs: {a.source}[/]")
    for title, values in (("Runs", {"backends, preferred first": " > ".join(p.backends), "precisions": p.precisions,
                                    "default recipe": p.default_recipe}),
                          ("Budgets (judged on target numbers only)", p.budgets.model_dump()),
                          ("Gates", p.gates.model_dump()), ("Bench settings", p.bench.model_dump())):
        out.print(f"\n[bold]{title}[/]")
        out.print(_kv_table(values))
    out.print(f"On a host that is not this device, [bold]{p.stand_in.backend}[/] stands in: {p.stand_in.note}")


@recipes_app.command("list", cls=Command)
def recipes_list() -> None:
    """All recipes."""
    from toolkit.api import recipe as load_recipe
    from toolkit.api import recipes as recipe_names

    t = Table(title="Recipes (optkit recipes show NAME)", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("name"), t.add_column("steps", justify="right"), t.add_column("description", overflow="fold")
    for n in recipe_names():
        r = load_recipe(n)
        t.add_row(n, str(len(r.steps)), r.description)
    console().print(t)


@recipes_app.command("show", cls=Command)
def recipes_show(name: str, as_json: bool = json_flag("the recipe")) -> None:
    """One recipe: its steps and their options."""
    from toolkit.api import recipe as load_recipe

    with json_errors(as_json):
        r = load_recipe(name)
    if as_json:
        print_json(r.model_dump(by_alias=True))
        return
    out = console()
    out.print(f"[bold]{r.name}[/]: {r.description}\nseed {r.seed}, calibration samples {r.calibration_size}")
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("id", "pass", "from", "options"):
        t.add_column(col, overflow="fold")
    for s in r.steps:
        t.add_row(s.id, s.pass_name, s.source, json.dumps(r.step_options(s).model_dump()))
    out.print(t)
