"""The bundle's manifest.json: its schema, its own digest, the path rules, and the walk that sees every entry.

Integrity scheme (format_version 2):
* ``manifest["sha256"]`` maps every bundle file (relative POSIX path) to its sha256, except manifest.json itself,
  the optional signature ``model.sig`` and, for targets that build their own engines, the ``engine/`` folder.
* ``manifest["manifest_sha256"]`` is the sha256 of the manifest's canonical JSON without that field:
  ``json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")``. Editing any field
  (or any hash) without re-sealing fails verify; reformatting or reordering keys does not change it.
* This proves consistency, not origin: anyone can re-seal an edited manifest. Origin is what ``optkit sign`` adds.

Every failure is a one-line GateFailed naming the file: a manifest from an untrusted sender must never end in a
traceback, and never pass with content other than what was sealed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from toolkit.core.errors import GateFailed

MANIFEST = "manifest.json"
SIGNATURE = "model.sig"     # written by `optkit sign`; the model-signing tool's own default name
ENGINE_DIR = "engine"       # where build_engine.sh writes on the device; allowed unlisted only when manifest has `build`
DIGEST_KEY = "manifest_sha256"
FORMAT_VERSION = 2
MAX_MANIFEST_BYTES = 8 * 1024 * 1024   # real manifests are a few kB; bound what an untrusted one may make us parse
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")


def show(path: object) -> str:
    """A path for a one-line message: undecodable bytes and control characters never break the terminal line."""
    s = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return _CTRL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def check_relpath(value: str) -> str:
    """A bundle path: relative POSIX, confined to the bundle, no tricks that other OSes or tools would read otherwise."""
    if not value or len(value) > 1024:
        raise ValueError("a path must have 1 to 1024 characters")
    if _CTRL.search(value):
        raise ValueError("a path must not contain control characters")
    if "\\" in value:
        raise ValueError("a path must use '/' (no backslash)")
    if ":" in value:
        raise ValueError("a path must not contain ':' (drive letters, Windows streams)")
    if value.startswith("/") or value.startswith("~"):
        raise ValueError("a path must be relative to the bundle")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("a path must not contain empty, '.' or '..' components")
    return value


def _check_hex(value: str) -> str:
    if not _HEX64.fullmatch(value):
        raise ValueError("a sha256 must be 64 lowercase hex digits")
    return value


def _check_finite(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


RelPath = Annotated[str, AfterValidator(check_relpath)]
Hex64 = Annotated[str, AfterValidator(_check_hex)]
Tolerance = Annotated[float, AfterValidator(_check_finite)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Strict(BaseModel):
    # strict: JSON "8" is not the integer 8; extra="forbid": an unknown key is an error, not a silently ignored field.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelEntry(_Strict):
    file: RelPath
    files: list[RelPath] = Field(min_length=1)
    format: Name
    precision: Name
    backend: Name
    engine: str | None = None
    runtime_options: dict[str, Any] = {}
    lineage: list[str]


class TensorEntry(_Strict):
    name: Name
    dtype: Name
    shape: list[int | str]


class IOEntry(_Strict):
    inputs: list[TensorEntry] = Field(min_length=1)
    outputs: list[TensorEntry] = Field(min_length=1)
    dynamic_axes: dict[str, dict[str, str]] = {}
    dim_ranges: dict[str, dict[str, int | str | None]] = {}  # dim -> {min, max (None: unbounded), from}


class Confidence(_Strict):
    temperature: float
    probabilities: str
    thresholds: dict[str, Any]
    decision: str
    decision_rule: str | None = None              # toolkit.metrics.thresholds.DECISION_RULE, applied by predict
    decision_thresholds: list[float] | None = None  # what decide() takes (binary: one, on p(class 1))


class Fixtures(_Strict):
    inputs: RelPath
    expected: RelPath
    rows: int = Field(ge=0)
    rtol: Tolerance
    atol: Tolerance
    texts: RelPath | None = None  # raw-text bundles: the fixture rows as text (verify tokenizes them again)


class TextEntry(_Strict):
    """Raw text -> inputs: the bundled tokenizer, called with these settings (what predict and verify do)."""

    kind: Literal["text"]
    tokenizer: RelPath
    tokenizer_files: list[RelPath] = Field(min_length=1)
    max_length: int = Field(ge=1, le=1_000_000)
    padding: Literal["max_length"]
    truncation: Name
    inputs: list[Name] = Field(min_length=1)
    max_length_rule: str
    token_lengths: dict[str, int]
    truncated_share: float = Field(ge=0, le=1)


class Build(_Strict):
    candidate: Name
    precision: Name
    command: str
    where: str
    status: str
    script: RelPath
    engine_dir: RelPath = ENGINE_DIR
    # the optimization profile the command builds (pipeline/targets.py): batch (min, opt, max), per-input
    # (min, opt, max) shapes, and which values the dynamic dims took and why (core/shapes.py)
    batch_profile: list[int] | None = None
    shapes: dict[str, list[list[int]]] | None = None
    dynamic_dims: str | None = None


class Manifest(_Strict):
    """What verify relies on is typed strictly; descriptive sections (metrics, measured_on) are free-form but sealed."""

    format_version: Literal[2]
    manifest_sha256: Hex64
    candidate: Name
    model: ModelEntry
    io: IOEntry
    preprocessing: str
    labels: list[str]
    confidence: Confidence
    metrics: dict[str, Any]
    measured_on: dict[str, Any]
    device: Name
    versions: dict[str, str | None]
    fixtures: Fixtures
    build: Build | None = None
    text: TextEntry | None = None
    sha256: dict[RelPath, Hex64] = Field(min_length=1)


def canonical_bytes(manifest: dict) -> bytes:
    """The sealed content: the manifest without its own digest, as sorted-key compact UTF-8 JSON."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _finite(value: Any) -> Any:
    # Standard JSON has no NaN/Infinity; a metric that is undefined (no samples) is written as null instead.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def seal(manifest: dict) -> dict:
    """Return the manifest as it will be read back (plain JSON types), with its digest set."""
    plain = _finite(json.loads(json.dumps(manifest, default=str)))
    plain.pop(DIGEST_KEY, None)
    plain[DIGEST_KEY] = hashlib.sha256(canonical_bytes(plain)).hexdigest()
    return plain


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    # Two parsers that keep a different one of two equal keys would read two different manifests.
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_numbers(value: Any) -> None:
    # "1e400" parses to inf without passing through parse_constant.
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("a number overflows a float")
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False, include_input=False)
    e = errs[0]
    loc = show(".".join(str(p) for p in e["loc"]))[:200] or "(top level)"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {e['msg'][:200]}{more}"


