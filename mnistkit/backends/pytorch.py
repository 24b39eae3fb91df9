"""PyTorch eager on a mnistkit checkpoint: the reference every other runtime is compared with."""

from __future__ import annotations

from ..artifacts import info_from_metadata
from .torch_common import TorchBackend


class PyTorchBackend(TorchBackend):
    name = "pytorch"

    def _load_module(self):
        from ..model import load_checkpoint

        ckpt = load_checkpoint(self.path)
        model = ckpt.build().to(self._dev).eval()
        info = info_from_metadata(self.path, "checkpoint", ckpt.meta)
        return model, info
