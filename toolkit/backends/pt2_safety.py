"""Decide, before torch opens a checkpoint, whether opening it could run code.

`torch.export.load` is not a data-only loader. In torch 2.13 (torch/export/pt2_archive/_package.py,
torch/_export/serde/serialize.py, torch/export/_unlift.py) these archive contents run code:

* a weight or tensor constant whose config says `use_pickle: true` -> `torch.load(weights_only=False)`;
* `data/constants/custom_obj_*` (torchbind) -> `torch._C._pickle_load_obj`; `opaque_obj_*` -> `pickle.loads`;
* legacy `data/weights/<m>.pt` / `data/constants/<m>.pt`, and `data/sample_inputs/<m>.pt`, go through
  `deserialize_torch_artifact`, which retries with `weights_only=False` when the safe load fails;
* `data/aotinductor/` loads a compiled shared library; the pre-2.7 zip layout unpickles with fallbacks;
* `models/<m>.json` is not inert either: `expr_str` is parsed by `sympy.sympify` (Python `eval`),
  `guards_code` is pasted into Python source and `exec`'d by `ExportedProgram.module()`, names become
  FX-generated source (`getattr(self, "<name>")`, `def forward(self, <arg>)`), and a node `target`
  is resolved by attribute lookup from `torch`/`operator`/`math` and called at inference time
  (`torch.os.system` resolves).

So the inspector allow-lists what torch.export.save writes for plain tensors and refuses the
rest: every entry name, every config, every string in the program that reaches code. It reads
the archive with torch's own zip reader (the view torch.export.load will have) and cross-checks
it with Python's zipfile. `load_pt2` then loads the very bytes that were inspected.
"""
from __future__ import annotations

import ast
import functools
import io
import json
import re
from pathlib import Path

from toolkit.core.errors import CheckpointError, UnsafeCheckpoint

TRUST_HINT = ("optkit does not run code from a checkpoint by default: re-save it from plain tensors "
              "(torch.export.save, safetensors), or pass --trust-checkpoint if you trust its author")

# Names torch writes for a program's weights, buffers, nodes, args: they end up inside FX-generated source.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]*$")
SAFE_SYMPY_STR = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|[+\-]?[0-9][0-9.eE+\-]*)$")
SAFE_KEY = re.compile(r"^[A-Za-z0-9_]*$")
# String arguments are repr()'d into source, but a string *input* is pasted into a guard as '...'.
UNSAFE_STRING_CHARS = re.compile(r"['\"\\#\x00-\x1f\x7f]")
MAX_EXPR_CHARS = 20_000

_FIXED_ENTRIES = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_MODEL = r"[A-Za-z0-9_\-]+"
_ENTRY_KINDS = (
    (re.compile(rf"^models/({_MODEL})\.json$"), "program"),
    (re.compile(rf"^data/weights/({_MODEL})_weights_config\.json$"), "weights_config"),
    (re.compile(r"^data/weights/weight_[0-9]+$"), "weight"),
    (re.compile(rf"^data/constants/({_MODEL})_constants_config\.json$"), "constants_config"),
    (re.compile(r"^data/constants/tensor_[0-9]+$"), "constant"),
    (re.compile(rf"^data/sample_inputs/({_MODEL})\.pt$"), "sample_inputs"),
    (re.compile(r"^extra/[^\x00]+$"), "extra"),   # read as text into a dict, never evaluated
)
# Entries that are known and known to run code (said by name rather than as "unknown").
_CODE_ENTRIES = (
    ("data/aotinductor/", "AOTInductor compiled code (a shared library is loaded)"),
    ("data/executorch/", "an ExecuTorch program"),
    ("data/mtia", "MTIA compiled code"),
    ("xl_model_weights/", "external weights loaded with torch.load"),
    ("data/constants/custom_obj_", "a torchbind custom object (unpickled)"),
    ("data/constants/opaque_obj_", "an opaque constant (pickle.loads)"),
)
# Higher-order operators that only run sub-graphs of the same (inspected) program.
SAFE_HOPS = {"cond", "while_loop", "map_impl", "scan", "associative_scan", "invoke_subgraph",
             "wrap_with_set_grad_enabled", "wrap_with_autocast", "auto_functionalized", "auto_functionalized_v2",
             "with_effects", "out_dtype", "flex_attention"}
