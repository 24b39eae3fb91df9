"""mnistkit: train, export, verify and benchmark small PyTorch vision models for edge inference.

`import mnistkit` is cheap and torch-free; `mnistkit.export(...)` imports torch when called.
(The module is `exporter.py`, not `export.py`, so importing it never shadows that function.)
"""

import os

from ._version import __version__
from .errors import AssumptionWarning

# ONNX Runtime 1.31's Linux builds queue usage events (Microsoft's 1DS) in ~/.cache/Microsoft/DeveloperTools/
# .onnxruntime/ (a device id and an upload queue) at `import onnxruntime`, in Python and in onnxruntime-node,
# unless ORT_DISABLE_TELEMETRY is set before the library loads (measured: onnxruntime-gpu 1.31). mnistkit sets
# it here, before any of its modules imports onnxruntime, and its Node and Ray processes inherit it; a value the
# user set is kept. (OpenVINO's telemetry is turned off where mnistkit imports it: backends/openvino.py.)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__all__ = ["__version__", "AssumptionWarning", "export", "load"]


def export(*args, **kwargs):
    """Export a checkpoint or any nn.Module; see mnistkit.exporter.export_model."""
    from .exporter import export_model

    return export_model(*args, **kwargs)


def load(path, batch_size: int | None = None, backend: str | None = None, device: str = "cpu",
         threads: int | None = None, **options):
    """A loaded backend (`run(batch)` -> logits, `close()`, usable with `with`) for a model file or a deploy folder.

    A deploy folder (`mnistkit optimize`) gives the configuration it chose for the batch size nearest
    `batch_size` (its largest when None), with the runtime, threads and options recorded in deploy.json:

        with mnistkit.load("deploy/", batch_size=64) as model:
            logits = model.run(pixels)          # uint8 [N,28,28] or normalized float32 [N,1,28,28]

    A model file opens on `backend` (default: by its kind) on `device` with `threads`.
    """
    from .deploy import is_deploy_folder, load_deployment

    if is_deploy_folder(path):
        if backend is not None or device != "cpu" or threads is not None:
            from .errors import InvalidInputError

            raise InvalidInputError(f"{path}: a deploy folder runs the configuration it records; backend, device "
                                    "and threads go with a model file")
        return load_deployment(path, batch_size, **options)
    from .backends import create_backend

    return create_backend(path, backend, device, threads=threads, **options).load()
