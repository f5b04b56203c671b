"""Load a checkpoint, safely by default.

- `.pt2`: a torch.export archive; carries its own graph. torch.export.load can run code from one (pickled
  weights, custom objects, eval'd strings), so `load_pt2` inspects the archive first (toolkit.backends.pt2_safety).
- `.safetensors`, or a zip `.pt`/`.pth` state dict loaded with `weights_only=True`, plus a
  factory `module:function` that builds the architecture.
- `.onnx`: an ONNX model; torch-only passes (distill, QAT) are skipped for it.
Pickled whole modules and TorchScript are code: refused with UnsafeCheckpoint unless the
user passes trust_checkpoint=True (`--trust-checkpoint`). There is no silent fallback.
"""
from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any

from toolkit.backends.torch import load_pt2
from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import CheckpointError, UnsafeCheckpoint
from toolkit.core.factory import resolve_factory  # the one resolver (core/factory.py), shared with passes

BUILTIN_PREFIX = "builtin:"


@dataclasses.dataclass
class LoadedModel:
    source: str                 # what the user gave (path or builtin:name)
    kind: str                   # "torch" | "onnx"
    sha256: str
    module: Any = None          # torch.nn.Module in eval mode, for kind == "torch"
    onnx_path: Path | None = None
    factory: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    trusted: bool = False       # --trust-checkpoint was given: files derived from it may carry what it carried
    onnx_output: str | None = None  # the ONNX output holding the logits (the run's baseline keeps only it)
    probabilities: bool = False     # the model ends in softmax: runs use log(p) as logits (toolkit.intake.model_check)
    hf_folder: Path | None = None   # a Hugging Face folder: its tokenizer preprocesses text (toolkit.intake.hf)

    @property
    def is_builtin(self) -> bool:
        return self.source.startswith(BUILTIN_PREFIX)


def _check_finite(state: dict, path: Path) -> None:
    import torch

    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN/Inf in {', '.join(bad[:5])}; re-export a healthy checkpoint")


def _apply_state_dict(path: Path, state: dict, factory: str | None):
    import torch

    if not factory:
        raise CheckpointError(f"{path}: a state dict has no architecture; pass --model-factory package.module:function")
    model = resolve_factory(factory)()
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"model factory '{factory}' returned {type(model).__name__}, not a torch.nn.Module")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (checkpoint vs model): {'; '.join(shapes)}")
        raise CheckpointError(f"{path} does not fit {factory}: " + " | ".join(parts))
    _check_finite(state, path)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _load_torch_file(path: Path, factory: str | None, trust: bool) -> tuple[Any, list[str]]:
    import pickle

    import torch

    if _is_torchscript(path):
        if not trust:
            raise UnsafeCheckpoint(f"{path} is TorchScript (it carries code); re-save a state dict or .pt2, "
                                   "or pass --trust-checkpoint if you trust its author")
        return torch.jit.load(str(path), map_location="cpu").eval(), ["loaded TorchScript under --trust-checkpoint"]
    try:
        # weights_only=True explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override an explicit argument.
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise UnsafeCheckpoint(f"{path} contains pickled code, which optkit does not run by default; "
                                   "save model.state_dict() (safetensors) or a .pt2, or pass --trust-checkpoint") from exc
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
        if isinstance(obj, torch.nn.Module):
            return obj.eval(), ["loaded a pickled module under --trust-checkpoint"]
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]}); re-save it with torch.save(model.state_dict(), ...)") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return _apply_state_dict(path, obj, factory), []


def check_onnx_external_data(path: Path) -> None:
    """External-data locations must stay inside the model's folder: no absolute paths, '..', or links."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx itself rejects some bad locations ('..') while parsing
        raise CheckpointError(f"{path}: unsafe or unreadable ONNX ({' '.join(str(exc).split())[:200]}); keep external data "
                              "files next to the model, outside the model's folder is refused") from exc
    root = path.parent.resolve()
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = ExternalDataInfo(tensor).location
        target = (path.parent / location)
        if Path(location).is_absolute() or ".." in Path(location).parts or target.is_symlink() \
                or not target.resolve().is_relative_to(root):
            raise CheckpointError(f"{path}: external data '{location}' points outside the model's folder; "
                                  "keep external data files next to the model")


def load(source: str | Path | None, factory: str | None = None, trust_checkpoint: bool = False) -> LoadedModel:
    """Load what the user named; None means the built-in demo."""
    if source is None or str(source) == "builtin:digits-cnn":
        from toolkit.intake.demo import DEMO_NAME, demo_checkpoint

        said: list[str] = []
        path, demo_factory = demo_checkpoint(log=said.append)
        loaded = load(path, factory=demo_factory)
        return dataclasses.replace(loaded, source=DEMO_NAME, notes=["built-in demo: digits CNN trained on scikit-learn's digits", *said])
    if str(source).startswith(BUILTIN_PREFIX):
        raise CheckpointError(f"unknown built-in model '{source}'; the built-in demos are builtin:digits-cnn and "
                              "builtin:minilm-sentiment (optkit compress; run `optkit prepare minilm-sentiment` once first)")
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found; check the path")
    if path.is_dir():
        from toolkit.intake import hf

        if not hf.is_hf_folder(path):
            raise CheckpointError(f"{path}: is a folder without config.json; pass a Hugging Face model folder "
                                  "(save_pretrained) or one checkpoint file (.pt2, .safetensors/.pt with --model-factory, .onnx)")
        got = hf.load_folder(path, trust=trust_checkpoint)
        return LoadedModel(source=str(path), kind="torch", sha256=got["sha256"], module=got["module"], notes=got["notes"],
                           trusted=got["trusted"], hf_folder=path)
    suffix = path.suffix.lower()
    sha = file_sha256(path)
    if suffix == ".onnx":
        import onnx

        from toolkit.core.artifacts import onnx_external_files
        from toolkit.intake.model_check import check_onnx_domains

        check_onnx_external_data(path)
        external = onnx_external_files(path)
        missing = [p.name for p in external if not p.is_file()]
        if missing:
            raise CheckpointError(f"{path}: its external data file {missing[0]} is missing; keep the files "
                                  "torch.onnx.export wrote (model.onnx + model.onnx.data) together")
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: invalid ONNX model ({str(exc).splitlines()[0]}); re-export it") from exc
        check_onnx_domains(path)
        if external:  # the weights live in the external files: the model's identity covers them too
            import hashlib

            parts = [sha, *(f"{p.name}:{file_sha256(p)}" for p in external)]
            sha = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return LoadedModel(source=str(path), kind="onnx", sha256=sha, onnx_path=path)
    if suffix == ".pt2":
        program = load_pt2(path, trust=trust_checkpoint)
        return LoadedModel(source=str(path), kind="torch", sha256=sha, module=program.module(), notes=["torch.export archive"],
                           trusted=trust_checkpoint)
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); re-save it with safetensors.torch.save_file") from exc
        return LoadedModel(source=str(path), kind="torch", sha256=sha, module=_apply_state_dict(path, state, factory), factory=factory)
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        module, notes = _load_torch_file(path, factory, trust_checkpoint)
        return LoadedModel(source=str(path), kind="torch", sha256=sha, module=module, factory=factory, notes=notes,
                           trusted=trust_checkpoint)
    raise CheckpointError(f"{path}: unsupported checkpoint type '{suffix}'; use .pt2, .safetensors, .pt (state dict) or .onnx")
