"""YAML loading shared by recipes and devices: safe loader only (no python/* tags)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.core.errors import ConfigError


def load_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror}); check the path") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a YAML mapping, got {type(data).__name__}")
    return data


def pydantic_message(path: Path | str, exc: Exception) -> str:
    """One line from a pydantic ValidationError: every field and what is wrong with it."""
    parts = []
    for err in getattr(exc, "errors", lambda: [])():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (typo?)"
        parts.append(f"{loc}: {msg}")
    return f"{path}: " + "; ".join(parts or [str(exc)])
