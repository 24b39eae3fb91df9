"""torch.export ExportedProgram (.pt2) backend.

A wrong input shape becomes the base class's clear InvalidInputError before the program's guards
see it; anything the guards still reject is translated too, never a bare "Guard failed".
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .torch_common import TorchBackend


class ExportedProgramBackend(TorchBackend):
    name = "exported-program"

    def _load_module(self):
        torch = self._torch
        program, info = self._load_archive(
            torch.export.load, "torch.export program")
        module = program.module()
        if self._dev.type != "cpu":
            module = module.to(self._dev)
        return module, info

    def _forward(self, x):
        try:
            return self._module(x)
        except Exception as exc:
            # torch.export's guards raise "Guard failed: x.size()[1] == 1"-style assertions; say
            # what the program accepts instead
            if "guard" in str(exc).lower() or isinstance(exc, (AssertionError, RuntimeError, ValueError)):
                raise InvalidInputError(
                    f"{self.path.name}: the exported program takes float32 [N,1,28,28] with N >= 1; "
                    f"got {x.dtype} {list(x.shape)}".replace("torch.", "")) from None
            raise
