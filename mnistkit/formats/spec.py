"""What one format row says, and what writers share. Torch-free."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._version import __version__
from ..compare import Tolerance
from ..pixels import DIGITS, FLOAT_FORM, UINT8_FORM, Geometry

METADATA_FILE = "mnistkit.json"  # the metadata member inside TorchScript / .pt2 archives (extra/)
DEFAULT_ACCURACY_BUDGET = 0.003  # --max-accuracy-drop: 0.3 points of accuracy
EXAMPLE_BATCH = 2  # >= 2: a batch-1 example can bake the batch size into the graph


@dataclass(frozen=True)
class BatchCheck:
    """How export validation proves a format's dynamic batch axis: the same images run in calls of
    each size must give the answers of the same artifact run in chunks of 1000.

    `atol`: logits must match within it (None: not checked); `min_agreement`: the fraction of top-1
    answers that must stay the same (0: not checked beyond atol)."""

    sizes: tuple[int, ...] = (1, 3, 64, 1000)
    atol: float | None = 1e-4
    min_agreement: float = 0.0
    why: str = ""
    images: int = 64  # each size over at least this many images: one image at batch 1 made dynamic
    # int8's agreement a coin flip on a near-tie (seen on a weakly trained CNN)


@dataclass(frozen=True)
class FormatSpec:
    """One row of the format table: everything the exporter, the validators, verify, bench, the CLI,
    the README and the tests know about a format.

    `tolerance` maps each device to what the format must meet against the PyTorch reference (every
    device of every backend that opens `kind` must be present: a meta-test checks it). A tolerance
    with `max_accuracy_drop` makes the format accuracy-gated: export replaces the budget with the
    user's --max-accuracy-drop and refuses the artifact without labelled test images.
    """

    name: str
    file: str  # file name inside the export folder (for `checkpoint`, the default name)
    kind: str  # the file kind it is detected as (see formats.KINDS)
    description: str
    tolerance: dict[str, Tolerance]
    writer: str | None = None  # "module:function", writer(src, fmt, tmp, ctx) -> manifest facts; None: not exported
    input_form: str = FLOAT_FORM  # what the artifact takes (pixels.FLOAT_FORM / UINT8_FORM)
    base: str | None = None  # a derived format is made from this float format's file
    batch_check: BatchCheck | None = None  # how validation proves its batch axis (None: not checked)
    notice: str | None = None  # said once when the format is exported
    companions: tuple[str, ...] = ()  # files the writer puts beside `file` (OpenVINO IR's weights, model.bin)
    precision: str = "fp32"  # what the artifact computes in: "fp32", "fp16" or "int8" (PRECISIONS)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the format: `file` (what backends open) and its companions."""
        return (self.file, *self.companions)

    @property
    def app(self) -> bool:
        """App-ready: uint8 pixels in, normalization inside, logits + probabilities out."""
        return self.input_form == UINT8_FORM

    @property
    def exportable(self) -> bool:
        return self.writer is not None

    @property
    def quantized(self) -> bool:
        """int8: its logits move (~1), so top-1 and accuracy judge it, and optimize weighs it as the less simple."""
        return self.precision == "int8"

    def write(self, src, tmp: Path, ctx: "WriteContext") -> dict:
        """Write this format of `src` (a source.Source) to `tmp`; return the manifest's facts. The writer
        is imported here, on first use: the table itself imports no toolchain. SIGINT/SIGTERM are held
        while it runs and delivered when it ends (signals.signals_held: native toolchains crash when a
        Python exception is raised inside them)."""
        from ..signals import signals_held

        with signals_held():
            return resolve(self.writer)(src, self, tmp, ctx)

    @property
    def gated(self) -> bool:
        """Judged by accuracy on the full test split (quantized and half-precision formats)."""
        return any(t.max_accuracy_drop is not None for t in self.tolerance.values())


@dataclass(frozen=True)
class KindSpec:
    """A file kind: how its bytes are recognised and which backend opens it when none is named."""

    name: str
    default_backend: str
    sniff: Callable[[bytes, list[str] | None], bool]  # (first bytes, zip member names or None) -> is it
    description: str
    flops: str | None = None  # "module:function", flops(path) -> multiply-add FLOP per image or None
    metadata: str | None = None  # "module:function", metadata(path) -> mnistkit's metadata dict or None
    gate: str | None = None  # "module:function", gate(path, label) -> None or raises ArtifactError (see gate/)
    details: str | None = None  # "module:function", details(path) -> what `inspect` says beyond the metadata


@dataclass
class WriteContext:
    """What writers share during one export."""

    opset: int
    log: Callable[[str], None]
    staging: Path
    images: np.ndarray | None = None  # validation images (uint8) and their labels, when validating
    labels: np.ndarray | None = None
    data_desc: str = ""
    data_dir: object = None
    budget: float = DEFAULT_ACCURACY_BUDGET
    shared: dict = field(default_factory=dict, repr=False)  # what writers compute once per export



def source_geometry(src) -> Geometry:
    """The images a source's model takes (its metadata's float input record; MNIST's when it has none)."""
    shape = (src.meta.get("input") or {}).get("shape")
    return Geometry(*shape[1:]) if shape else DIGITS


def normalization_of(meta: dict):
    """(mean, std) of an artifact's metadata: floats, or tuples with one value per channel."""
    one = lambda v: float(v[0]) if len(set(v)) == 1 else tuple(float(x) for x in v)  # noqa: E731
    norm = meta["normalization"]
    return one(norm["mean"]), one(norm["std"])


def app_input(geometry: Geometry) -> dict:
    """The app-ready input record: uint8 pixels [N,H,W] (gray) or [N,H,W,C] (colour, images' own layout)."""
    return {"name": "pixels", "dtype": "uint8", "shape": ["N", *geometry.pixel_tail],
            "layout": "NHW" if geometry.channels == 1 else "NHWC", "range": [0, 255]}


def common_meta(src, fmt: FormatSpec) -> dict:
    """The metadata every artifact of `src` (a source.Source) records about itself."""
    geometry = source_geometry(src)
    return {
        "mnistkit_version": __version__,
        "format": fmt.name,
        "dataset": src.meta.get("dataset"),
        "labels": src.meta["labels"],
        "normalization": src.meta["normalization"],
        "normalization_source": src.meta.get("normalization_source"),
        "preprocess": src.meta["preprocess"],
        "input": app_input(geometry) if fmt.app else {
            "name": "input", "dtype": "float32", "shape": ["N", *geometry.float_tail], "layout": "NCHW",
            "normalized": "(pixels / 255 - mean) / std"},
        "transforms": src.meta.get("transforms"),
        "outputs": ["logits", "probabilities"] if fmt.app else ["logits"],
        "source_sha256": src.description.get("sha256"),
        "source": src.description,
        "arch": src.meta.get("arch"),
        "test_accuracy": src.meta.get("test_accuracy"),
    }


def io_entries(meta: dict) -> tuple[list[dict], list[dict]]:
    """The manifest's inputs and outputs entries for an artifact's metadata."""
    inp = meta["input"]
    inputs = [{"name": inp["name"], "dtype": inp["dtype"], "shape": inp["shape"]}]
    num_classes = len(meta["labels"])
    outputs = [{"name": n, "dtype": "float32", "shape": ["N", num_classes]} for n in meta["outputs"]]
    return inputs, outputs


def resolve(target: str):
    """The object a "module:name" string names, imported on first use (format writers, backends)."""
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


# ONNX metadata_props: flat string -> string. Non-string values are JSON-encoded.


def to_onnx_props(meta: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if v is not None}


def from_onnx_props(props: dict[str, str]) -> dict:
    out = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out
