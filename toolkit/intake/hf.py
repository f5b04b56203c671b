"""Hugging Face model folders (what `save_pretrained` writes) as checkpoints, offline and safe by default.

A folder holds config.json, the weights (model.safetensors, or sharded safetensors with an index) and the
tokenizer files. optkit loads it with `transformers`, local files only (HF_HUB_OFFLINE=1, no hub), as a
sequence-classification model of the BERT family, wrapped so it takes (input_ids, attention_mask) and
returns logits. Custom code (`auto_map`, `*.py`, trust_remote_code) and pickled `.bin` weights are refused
unless the user passes --trust-checkpoint (toolkit.intake.safety.check_hf_folder).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from toolkit.core.artifacts import file_sha256
from toolkit.core.errors import CheckpointError, UnsafeCheckpoint

# model_type (config.json) -> the family name said in notes. MiniLM checkpoints are model_type "bert".
FAMILIES = {"bert": "BERT", "distilbert": "DistilBERT", "roberta": "RoBERTa", "xlm-roberta": "XLM-RoBERTa",
            "deberta-v2": "DeBERTa-v2/v3", "electra": "ELECTRA", "mpnet": "MPNet"}
# RoBERTa-style models offset positions by padding_idx + 1: 514 position embeddings hold 512 tokens.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spm.model", "sentencepiece.bpe.model", "added_tokens.json")
INPUT_NAMES = ("input_ids", "attention_mask")


def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def read_config(folder: Path) -> dict:
    f = Path(folder) / "config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{f}: not readable JSON ({exc}); re-save the model with save_pretrained") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{f}: expected a JSON object; re-save the model with save_pretrained")
    return cfg


def max_sequence(cfg: dict) -> int | None:
    """The longest sequence the checkpoint's position embeddings hold (None: no absolute positions, e.g. DeBERTa)."""
    n = cfg.get("max_position_embeddings")
    if not isinstance(n, int) or n <= 0:
        return None
    if cfg.get("model_type") == "deberta-v2" and not cfg.get("position_biased_input", False):
        return None  # relative positions only: no table caps the length
    return n - POSITION_OFFSET.get(cfg.get("model_type"), 0)


def class_names(cfg: dict) -> list[str] | None:
    """The model's label names in index order, or None when config.json carries only LABEL_0.. defaults."""
    id2label = cfg.get("id2label") or {}
    try:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (ValueError, TypeError):
        return None
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


