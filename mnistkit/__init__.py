"""mnistkit: train, export, verify and benchmark small PyTorch vision models for edge inference.

`import mnistkit` is cheap and torch-free; `mnistkit.export(...)` imports torch when called.
(The module is `exporter.py`, not `export.py`, so importing it never shadows that function.)
"""

import os

from ._version import __version__
from .errors import AssumptionWarning
from .modelspec import ModelSpec

# ONNX Runtime 1.31's Linux builds queue usage events (Microsoft's 1DS) in ~/.cache/Microsoft/DeveloperTools/
# .onnxruntime/ (a device id and an upload queue) at `import onnxruntime`, in Python and in onnxruntime-node,
# unless ORT_DISABLE_TELEMETRY is set before the library loads (measured: onnxruntime-gpu 1.31). mnistkit sets
# it here, before any of its modules imports onnxruntime, and its Node and Ray processes inherit it; a value the
# user set is kept. (OpenVINO's telemetry is turned off where mnistkit imports it: backends/openvino.py.)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__all__ = ["__version__", "AssumptionWarning", "ModelSpec", "export", "load"]


def export(source, formats=None, out_dir=None, spec: ModelSpec | None = None, **options):
    """Export a checkpoint, a state_dict or any nn.Module to `formats`; see mnistkit.exporter.export_model.

    The model's description is `spec` (a ModelSpec), or its fields as keywords (`model_class=`, `model_args=`,
    `labels=`, `mean=`, `std=`, `input_shape=`, `recipe=`, `dataset=`; one given beside `spec` wins over its
    field); the other keywords (`opset`, `validate`, `data_dir`, `max_accuracy_drop`, `log`, ...) go to export_model.
    """
    from .exporter import export_model
    from .formats import DEFAULT_FORMAT

    given, options = ModelSpec.split(options)
    if given is not None:
        spec = given.over(spec) if spec is not None else given
    return export_model(source, formats if formats is not None else (DEFAULT_FORMAT,), out_dir, spec, **options)


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
