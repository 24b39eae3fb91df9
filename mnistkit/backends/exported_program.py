"""torch.export ExportedProgram (.pt2) backend.

A wrong input shape becomes the base class's clear InvalidInputError before the program's guards
see it; anything the guards still reject is translated too, never a bare "Guard failed".
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .torch_common import TorchBackend


def load_program(path: str):
    """The archive's program, read the way torch.export.load reads a .pt2 (torch.export.pt2_archive's
    load_pt2) but without its fallback: when that reader fails, torch.export.load retries the file as an
    older layout whose payloads it unpickles without weights_only. mnistkit never takes that path."""
    try:
        from torch.export.pt2_archive._package import load_pt2
    except ImportError:  # a torch that moved it: torch.export.load, still under no_unsafe_loads
        import torch

        return torch.export.load(path)
    contents = load_pt2(path)
    if "model" not in contents.exported_programs:
        raise ValueError("the archive holds no program named 'model'")
    return contents.exported_programs["model"]


class ExportedProgramBackend(TorchBackend):
    name = "exported-program"

    def _load_module(self):
        program, info = self._load_archive(load_program, "torch.export program")
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
