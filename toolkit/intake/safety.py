"""Hugging Face folders are safe by default: no custom code (`auto_map`, `*.py`), no pickled weights."""
from __future__ import annotations

import json
from pathlib import Path

from toolkit.backends.pt2_safety import TRUST_HINT
from toolkit.core.errors import CheckpointError, UnsafeCheckpoint

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"}
AUTO_MAP_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                  "feature_extractor_config.json", "image_processor_config.json")


def hf_folder_problems(folder: Path) -> list[str]:
    """What in a Hugging Face model folder would run code: custom code (auto_map, *.py) and pickled weights."""
    folder = Path(folder)
    problems = []
    for name in AUTO_MAP_FILES:
        f = folder / name
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text())
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{f}: not readable JSON ({exc}); fix or re-download the model folder") from None
        if isinstance(cfg, dict) and cfg.get("auto_map"):
            problems.append(f"{name} has auto_map (custom model code, trust_remote_code)")
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if rel.parts and rel.parts[0].startswith("."):
            continue  # .git, .cache: not loaded
        if f.suffix == ".py":
            problems.append(f"{rel} is Python code")
        elif f.suffix.lower() in PICKLE_SUFFIXES and f.is_file():
            problems.append(f"{rel} is pickled weights (torch.load); convert them to .safetensors")
    return problems


def check_hf_folder(folder: Path, trust: bool = False) -> list[str]:
    """Raise UnsafeCheckpoint for a folder carrying code or pickles, unless `trust`; return what trust waived."""
    problems = hf_folder_problems(folder)
    if problems and not trust:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnsafeCheckpoint(f"{folder}: {problems[0]}{more}; {TRUST_HINT}")
    return problems
