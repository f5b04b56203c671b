"""plan: which recipe steps run on this host for this device, which are skipped and why, decided before any compute."""
from __future__ import annotations

import dataclasses

from toolkit.passes import load_all
from toolkit.pipeline.devices import DeviceProfile
from toolkit.pipeline.recipes import BASELINE, Recipe, Step

@dataclasses.dataclass
class PlannedStep:
    step: Step
    status: str          # "run" | "skip" | "alias" (uses its source as is) | later "done" / "failed" / "cached"
    reason: str = ""
    backend: str = ""
    precision: str | None = None


@dataclasses.dataclass
class Plan:
    steps: list[PlannedStep]
    baseline_format: str
    target_note: str

    def to_list(self) -> list[dict]:
        return [{"id": p.step.id, "pass": p.step.pass_name, "from": p.step.source, "status": p.status,
                 "reason": p.reason, "backend": p.backend, "precision": p.precision} for p in self.steps]


def deployable(backend: str, device: DeviceProfile) -> bool:
    """Can the target run an artifact made for this backend? ONNX feeds TensorRT on targets that build engines."""
    return backend in device.backends or (backend == "onnxruntime" and "tensorrt" in device.backends)


def plan(recipe: Recipe, device: DeviceProfile, baseline_format: str, has_train: bool) -> Plan:
    """Which steps run on this host, which are skipped and why (decided before any compute)."""
    from toolkit.backends import availability, deploy_format

    passes = load_all()
    formats = {BASELINE: baseline_format}
    precisions = {BASELINE: "fp32"}
    planned: list[PlannedStep] = []
    skipped: set[str] = set()
    usable_backends = set(device.backends) | {device.stand_in.backend, "torch"}
    avail_cache: dict[str, tuple[bool, str]] = {}
    for step in recipe.steps:
        spec = passes[step.pass_name]
        opts = recipe.step_options(step)
        out_precision = spec.output_precision(opts) or precisions.get(step.source, "fp32")
        p = PlannedStep(step, "run", backend=spec.backend, precision=out_precision)
        src_format = formats.get(step.source)
        if step.source in skipped:
            p.status, p.reason = "skip", f"its input step '{step.source}' is skipped"
        elif step.pass_name == "export_onnx" and src_format == "onnx":
            p.status, p.reason = "alias", "the input is already ONNX; the baseline is used as is"
        elif src_format not in spec.accepts:
            p.status, p.reason = "skip", f"{step.pass_name} takes {'/'.join(spec.accepts)} models, its input is {src_format}"
        elif spec.needs_training_data and not has_train:
            p.status, p.reason = "skip", "needs a train split: add split=['train',...] rows to the .npz"
        elif spec.backend not in usable_backends:
            p.status, p.reason = "skip", f"{device.name} does not run {spec.backend} (backends: {', '.join(device.backends)})"
        elif out_precision.replace("mixed-", "").replace("-dynamic", "") not in device.precisions and not out_precision.startswith("mixed"):
            p.status, p.reason = "skip", f"{device.name} does not support {out_precision} (precisions: {', '.join(device.precisions)})"
        else:
            if spec.backend not in avail_cache:
                avail_cache[spec.backend] = availability(spec.backend)
            ok, why = avail_cache[spec.backend]
            if not ok:
                p.status, p.reason = "skip", why
            elif spec.precheck is not None and (why_not := spec.precheck(opts)):
                p.status, p.reason = "skip", why_not
        if p.status == "skip":
            skipped.add(step.id)
        formats[step.id] = src_format if p.status == "alias" else deploy_format(spec.backend)
        precisions[step.id] = out_precision if p.status != "alias" else precisions.get(step.source, "fp32")
        planned.append(p)
    target = [b for b in device.target_only_backends]
    note = ""
    if target:
        ok, why = availability("tensorrt")
        note = ("TensorRT engines are built on this host" if ok else
                f"TensorRT engines are built on the target ({why}); the fp16 and int8 QDQ ONNX files are "
                f"measured here with {device.stand_in.backend} as a stand-in and the bundle holds the build command")
    return Plan(planned, baseline_format, note)
