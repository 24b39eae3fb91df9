"""PyTorch eager on a mnistkit checkpoint: the reference every other runtime is compared with."""

from __future__ import annotations

from ..artifacts import info_from_metadata
from .torch_common import TorchBackend


class PyTorchBackend(TorchBackend):
    name = "pytorch"

    def _load_module(self):
        """Option `source`: a mnistkit.source.Source (a user's state_dict + class) instead of a checkpoint."""
        source = self.options.get("source")
        if source is not None:
            import copy

            model = source.module if self._dev.type == "cpu" else copy.deepcopy(source.module).to(self._dev)
            return model.eval(), info_from_metadata(self.path, "checkpoint", source.meta)
        from ..model import load_checkpoint

        ckpt = load_checkpoint(self.path)
        model = ckpt.build().to(self._dev).eval()
        info = info_from_metadata(self.path, "checkpoint", ckpt.meta)
        return model, info