def load_manifest(folder: Path) -> tuple[Manifest, dict]:
    """Read, parse, check the digest, then the schema; any problem is one GateFailed line naming manifest.json."""
    mpath = folder / MANIFEST
    fix = "the bundle is damaged or was edited; get it again or re-create it with optkit compress"
    try:
        st = os.lstat(mpath)
    except FileNotFoundError:
        raise GateFailed(f"{show(folder)}: no {MANIFEST}; pass the bundle folder written by optkit compress") from None
    except OSError as exc:
        raise GateFailed(f"{show(mpath)}: cannot be read ({exc.strerror}); check its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise GateFailed(f"{show(mpath)}: not a regular file (a link or special file); {fix}")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise GateFailed(f"{show(mpath)}: {st.st_size} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES}); {fix}")
    try:
        raw = json.loads(mpath.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        _check_numbers(raw)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise GateFailed(f"{show(mpath)}: not valid JSON ({why}); {fix}") from None
    except OSError as exc:
        raise GateFailed(f"{show(mpath)}: cannot be read ({exc.strerror}); check its permissions") from None
    if not isinstance(raw, dict):
        raise GateFailed(f"{show(mpath)}: must be a JSON object, got {type(raw).__name__}; {fix}")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        older = " (written by an older optkit, without a manifest digest)" if version == 1 else ""
        raise GateFailed(f"{show(mpath)}: format_version {show(repr(version))[:40]} is not {FORMAT_VERSION}{older}; "
                         "re-create the bundle with this optkit")
    digest = raw.get(DIGEST_KEY)
    if not isinstance(digest, str):
        raise GateFailed(f"{show(mpath)}: no {DIGEST_KEY} (the manifest's own digest); {fix}")
    try:
        actual = hashlib.sha256(canonical_bytes(raw)).hexdigest()
    except (ValueError, RecursionError):
        raise GateFailed(f"{show(mpath)}: content cannot be canonicalized; {fix}") from None
    if actual != digest:
        raise GateFailed(f"{show(mpath)}: {DIGEST_KEY} does not match the manifest's content (a field was edited); {fix}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise GateFailed(f"{show(mpath)}: invalid manifest at {_first_error(exc)}; {fix}") from None
    return manifest, raw


def walk(folder: Path) -> tuple[set[str], set[str]]:
    """Every entry under the bundle (hidden ones too), as (files, directories) relative POSIX paths.

    Refuses symlinks (pointing in or out: a listed name must be the file itself) and special files (FIFOs, sockets,
    devices: reading one can block or has no fixed content). lstat, so nothing is followed.
    """
    files: set[str] = set()
    dirs: set[str] = set()
    stack = [(folder, "")]
    while stack:
        here, prefix = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError as exc:
            raise GateFailed(f"{show(here)}: cannot be listed ({exc.strerror}); check its permissions") from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise GateFailed(f"{show(folder / rel)}: a symlink inside the bundle; a bundle holds only regular "
                                 "files, replace the link by the file or re-create the bundle")
            if stat.S_ISDIR(st.st_mode):
                dirs.add(rel)
                stack.append((Path(entry.path), rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                files.add(rel)
            else:
                raise GateFailed(f"{show(folder / rel)}: a special file (FIFO, socket or device) inside the bundle; "
                                 "remove it")
    return files, dirs
