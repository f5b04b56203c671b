"""Recipes (recipes/NAME.yaml): which passes run, chained how, with which settings and gates.

Everything is validated here, once: unknown keys, unknown passes, options each pass does not
take, and references to steps that do not exist all fail before any compute.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.core import bounds
from toolkit.core.yaml_io import load_yaml_mapping, pydantic_message
from toolkit.pipeline.devices import Gates
from toolkit.core.errors import ConfigError

from toolkit.core.paths import RECIPES_DIR
BASELINE = "baseline"


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    pass_name: str = Field(alias="pass")
    source: str = Field(default=BASELINE, alias="from")
    options: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class Search(BaseModel):
    """Accuracy-aware search settings (mixed precision)."""

    model_config = ConfigDict(extra="forbid")
    tolerance: float = Field(default=0.01, ge=0, le=1, description="max absolute macro-F1 drop vs fp32 on validation")
    # Wall-time budget of the pass stage: steps not started by then are skipped ("over the recipe's time budget")
    # and the searches inside a pass (mixed precision, remedies) stop early. 6 minutes leaves the evaluation of
    # every candidate inside 10 minutes for the x86 recipe on a ResNet-18-size CNN on 2 cores (benchmarks/vision.py).
    max_minutes: float = Field(default=6.0, gt=0, le=24 * 60, description="wall-time budget of the passes, minutes")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    seed: int = Field(default=0, ge=0, le=bounds.SEED_MAX, strict=True)  # numpy seeds are unsigned 32-bit
    calibration_size: int = Field(default=300, ge=1, le=bounds.CALIBRATION_MAX, strict=True)
    steps: list[Step]  # may be empty: a baseline-only recipe evaluates, calibrates and bundles the fp32 model
    gates: Gates | None = None      # overrides the device's gates where set
    search: Search = Search()

    @model_validator(mode="after")
    def _check_graph(self) -> "Recipe":
        from toolkit.passes import load_all

        passes = load_all()
        seen = {BASELINE}
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"step id '{step.id}' is used twice")
            if step.pass_name not in passes:
                raise ValueError(f"step '{step.id}': unknown pass '{step.pass_name}' (known: {', '.join(sorted(passes))})")
            if step.source not in seen:
                raise ValueError(f"step '{step.id}': 'from: {step.source}' names no earlier step")
            try:
                passes[step.pass_name].options.model_validate(step.options)
            except ValidationError as exc:
                raise ValueError(f"step '{step.id}' options: " + pydantic_message(step.pass_name, exc)) from None
            seen.add(step.id)
        return self

    def step_options(self, step: Step):
        from toolkit.passes import load_all

        return load_all()[step.pass_name].options.model_validate(step.options)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = RECIPES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown recipe '{name_or_path}'; choose one of: {', '.join(recipe_names())} "
                              "or pass a path to a .yaml file")
    data = load_yaml_mapping(path, "recipe")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_message(path, exc)) from exc