def folder_sha256(folder: Path) -> str:
    """One identity for the folder: the sha256 of every file that loading reads (name:sha lines, sorted)."""
    folder = Path(folder)
    lines = [f"{p.relative_to(folder).as_posix()}:{file_sha256(p)}" for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def quiet_transformers():
    """Offline, no progress bars, warnings to the log: the terminal shows optkit's lines only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(folder: str | Path, trust: bool = False, whole_folder: bool = True):
    """The folder's own tokenizer (fast, local files only); a folder without tokenizer files is a one-line error.

    whole_folder=False (a tokenizer folder next to a .pt2 / state dict, or --tokenizer): only what the tokenizer
    loader reads is checked (auto_map = custom code); the user's factory module or other checkpoints sitting in
    the same folder are not the tokenizer's, and are not loaded by it.
    """
    from toolkit.backends.pt2_safety import TRUST_HINT
    from toolkit.intake.safety import check_hf_folder, hf_folder_problems

    folder = Path(folder)
    if whole_folder:
        check_hf_folder(folder, trust)
    elif not trust and (code := [p for p in hf_folder_problems(folder) if "auto_map" in p]):
        raise UnsafeCheckpoint(f"{folder}: {code[0]}; {TRUST_HINT}")
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise CheckpointError(f"{folder}: no tokenizer files (tokenizer.json, vocab.txt, ...); save the tokenizer "
                              "next to the model with tokenizer.save_pretrained(folder)")
    transformers = quiet_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust)
    except Exception as exc:
        raise CheckpointError(f"{folder}: its tokenizer does not load offline ({' '.join(str(exc).split())[:200]}); "
                              "re-save it with tokenizer.save_pretrained(folder)") from exc


def _wrap(model):
    import torch

    class SequenceClassifier(torch.nn.Module):
        """(input_ids, attention_mask) -> logits: the I/O contract every optkit pass and backend uses."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    return SequenceClassifier(model).eval()


def load_folder(folder: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load a sequence-classification folder: {module, sha256, notes, max_sequence, labels, family, trusted}."""
    from toolkit.intake.safety import check_hf_folder

    folder = Path(folder)
    waived = check_hf_folder(folder, trust)
    cfg = read_config(folder)
    model_type = cfg.get("model_type")
    architectures = cfg.get("architectures") or []
    if model_type not in FAMILIES and not trust:
        raise CheckpointError(f"{folder}: model_type '{model_type}' is not a supported encoder "
                              f"({', '.join(sorted(FAMILIES))}); export it to .onnx or .pt2 instead")
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise CheckpointError(f"{folder}: config.json architectures {architectures or '[]'} has no "
                              "...ForSequenceClassification head; fine-tune a classifier and save it with save_pretrained")
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors and not trust:
        raise CheckpointError(f"{folder}: no .safetensors weights; re-save with save_pretrained(folder) "
                              "(safetensors is the default) or pass --trust-checkpoint for pickled .bin weights")
    transformers = quiet_transformers()
    try:
        model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust, use_safetensors=True if not trust else None,
            output_loading_info=True)
    except Exception as exc:
        raise CheckpointError(f"{folder}: transformers could not load it offline "
                              f"({' '.join(str(exc).split())[:200]}); check the folder is complete") from exc
    missing = list(info.get("missing_keys") or [])
    if missing:  # a head (or layers) initialised at random would be measured as if trained
        raise CheckpointError(f"{folder}: weights missing for {', '.join(missing[:3])} (of {len(missing)}); "
                              "the folder's weights do not match its config.json: re-save the fine-tuned model")
    model.eval()
    seq = max_sequence(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    notes = [f"Hugging Face folder: {architectures[0]} ({FAMILIES.get(model_type, model_type)}), "
             f"{n_params / 1e6:.2f}M parameters, {cfg.get('num_labels', len(cfg.get('id2label') or {})) or '?'} labels, "
             + (f"sequence <= {seq} (position embeddings)" if seq else "no absolute position limit"),
             "loaded offline with transformers (local files only)"]
    notes += [f"under --trust-checkpoint: {w}" for w in waived]
    return {"module": _wrap(model), "sha256": folder_sha256(folder), "notes": notes, "max_sequence": seq,
            "labels": class_names(cfg), "family": model_type, "trusted": bool(trust)}


TRANSFORMER_RECIPE = "transformer"


def transformer_reason(checkpoint: str | Path | None) -> str | None:
    """Why this checkpoint is a transformer encoder (then recipes/transformer.yaml fits it), or None.

    A Hugging Face folder of a supported family, a torch checkpoint file (.pt2, state dict) with such a folder's
    config.json next to it (save_pretrained's / Optimum's layout), or an ONNX graph with attention (Softmax between
    MatMuls, or a fused Attention op) and LayerNorm blocks. Read from config.json or the graph only: nothing is loaded.
    """
    if checkpoint is None or str(checkpoint).startswith("builtin:"):
        return None
    path = Path(checkpoint)
    torch_file = path.is_file() and path.suffix.lower() in (".pt2", ".safetensors", ".pt", ".pth")
    if is_hf_folder(path) or (torch_file and is_hf_folder(path.parent)):
        try:
            model_type = read_config(path if path.is_dir() else path.parent).get("model_type")
        except CheckpointError:
            return None  # the loader says what is wrong with it, in its place
        if model_type not in FAMILIES:
            return None
        return (f"{path.name} is a Hugging Face {FAMILIES[model_type]} encoder" if path.is_dir() else
                f"{path.name}'s config.json says a Hugging Face {FAMILIES[model_type]} encoder")
    if path.suffix.lower() == ".onnx" and path.is_file():
        from toolkit.backends.onnx_graph import load_graph, op_counts

        try:
            counts = op_counts(load_graph(path))
        except Exception:  # an unreadable graph is the ONNX loader's error to report, with its fix
            return None
        fused = sum(counts.get(op, 0) for op in ("Attention", "MultiHeadAttention"))
        norms = sum(counts.get(op, 0) for op in ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"))
        if fused or (counts.get("Softmax", 0) >= 1 and counts.get("MatMul", 0) >= 4 and norms >= 2):
            what = f"{fused} fused attention ops" if fused else f"{counts['Softmax']} Softmax attention blocks"
            return f"{path.name}'s ONNX graph has {what} and {norms} LayerNorms (a transformer encoder)"
    return None
