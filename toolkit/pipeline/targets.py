"""What is built on the target rather than here (TensorRT engines: the exact trtexec command per candidate),
and the roofline estimates for the target, labelled estimates and kept apart from measurements."""
from __future__ import annotations

from toolkit.core.candidate import Candidate
from toolkit.core.errors import OptkitError
from toolkit.pipeline.devices import DeviceProfile

def target_builds(report: dict, cands: dict[str, Candidate], device, io) -> list[dict]:
    """For targets that build their own engines (TensorRT): the exact build command per ONNX candidate."""
    if "tensorrt" not in device.backends:
        return []
    from toolkit.backends.tensorrt import trtexec_command

    shapes = {}
    for t in io.inputs:
        def concrete(b):
            return tuple(b if d == "batch" else (128 if d == "sequence" else d) for d in t.shape)
        shapes[t.name] = (concrete(1), concrete(max(device.bench.batch_sizes)), concrete(max(device.bench.batch_sizes) * 4))
    builds = []
    for row in report["candidates"]:
        c = cands.get(row["id"])
        if c is None or c.format != "onnx":
            continue
        precision = "int8" if "int8" in c.precision and c.precision != "int8-dynamic" else c.precision
        if precision not in ("fp32", "fp16", "int8"):
            continue
        cmd = trtexec_command(c.path.name, precision, shapes, f"{c.id}.engine")
        builds.append({"candidate": c.id, "precision": precision, "command": cmd, "where": f"on the {device.name}",
                       "status": "to build on the target: TensorRT is not usable on this host"})
    return builds


def add_target_estimates(rows: list[dict], cands: dict[str, Candidate], prof: DeviceProfile) -> None:
    """Roofline lower bounds for the target from its public specs: labelled estimates, kept apart from measurements."""
    from toolkit.pipeline.estimates import estimate_for_device

    for row in rows:
        c = cands[row["id"]]
        if c.format != "onnx":
            continue
        precision = "int8" if "int8" in c.precision else c.precision
        try:
            est = estimate_for_device(c.path, precision, prof, dim_values={"sequence": 128})
        except OptkitError as exc:
            est = {"kind": "estimate (roofline lower bound)", "estimate_ms": None, "reason": str(exc)}
        roof = est.get("roofline") or {}  # bound, assumptions and the two bounds live on the roofline part
        row["target_estimate"] = {"kind": "estimate", "method": est.get("kind"), "device": prof.name,
                                  "estimate_ms": est.get("estimate_ms"), "reason": est.get("reason"),
                                  **{k: roof.get(k) for k in ("bound", "assumptions", "compute_bound_ms", "memory_bound_ms")}}
        row["metrics"]["target_estimate_ms"] = est.get("estimate_ms")
