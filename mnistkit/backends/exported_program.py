"""torch.export ExportedProgram (.pt2) backend.

A wrong input shape becomes the base class's clear InvalidInputError before the program's guards
see it; anything the guards still reject is translated too, never a bare "Guard failed".
"""

from __future__ import annotations

import json
import warnings

from ..artifacts import METADATA_FILE, info_from_metadata
from ..errors import ArtifactError, InvalidInputError, first_line
from .torch_common import TorchBackend


class ExportedProgramBackend(TorchBackend):
    name = "exported-program"

    def _load_module(self):
        torch = self._torch
        extra = {METADATA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.load(str(self.path), extra_files=extra)
        except Exception as exc:
            first = first_line(exc)
            raise ArtifactError(f"{self.path}: not a loadable torch.export program ({first[:200]})") from None
        module = program.module()
        if self._dev.type != "cpu":
            module = module.to(self._dev)
        meta = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else None
        return module, info_from_metadata(self.path, "exported-program", meta)

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
