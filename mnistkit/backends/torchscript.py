"""TorchScript (.ts) backend. TorchScript is deprecated upstream in favour of torch.export."""

from __future__ import annotations

from .torch_common import TorchBackend


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def _load_module(self):
        torch = self._torch
        module, info = self._load_archive(
            lambda path: torch.jit.load(path, map_location=self._dev),
            "TorchScript archive")
        return module.eval(), info
