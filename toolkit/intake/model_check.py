"""The checkpoint checked against the data, before any slow step: inputs (names, dtypes, ranks), outputs.

Run by `compress` right after both are loaded and before the staging folder exists, so a mismatch is a
one-line error with nothing written:

- ONNX inputs: the data's arrays are cast to the model's input dtypes only where no value changes
  (int64 ids -> int32 when they fit, float32 -> float16 when in range); a kind change (int <-> float)
  is an error, because it would hide missing preprocessing. Ranks and fixed dimensions must match.
- Outputs: a single tensor is the logits; a dict gives its 'logits' key; otherwise `--output NAME`
  (a dict key, an ONNX output name, or a tuple position) picks them, and the error lists the names.
- Probabilities instead of logits (every probed row in [0, 1] and summing to 1) are detected and
  converted with log(): softmax(log p / T) is exactly temperature scaling of the model's own logits
  (log p differs from them by a per-row constant), so calibration, thresholds and argmax stay right,
  whereas treating p as logits would squash softmax towards uniform. The run says so in its notes.
- NaN/Inf outputs on the probe rows are an error naming how many rows; `check_finite` does the same on
  whole splits for every candidate evaluated later.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.artifacts import onnx_external_files
from toolkit.core.errors import CheckpointError, DataError

DEFAULT_OUTPUT = "logits"
PROBE_ROWS = 64
PROB_ATOL = 1e-3
LOG_EPS = 1e-12  # log(0) -> log(1e-12) = -27.6: finite, and still far below any real class
# Operator domains ONNX Runtime's CPU build implements; any other domain needs a custom-op library.
ORT_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
               "ai.onnx.preview.training", "ai.onnx.training", "com.ms.internal.nhwc", "org.pytorch.aten"}


class ModelOutputError(CheckpointError):
    """The model's outputs cannot be used as logits (which output, NaN/Inf rows, wrong width)."""


# ----------------------------------------------------------------------------- ONNX file checks (intake)
def check_onnx_domains(path: Path, model=None) -> None:
    """Every node's operator domain must be one ONNX Runtime implements or a function the model defines."""
    import onnx

    model = model if model is not None else onnx.load(str(path), load_external_data=False)
    defined = {f.domain for f in model.functions}
    graphs, used = [model.graph], set()
    while graphs:  # walk subgraphs (If/Loop bodies) too
        g = graphs.pop()
        for node in g.node:
            used.add(node.domain)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    graphs.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(a.graphs)
    unknown = sorted(used - ORT_DOMAINS - defined)
    if unknown:
        raise CheckpointError(f"{path}: uses custom operators from domain {unknown[0]!r}"
                              + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
                              + "; ONNX Runtime cannot run them: re-export with standard ONNX operators")


# ----------------------------------------------------------------------------- ONNX inputs
def _safe_cast(arr: np.ndarray, want: np.dtype) -> np.ndarray | None:
    """arr as `want` when no value changes, else None."""
    if arr.dtype == want:
        return arr
    if arr.dtype.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        return arr.astype(want) if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max) else None
    if arr.dtype.kind in "iu" and want.kind == "b":
        return arr.astype(bool) if np.isin(arr, (0, 1)).all() else None
    if arr.dtype.kind == "f" and want.kind == "f":
        out = arr.astype(want)
        return out if np.isfinite(out).all() else None
    return None