# Values under these keys are read as data (metadata text, pytree specs), never turned into code.
_DATA_KEYS = {"metadata", "in_spec", "out_spec", "torch_version", "verifiers", "stack_trace"}
_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "numel", "shape"}


# --------------------------------------------------------------------------- .pt2
def pt2_problems(data: bytes) -> list[str]:
    """Reasons why torch.export.load of these bytes could run code; [] when it only reads tensors and JSON.

    Raises CheckpointError when the bytes are not a torch.export archive at all.
    """
    names = _records(data)
    problems: list[str] = []
    models: dict[str, dict[str, str]] = {}
    for name in names:
        if name in _FIXED_ENTRIES:
            continue
        kind, model = _entry_kind(name)
        if kind is None:
            why = next((w for prefix, w in _CODE_ENTRIES if name.startswith(prefix)), None)
            if name in (f"data/weights/{n}.pt" for n in _model_names(names)) or \
                    name in (f"data/constants/{n}.pt" for n in _model_names(names)):
                why = "legacy pickled weights (torch.load with a weights_only=False fallback)"
            problems.append(f"entry '{name}' is {why}" if why else f"unknown entry '{name}' (not written by torch.export.save for tensors)")
        elif model is not None:
            models.setdefault(model, {})[kind] = name
    reader = _Reader(data)
    if (fmt := reader.text("archive_format")) != "pt2":
        raise CheckpointError(f"archive_format is {fmt[:20]!r}, not 'pt2'")
    for model, parts in models.items():
        if "program" not in parts:
            problems.append(f"configs for '{model}' without models/{model}.json")
            continue
        for kind, prefix in (("weights_config", "weight_"), ("constants_config", "tensor_")):
            if kind not in parts:
                raise CheckpointError(f"models/{model}.json has no {kind.replace('_', ' ')}")
            problems += _payload_problems(reader, parts[kind], prefix, set(names))
        if "sample_inputs" in parts:
            problems += _sample_input_problems(reader.bytes(parts["sample_inputs"]), parts["sample_inputs"])
        problems += program_problems(reader.json(parts["program"]), parts["program"])
    if "model" not in models:
        raise CheckpointError("no models/model.json (the program torch.export.load returns)")
    return problems


def check_pt2(path: Path, data: bytes, trust: bool) -> list[str]:
    """Raise UnsafeCheckpoint unless the archive is data-only or `trust`; return the problems that trust waived."""
    try:
        problems = pt2_problems(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: not a loadable torch.export archive ({exc}); "
                              "save it with torch.export.save(torch.export.export(model, args), path)") from None
    if problems and not trust:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafeCheckpoint(f"{path}: {problems[0]}{more}; {TRUST_HINT}")
    return problems


class _Reader:
    """Records of the archive as torch reads them (torch's zip reader strips the archive's root folder)."""

    def __init__(self, data: bytes):
        import torch

        self._r = torch._C.PyTorchFileReader(io.BytesIO(data))

    def bytes(self, name: str) -> bytes:
        return self._r.get_record(name)

    def text(self, name: str) -> str:
        try:
            return self.bytes(name).decode()
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{name} unreadable ({str(exc).splitlines()[0][:100]})") from None

    def json(self, name: str):
        try:
            return json.loads(self.text(name))
        except ValueError as exc:
            raise CheckpointError(f"{name} is not JSON ({exc})") from None


def _records(data: bytes) -> list[str]:
    """Entry names relative to the root folder; both zip readers must see the same, unique entries."""
    import zipfile

    import torch

    try:
        names = list(torch._C.PyTorchFileReader(io.BytesIO(data)).get_all_records())
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            listed = z.namelist()
    except (RuntimeError, zipfile.BadZipFile, ValueError, OSError) as exc:
        # torch's miniz message is long and internal; what the user needs is that this is no zip archive.
        raise CheckpointError(f"not a zip archive: {type(exc).__name__}") from None
    if len(set(names)) != len(names) or len(set(listed)) != len(listed):
        raise CheckpointError("the zip lists an entry twice (readers may disagree on which one counts)")
    root = listed[0].split("/", 1)[0] + "/" if listed else ""
    if sorted(n[len(root):] for n in listed if n.startswith(root)) != sorted(names) or len(listed) != len(names):
        raise CheckpointError("the zip's entries are not all under one root folder")
    return names


