"""PyTorch eager session over a torch.export archive (.pt2)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from toolkit.backends.base import Session, register_backend
from toolkit.core.artifacts import ArtifactFacts, InputFacts
from toolkit.core.errors import CheckpointError, OptkitError, UnsupportedError


def load_pt2(path: str | Path, trust: bool = False):
    """The one way optkit opens a .pt2: inspect the archive (toolkit.backends.pt2_safety), then load the inspected bytes.

    Refuses with UnsafeCheckpoint anything whose loading could run code (pickled weights, custom objects,
    opaque constants, compiled code, eval'd strings) unless `trust`. Returns the ExportedProgram.
    """
    import torch

    from toolkit.backends.pt2_safety import check_pt2

    path = Path(path)
    try:
        data = path.read_bytes()  # one read: torch loads exactly the bytes that were inspected
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the archive ({exc.strerror or exc}); check the path") from None
    if b"quantized_decomposed" in data or b"torch.ops.torchao" in data:
        # A PT2E-quantized program uses torchao's ops: registered before inspection resolves operator names.
        try:
            import torchao  # noqa: F401
        except ImportError:
            pass  # torch.export.load then fails to resolve the ops: a CheckpointError below
    check_pt2(path, data, trust)
    try:
        program = torch.export.load(io.BytesIO(data))
    except OptkitError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable torch.export archive ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              "save it with torch.export.save(torch.export.export(model, args), path)") from exc
    return program


@register_backend("torch", formats=("torch",), reads={".pt2": "torch"})
class TorchSession(Session):
    @classmethod
    def inspect(cls, path: Path, trust: bool = False) -> ArtifactFacts:
        program = load_pt2(path, trust=trust)
        user_inputs = list(program.graph_signature.user_inputs)
        inputs = []
        for node in program.graph.nodes:
            if node.op != "placeholder" or node.name not in user_inputs:
                continue
            val = node.meta.get("val")
            if val is None or not hasattr(val, "shape"):
                raise UnsupportedError(f"{path}: input '{node.name}' is not a tensor; optkit times tensor inputs only")
            inputs.append(InputFacts(node.name, str(val.dtype).replace("torch.", ""),
                                     tuple(d if isinstance(d, int) else None for d in val.shape)))
        tensors = [t for t in program.state_dict.values() if hasattr(t, "dtype")]
        dtypes = {str(t.dtype).replace("torch.", "") for t in tensors}
        total = sum(t.numel() for t in tensors if t.numel() > 1)
        low = sum(t.numel() for t in tensors if t.numel() > 1 and t.element_size() == 1)
        quant_ops = sum(1 for n in program.graph.nodes if n.op == "call_function"
                        and ("quantize" in str(n.target) or "quantized" in str(n.target)))
        precision = "fp32"
        if low or quant_ops:
            precision = "int8"
        elif "float16" in dtypes:
            precision = "fp16"
        elif "bfloat16" in dtypes:
            precision = "bf16"
        return ArtifactFacts(format="torch", inputs=tuple(inputs), precision=precision, quantized_ops=quant_ops,
                             int8_weight_fraction=low / total if total else 0.0,
                             details={"input_names": user_inputs})

    @classmethod
    def check_available(cls) -> str:
        import torch

        return f"torch {torch.__version__} (CPU eager)"

    def load(self) -> None:
        import torch

        # Inspected before torch opens it; trust only from the in-process flag (Candidate.trust_checkpoint).
        program = load_pt2(self.candidate.path, trust=self.candidate.trust_checkpoint)
        self._prev_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self._module = program.module()
        self._names = list(self.candidate.runtime_options.get("input_names") or [])

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        names = self._names or list(feeds)
        with torch.inference_mode():
            out = self._module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().float().numpy()

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._prev_threads)

    def describe(self) -> dict:
        import torch

        return {"backend": "torch", "runtime": f"torch {torch.__version__} eager", "threads": self.threads}


class ModuleSession(TorchSession):
    """The torch Session over a module already in memory (a state dict built with its factory, which has no
    .pt2 to load): same threads, inference and description as a .pt2 session."""

    def __init__(self, module, input_names: list[str], threads: int):
        from toolkit.core.candidate import Candidate

        super().__init__(Candidate(id="module", path=Path("in-memory"), format="torch", precision="fp32",
                                   backend="torch", lineage=(), runtime_options={"input_names": list(input_names)}),
                         threads)
        self._given = module

    def load(self) -> None:
        import torch

        self._prev_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self._module = self._given
        self._names = list(self.candidate.runtime_options["input_names"])

    def describe(self) -> dict:
        return {**super().describe(), "runtime": super().describe()["runtime"] + " (in-process module)"}