def fit_onnx_inputs(path: Path, dataset, model=None):
    """The dataset with its inputs cast (safely) to the ONNX model's input dtypes; names and ranks checked."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = model if model is not None else onnx.load(str(path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init]
    names = [i.name for i in graph_inputs]
    if sorted(names) != sorted(dataset.input_names):
        raise DataError(f"{dataset.name}: inputs {dataset.input_names} do not match the model's inputs {names}; "
                        "name the .npz arrays after the model inputs")
    casts: dict[str, np.dtype] = {}
    for value in graph_inputs:
        arr = dataset.val.inputs[value.name]
        tt = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise DataError(f"{path}: input '{value.name}' is not a tensor; optkit feeds tensors from the .npz")
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            data_shape = ("batch", *arr.shape[1:])
            if len(dims) != arr.ndim:
                raise DataError(f"{dataset.name}: input '{value.name}' has rank {arr.ndim} {data_shape} but the model "
                                f"{path.name} expects rank {len(dims)} {tuple(d or '?' for d in dims)}; reshape the array")
            fixed = [(i, d) for i, d in enumerate(dims) if d and i > 0 and d != arr.shape[i]]
            if fixed:
                raise DataError(f"{dataset.name}: input '{value.name}' has shape {data_shape} but the model {path.name} "
                                f"expects {tuple(d or '?' for d in dims)}; resize the data")
            if dims and dims[0] not in (None, 0):
                raise DataError(f"{path}: input '{value.name}' has a fixed batch of {dims[0]}; re-export the model "
                                "with a dynamic batch axis (torch.onnx.export(..., dynamic_shapes=...))")
        want = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type))
        if want != arr.dtype:
            casts[value.name] = want
    if not casts:
        return dataset
    splits = {}
    for part in ("train", "val", "test"):
        split = getattr(dataset, part)
        if split is None:
            splits[part] = None
            continue
        inputs = dict(split.inputs)
        for name, want in casts.items():
            cast = _safe_cast(inputs[name], want)
            if cast is None:
                raise DataError(f"{dataset.name}: input '{name}' is {inputs[name].dtype} but the model {path.name} "
                                f"takes {want}, and not every value converts exactly; store '{name}' as {want}")
            inputs[name] = cast
        splits[part] = dataclasses.replace(split, inputs=inputs)
    note = "; ".join(f"input '{n}' cast to the model's {d} (every value exact)" for n, d in casts.items())
    return dataclasses.replace(dataset, **splits, notes=(*dataset.notes, note))


# ----------------------------------------------------------------------------- outputs
def _names_of(out: Any) -> list[str]:
    if isinstance(out, dict):
        return [str(k) for k in out]
    if isinstance(out, (tuple, list)):
        return [str(i) for i in range(len(out))]
    return []


def pick_output(out: Any, name: str | None, source: str) -> Any:
    """The logits among a model's outputs: a tensor as is, a dict's 'logits', else what --output names."""
    if isinstance(out, dict) or isinstance(out, (tuple, list)):
        names = _names_of(out)
        if name is None and isinstance(out, dict) and DEFAULT_OUTPUT in out:
            return out[DEFAULT_OUTPUT]
        if name is None and len(names) == 1:
            return out[list(out)[0]] if isinstance(out, dict) else out[0]
        if name is not None and name in names:
            return out[name] if isinstance(out, dict) else out[int(name)]
        kind = "dict" if isinstance(out, dict) else f"{type(out).__name__} of {len(names)}"
        raise ModelOutputError(f"{source}: the model returns a {kind} with outputs {names} and "
                               + (f"none is named {name!r}" if name is not None else f"none is named '{DEFAULT_OUTPUT}'")
                               + "; pick the logits with --output NAME (a key, or a position for a tuple)")
    if name is not None and name not in ("0", DEFAULT_OUTPUT):
        raise ModelOutputError(f"{source}: the model returns a single tensor, not an output named {name!r}; drop --output")
    return out


def choose_onnx_output(path: Path, name: str | None) -> str:
    import onnx

    names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
    if name is not None:
        if name not in names:
            raise ModelOutputError(f"{path}: has no output named {name!r} (outputs: {names}); pass one of them with --output")
        return name
    if len(names) == 1:
        return names[0]
    if DEFAULT_OUTPUT in names:
        return DEFAULT_OUTPUT
    raise ModelOutputError(f"{path}: has outputs {names} and none is named '{DEFAULT_OUTPUT}'; "
                           "pick the logits with --output NAME")


def is_probabilities(z: np.ndarray) -> bool:
    """Every row in [0, 1] and summing to 1: the model ends in softmax."""
    z = np.asarray(z, dtype=np.float64)
    return bool(z.ndim == 2 and z.shape[1] >= 2 and len(z) > 0 and np.isfinite(z).all()
                and z.min() >= -PROB_ATOL and z.max() <= 1 + PROB_ATOL
                and np.allclose(z.sum(1), 1.0, atol=PROB_ATOL))


def to_logits(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float32), LOG_EPS, None))


def check_finite(z: np.ndarray, split: str, source: str) -> None:
    bad = ~np.isfinite(np.asarray(z).reshape(len(z), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ModelOutputError(f"{source}: the model outputs NaN/Inf on {int(bad.sum())} of {len(z)} {split} rows "
                               f"(first: row {first}); check those inputs' scale and the model's numerics")


def check_logits_shape(z: np.ndarray, n_classes: int, source: str) -> None:
    if z.ndim != 2 or z.shape[1] != n_classes:
        raise ModelOutputError(f"{source}: the model outputs shape {tuple(z.shape)} but the data has {n_classes} "
                               "classes; logits must be (batch, n_classes): fix 'labels' or pick the output with --output")


def select_module(module, name: str | None, log_probs: bool):
    """A torch module returning only the logits (log-probabilities for a softmax head): what every pass exports."""
    import torch

    class SelectLogits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = pick_output(self.inner(*args), name, "model")
            return torch.log(torch.clamp(out, min=LOG_EPS)) if log_probs else out

    wrapper = SelectLogits(module)
    wrapper.training = False  # not .eval(): it recurses, and a torch.export module refuses train()/eval()
    return wrapper


def fit_outputs(loaded, dataset, io, output: str | None):
    """Probe the model on validation rows: which output, logits or probabilities, finite, (batch, n_classes).

    Returns (loaded, notes): for torch, `loaded.module` is wrapped to return the logits only; for ONNX the
    choice is recorded (`loaded.onnx_output`, `loaded.probabilities`) and applied to the run's baseline copy.
    """
    feeds = {n: dataset.val.inputs[n][:PROBE_ROWS] for n in io.input_names}
    source = loaded.source
    if loaded.kind == "onnx":
        from toolkit.backends import open_session
        from toolkit.core.candidate import Candidate

        chosen = choose_onnx_output(loaded.onnx_path, output)
        probe = Candidate(id="probe", path=Path(loaded.onnx_path), format="onnx", precision="as stored",
                          backend="onnxruntime", lineage=(), runtime_options={"output": chosen})
        try:
            with open_session(probe, threads=1) as session:
                z = np.asarray(session.infer(feeds))
        except Exception as exc:
            raise DataError(f"{dataset.name}: the model {source} does not run on the data's inputs "
                            f"({' '.join(str(exc).split())[:200]}); check the input shapes and dtypes") from exc
        raw_out = None
    else:
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in io.input_names]
        try:
            with torch.inference_mode():
                raw_out = loaded.module(*tensors)
        except Exception as exc:
            shapes = ", ".join(f"{n} {tuple(feeds[n].shape[1:])} {feeds[n].dtype}" for n in io.input_names)
            raise DataError(f"{dataset.name}: the model does not accept the data's inputs ({shapes}): "
                            f"{' '.join(str(exc).split())[:200]}; check the input names, shapes and dtypes") from exc
        picked = pick_output(raw_out, output, source)
        if not torch.is_tensor(picked):
            raise ModelOutputError(f"{source}: the selected output is a {type(picked).__name__}, not a tensor; "
                                   "pick the logits tensor with --output NAME")
        z = picked.detach().float().numpy()
        chosen = output
    check_logits_shape(z, dataset.n_classes, source)
    check_finite(z, "validation (probe)", source)
    probs = is_probabilities(z)
    notes = []
    if probs:
        notes.append("the model outputs probabilities (rows in [0, 1] summing to 1): optkit uses log(p) as logits, "
                     "which is exact for argmax and temperature scaling; the exported artifacts output log(p)")
    if loaded.kind == "onnx":
        if chosen != output or output is not None:
            notes.append(f"logits: ONNX output '{chosen}'")
        return dataclasses.replace(loaded, onnx_output=chosen, probabilities=probs,
                                   notes=[*loaded.notes, *notes]), notes
    if isinstance(raw_out, (dict, tuple, list)) or probs:
        if isinstance(raw_out, (dict, tuple, list)):
            key = output if output is not None else (DEFAULT_OUTPUT if isinstance(raw_out, dict) and DEFAULT_OUTPUT in raw_out else "0")
            notes.append(f"logits: output '{key}' of the model's {type(raw_out).__name__} outputs {_names_of(raw_out)}")
        module = select_module(loaded.module, output, probs)
        return dataclasses.replace(loaded, module=module, probabilities=probs, notes=[*loaded.notes, *notes]), notes
    return loaded, notes


def write_onnx_baseline(loaded, dst: Path) -> None:
    """The run's ONNX baseline: the user's file with its external data next to it as `<name>.data`, the logits
    output only, and log() after a softmax head. A file that needs none of that is copied byte for byte."""
    import shutil

    import onnx

    external = onnx_external_files(loaded.onnx_path)
    model = onnx.load(str(loaded.onnx_path), load_external_data=False)
    outputs = [o.name for o in model.graph.output]
    keep = loaded.onnx_output or outputs[0]
    if not external and outputs == [keep] and not loaded.probabilities:
        shutil.copy2(loaded.onnx_path, dst)
        return
    model = onnx.load(str(loaded.onnx_path))  # with its external data, resolved next to the source
    kept = [o for o in model.graph.output if o.name == keep]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    if loaded.probabilities:
        from onnx import helper, numpy_helper

        probs = keep + "__probabilities"
        for node in model.graph.node:
            node.output[:] = [probs if o == keep else o for o in node.output]
        eps = numpy_helper.from_array(np.array(LOG_EPS, dtype=np.float32), keep + "__eps")
        model.graph.initializer.append(eps)
        model.graph.node.extend([helper.make_node("Max", [probs, eps.name], [keep + "__clipped"]),
                                 helper.make_node("Log", [keep + "__clipped"], [keep])])
    if external:
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(dst))
