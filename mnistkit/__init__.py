"""mnistkit: train, export, verify and benchmark small PyTorch vision models for edge inference.

`import mnistkit` is cheap and torch-free; `mnistkit.export(...)` imports torch when called.
(The module is `exporter.py`, not `export.py`, so importing it never shadows that function.)
"""

from ._version import __version__

__all__ = ["__version__", "export"]


def export(*args, **kwargs):
    """Export a checkpoint or any nn.Module; see mnistkit.exporter.export_model."""
    from .exporter import export_model

    return export_model(*args, **kwargs)