def _entry_kind(name: str) -> tuple[str | None, str | None]:
    for pattern, kind in _ENTRY_KINDS:
        m = pattern.match(name)
        if m:
            return kind, (m.group(1) if m.groups() else None)
    return None, None


def _model_names(names: list[str]) -> list[str]:
    return [m.group(1) for n in names if (m := _ENTRY_KINDS[0][0].match(n))]


def _payload_problems(reader: _Reader, config_name: str, prefix: str, names: set[str]) -> list[str]:
    """A weights/constants config: every entry a raw tensor record (never pickled, no custom objects)."""
    cfg = reader.json(config_name)
    entries = cfg.get("config") if isinstance(cfg, dict) else None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{config_name} has no 'config' mapping")
    folder = config_name.rsplit("/", 1)[0]
    problems = []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise CheckpointError(f"{config_name}: entry '{str(fqn)[:80]}' has no path_name")
        path_name = meta["path_name"]
        if not SAFE_NAME.match(fqn):
            problems.append(f"{config_name}: name {fqn[:80]!r} has characters that reach generated code")
        elif path_name.startswith("custom_obj_"):
            problems.append(f"{config_name}: '{fqn}' is a torchbind custom object (unpickled)")
        elif path_name.startswith("opaque_obj_"):
            problems.append(f"{config_name}: '{fqn}' is an opaque constant (pickle.loads)")
        elif meta.get("use_pickle"):
            problems.append(f"{config_name}: '{fqn}' is pickled (use_pickle: torch.load with weights_only=False)")
        elif not re.match(rf"^{prefix}[0-9]+$", path_name) or f"{folder}/{path_name}" not in names:
            problems.append(f"{config_name}: '{fqn}' points at {path_name[:80]!r}, not a tensor record of the archive")
        elif not isinstance(meta.get("tensor_meta"), dict):
            raise CheckpointError(f"{config_name}: '{fqn}' has no tensor_meta")
    return problems


def _sample_input_problems(blob: bytes, name: str) -> list[str]:
    """torch loads the example inputs with weights_only=True and, if that fails, again with weights_only=False."""
    import torch

    if not blob:
        return []
    import warnings

    try:
        with warnings.catch_warnings():  # its notes on pickle protocols are noise here
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(blob), weights_only=True)  # the restricted unpickler: data only, by design
    except Exception:  # noqa: BLE001 - any failure here means torch would retry unsafely
        return [f"{name} is not plain tensors (the weights-only unpickler refuses it, and torch would retry "
                "with weights_only=False)"]
    return []


def program_problems(program, where: str) -> list[str]:
    """Strings of a serialized ExportedProgram (models/<m>.json) that would reach eval/exec or be called."""
    problems: list[str] = []
    if not isinstance(program, dict):
        raise CheckpointError(f"{where} is not a serialized program")
    for guard in program.get("guards_code") or []:
        if not (isinstance(guard, str) and _safe_guard(guard)):
            problems.append(f"{where}: guards_code {str(guard)[:60]!r} is not a plain shape check (it is exec'd)")

    def walk(node, key: str | None) -> None:
        if key in _DATA_KEYS:
            return
        if isinstance(node, dict):
            for k, v in node.items():
                if not SAFE_NAME.match(str(k)):
                    problems.append(f"{where}: key {str(k)[:60]!r} has characters that reach generated code")
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            if key == "guards_code":
                return
            if key == "expr_str":
                if not _safe_sympy(node):
                    problems.append(f"{where}: symbolic expression {node[:60]!r} is not a plain sympy expression (it is eval'd)")
            elif key in ("target", "as_operator"):
                if (why := _unsafe_target(node)) is not None:
                    problems.append(f"{where}: operator {node[:80]!r} {why}")
            elif key in ("as_string", "as_strings"):
                if UNSAFE_STRING_CHARS.search(node):
                    problems.append(f"{where}: string argument {node[:60]!r} has quotes or control characters")
            elif not SAFE_NAME.match(node):
                problems.append(f"{where}: {key} {node[:60]!r} has characters that reach generated code")

    walk({k: v for k, v in program.items() if k != "guards_code"}, None)
    return problems


