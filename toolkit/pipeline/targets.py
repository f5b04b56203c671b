"""What is built on the target rather than here (TensorRT engines: the exact trtexec command per candidate),
and the roofline estimates for the target, labelled estimates and kept apart from measurements."""
from __future__ import annotations

from toolkit.core.candidate import Candidate
from toolkit.core.errors import OptkitError
from toolkit.core.shapes import ShapePolicy, fallback
from toolkit.pipeline.devices import DeviceProfile


def trt_batch_profile(device) -> tuple[int, int, int]:
    """(min, opt, max) batch of the TensorRT optimization profile, from the device's bench batch sizes.

    min and max span the batch sizes the profile benchmarks; opt is batch 1 when the profile times it
    (the latency budget is judged at batch 1, so the engine is tuned for it), else the smallest.
    """
    sizes = sorted(set(device.bench.batch_sizes))
    return sizes[0], (1 if 1 in sizes else sizes[0]), sizes[-1]


def trt_profiles(io, device, shapes: ShapePolicy) -> dict[str, tuple]:
    """The (min, opt, max) shapes of every dynamic input, through backends.tensorrt.profile_shapes: the batch
    from trt_batch_profile, every other dynamic dim from the shape policy's profile (core/shapes.py)."""
    from toolkit.backends.tensorrt import profile_shapes

    lo_b, opt_b, hi_b = trt_batch_profile(device)
    dims = {t.name: tuple(t.shape) for t in io.inputs}
    given = {}
    for name, shape in dims.items():
        if not any(isinstance(d, str) and d != "batch" for d in shape):
            continue  # batch-only dynamic: profile_shapes fills it in
        per_dim = [(lo_b, opt_b, hi_b) if d == "batch" else (shapes.get(d).profile() if isinstance(d, str) else (d, d, d))
                   for d in shape]
        given[name] = tuple(tuple(int(x[i]) for x in per_dim) for i in range(3))
    return profile_shapes(dims, min_batch=lo_b, opt_batch=opt_b, max_batch=hi_b, input_shapes=given)


def target_builds(report: dict, cands: dict[str, Candidate], device, io, shapes: ShapePolicy | None = None) -> list[dict]:
    """For targets that build their own engines (TensorRT): the exact build command per ONNX candidate.

    `shapes` is the run's shape policy (core/shapes.from_arrays on the data); without one the documented
    fallback is used, and every build says which values it took.
    """
    if "tensorrt" not in device.backends:
        return []
    from toolkit.backends.tensorrt import trtexec_command

    shapes = shapes or fallback()
    profiles = trt_profiles(io, device, shapes)
    builds = []
    for row in report["candidates"]:
        c = cands.get(row["id"])
        if c is None or c.format != "onnx":
            continue
        precision = "int8" if "int8" in c.precision and c.precision != "int8-dynamic" else c.precision
        if precision not in ("fp32", "fp16", "int8"):
            continue
        cmd = trtexec_command(c.path.name, precision, profiles, f"{c.id}.engine")
        builds.append({"candidate": c.id, "precision": precision, "command": cmd, "where": f"on the {device.name}",
                       "status": "to build on the target: TensorRT is not usable on this host",
                       "batch_profile": list(trt_batch_profile(device)),
                       "shapes": {k: [list(x) for x in v] for k, v in profiles.items()},
                       "dynamic_dims": shapes.describe()})
    return builds


def add_target_estimates(rows: list[dict], cands: dict[str, Candidate], prof: DeviceProfile,
                         shapes: ShapePolicy | None = None) -> None:
    """Roofline lower bounds for the target from its public specs: labelled estimates, kept apart from measurements.

    Dynamic dims take the shape policy's value (the data's padded width: what the measurements ran at), and
    the estimate's assumptions say which.
    """
    from toolkit.pipeline.estimates import estimate_for_device

    shapes = shapes or fallback()

    for row in rows:
        c = cands[row["id"]]
        if c.format != "onnx":
            continue
        precision = "int8" if "int8" in c.precision else c.precision
        try:
            est = estimate_for_device(c.path, precision, prof, dim_values=shapes.values())
        except OptkitError as exc:
            est = {"kind": "estimate (roofline lower bound)", "estimate_ms": None, "reason": str(exc)}
        roof = est.get("roofline") or {}  # bound, assumptions and the two bounds live on the roofline part
        row["target_estimate"] = {"kind": "estimate", "method": est.get("kind"), "device": prof.name,
                                  "estimate_ms": est.get("estimate_ms"), "reason": est.get("reason"),
                                  **{k: roof.get(k) for k in ("bound", "assumptions", "compute_bound_ms", "memory_bound_ms")}}
        said = row["target_estimate"]["assumptions"]
        if shapes.dims and row["target_estimate"]["estimate_ms"] is not None and isinstance(said, (str, type(None))):
            row["target_estimate"]["assumptions"] = "; ".join(x for x in (said, f"dynamic dims: {shapes.describe()}") if x)
        row["metrics"]["target_estimate_ms"] = est.get("estimate_ms")
