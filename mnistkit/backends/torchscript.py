"""TorchScript (.ts) backend. TorchScript is deprecated upstream in favour of torch.export."""

from __future__ import annotations

import json
import warnings

from ..artifacts import METADATA_FILE, info_from_metadata
from ..errors import ArtifactError, first_line
from .torch_common import TorchBackend


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def _load_module(self):
        torch = self._torch
        extra = {METADATA_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch.jit.* FutureWarnings: said once at export instead
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(self.path), map_location=self._dev, _extra_files=extra)
        except Exception as exc:
            first = first_line(exc)
            raise ArtifactError(f"{self.path}: not a loadable TorchScript archive ({first[:200]})") from None
        meta = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else None
        return module.eval(), info_from_metadata(self.path, "torchscript", meta)