# --------------------------------------------------------------------------- expression checks
@functools.lru_cache(maxsize=1)
def _sympy_names() -> frozenset[str]:
    """sympy classes (constructors of expression nodes) and singletons, plus torch's own sympy functions."""
    import sympy
    import torch.utils._sympy.functions as tf

    names = set()
    for module in (sympy, tf):
        for n in dir(module):
            obj = getattr(module, n, None)
            if n.startswith("_"):
                continue
            if (isinstance(obj, type) and issubclass(obj, sympy.Basic)) or isinstance(obj, sympy.Basic):
                names.add(n)
    return frozenset(names | {"int_oo", "True", "False"})


def _safe_sympy(expr: str) -> bool:
    """srepr-style text only: calls of sympy classes on numbers, symbol-name strings and keyword flags."""
    if len(expr) > MAX_EXPR_CHARS:
        return False
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):
        return False
    allowed = _sympy_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or any(kw.arg is None for kw in node.keywords):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in allowed:
                return False
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not SAFE_SYMPY_STR.match(node.value):
                return False
            if not isinstance(node.value, (str, int, float, bool, type(None))):
                return False
        elif not isinstance(node, (ast.Expression, ast.keyword, ast.UnaryOp, ast.BinOp, ast.Compare, ast.BoolOp,
                                   ast.Tuple, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            return False
    return True


@functools.lru_cache(maxsize=1)
def _guard_names() -> frozenset[str]:
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    return frozenset({n for n in SYMPY_INTERP if not n.startswith("_")} | {"L", "math", "inf"})


def _safe_guard(code: str) -> bool:
    """A shape guard such as "L['x'].size()[0] <= 4096": pasted verbatim into torch._assert(...) and exec'd."""
    import math

    if len(code) > MAX_EXPR_CHARS or re.search(r"[\"#\\\x00-\x1f\x7f]", code):
        return False
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError):
        return False
    subscript_keys = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in _guard_names():
                return False
        elif isinstance(node, ast.Attribute):
            on_math = isinstance(node.value, ast.Name) and node.value.id == "math"
            if node.attr.startswith("_") or not (node.attr in _GUARD_ATTRS or (on_math and hasattr(math, node.attr))):
                return False
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not (id(node) in subscript_keys and SAFE_KEY.match(node.value)):
                return False
            if not isinstance(node.value, (str, int, float, bool, type(None))):
                return False
        elif not isinstance(node, (ast.Expression, ast.Call, ast.Subscript, ast.Compare, ast.BoolOp, ast.BinOp,
                                   ast.UnaryOp, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            return False
    return True


def _unsafe_target(target: str) -> str | None:
    """None when the node target resolves (as torch resolves it) to an operator; else why it is refused."""
    import operator

    import torch

    if target.startswith("#"):
        return None  # an extension namespace: resolved only through handlers that code registered in this process
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", target):
        return "is not a dotted operator name"
    head, *rest = target.split(".")
    roots = {"torch": torch, "_operator": operator, "math": __import__("math")}
    if head not in roots:
        return "is not an operator torch knows (it is not from torch.ops, operator or math)"
    obj = roots[head]
    for name in rest:
        try:
            obj = getattr(obj, name)
        except Exception:  # noqa: BLE001 - torch's own lookup fails the same way and raises; nothing runs
            return None if target.startswith("torch.ops.") else "does not resolve to an operator"
    if isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return None
    if isinstance(obj, torch._ops.HigherOrderOperator):
        return None if obj.name() in SAFE_HOPS else "is a higher-order operator optkit does not allow"
    if obj in _sym_ops():
        return None
    return f"resolves to {type(obj).__name__} {getattr(obj, '__name__', '')}, which is not an operator (it would be called)"


@functools.lru_cache(maxsize=1)
def _sym_ops() -> frozenset:
    import operator

    try:
        from torch._export.serde.serialize import _SYM_OPS
    except ImportError:  # a torch without it: the always-safe core
        _SYM_OPS = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod, operator.eq}
    return frozenset(_SYM_OPS) | {operator.getitem}


# --------------------------------------------------------------------------- Hugging Face folders
