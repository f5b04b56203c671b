"""PyTorch eager session over a torch.export archive (.pt2)."""
from __future__ import annotations

import numpy as np

from toolkit.backends.base import Session, register_backend


@register_backend("torch")
class TorchSession(Session):
    @classmethod
    def check_available(cls) -> str:
        import torch

        return f"torch {torch.__version__} (CPU eager)"

    def load(self) -> None:
        import torch

        from toolkit.intake.checkpoints import load_pt2

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
