"""`optkit distill`: distil a teacher into a student, export it to ONNX and int8 it, through the same pipeline.

The command builds a recipe in memory (distill -> export_onnx -> ort_static_int8 for the student, plus the
teacher's export_onnx for reference), writes it to a temporary YAML and calls `toolkit.pipeline.compress.compress`
with it, so the run folder, report (with training curves and the no-KD ablation) and bundle are the ones
`optkit compress` would write.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml


def distill_recipe(student: str, *, student_factory: str | None = None, epochs: int = 30, alpha: float = 0.5,
                   temperature: float = 2.0, lr: float = 5e-3, seed: int = 0, ablation: bool = True,
                   calibration_size: int = 300) -> dict[str, Any]:
    opts: dict[str, Any] = {"student": student, "epochs": epochs, "alpha": alpha, "temperature": temperature, "lr": lr,
                            "ablation": ablation}
    if student_factory:
        opts["student_factory"] = student_factory
    int8 = {"calibration": "minmax", "per_channel": True, "activations": "uint8"}
    return {"name": "distill-cli", "description": f"optkit distill --student {student}", "seed": seed,
            "calibration_size": calibration_size, "steps": [
                {"id": "onnx-fp32", "pass": "export_onnx"},
                {"id": "student", "pass": "distill", "options": opts},
                {"id": "student-onnx-fp32", "pass": "export_onnx", "from": "student"},
                {"id": "student-ort-int8", "pass": "ort_static_int8", "from": "student-onnx-fp32", "options": int8},
            ]}


def distill(teacher: str | Path | None, student: str, data: str | Path | None = None, device: str = "x86-avx512",
            out: str | Path | None = None, epochs: int = 30, *, student_factory: str | None = None, alpha: float = 0.5,
            temperature: float = 2.0, lr: float = 5e-3, seed: int = 0, ablation: bool = True,
            model_factory: str | None = None, trust_checkpoint: bool = False, overwrite: bool = False, progress=None):
    """Distil `teacher` (None = the built-in demo) into `student` and run it through compress; returns its RunResult.

    Only distilled candidates can be selected: the teacher's own export is evaluated for comparison. When no
    student meets the budgets and gates, GateFailed (exit 3) is raised with the report written and no bundle,
    instead of shipping the teacher.
    """
    from toolkit.pipeline.compress import compress
    from toolkit.pipeline.recipes import Recipe

    recipe = distill_recipe(student, student_factory=student_factory, epochs=epochs, alpha=alpha,
                            temperature=temperature, lr=lr, seed=seed, ablation=ablation)
    try:
        Recipe.model_validate(recipe)  # bad options fail here, before any compute, with the recipe's message
    except Exception as exc:
        from toolkit.core.yaml_io import pydantic_message
        from toolkit.core.errors import ConfigError

        raise ConfigError(pydantic_message("optkit distill options", exc) if hasattr(exc, "errors") else str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="optkit-distill-") as tmp:
        path = Path(tmp) / "distill-cli.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return compress(teacher, device=device, recipe=path, data=data, out=out, model_factory=model_factory,
                        trust_checkpoint=trust_checkpoint, seed=seed, overwrite=overwrite, progress=progress,
                        reference_only=teacher_only)


def teacher_only(row: dict) -> str:
    """Why a distill run's candidate cannot be selected ("" when it can): it does not descend from the student."""
    if "distill" in row["lineage"]:
        return ""
    return "reference only: the teacher, not a distilled student (optkit distill ships a student or nothing)"
