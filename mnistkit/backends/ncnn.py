"""ncnn (Tencent): the ncnn Python bindings running a text param graph and its .bin weights, on the CPU.

Imports ncnn and numpy: no torch. The graph has no batch axis (formats/ncnn.py): each image runs in its own
extractor (`create_extractor`, `input`, `extract`), which is how ncnn's own apps run; a batch runs image by
image into one output array. mnistkit's metadata is the companion `model.ncnn.json`, checked against the
sha256 of the param and the .bin before it is believed.

Choices, measured (ncnn 1.0.20261020, 2-vCPU EPYC):
- fp32 pinned: `use_fp16_packed/storage/arithmetic` and `use_bf16_storage` off, Vulkan off. ncnn's defaults
  store activations in fp16 where the CPU has F16C (every x86-64 CPU mnistkit meets): the MLP moved by 3e-4
  against PyTorch with them on, 2.4e-7 off.
- `num_threads` = --threads, else ONE (DEFAULT_THREADS), unlike the other runtimes: ncnn parallelises inside each
  layer of one image, and for these models a second thread costs more than it gives even on an idle machine (the
  CNN: 82 us per image on one thread, 143 us on two; the MLP: 27 against 31 us). `optimize` still times both.
- `openmp_blocktime` 0: ncnn's default keeps its OpenMP workers spinning 20 ms after every parallel region, which
  on a shared machine takes the cores from everything else (a validation beside other work ran 4x slower).
- One Net, one extractor per image: an extractor is ncnn's unit of work; the Net is shared read-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import MAX_METADATA_BYTES, ModelInfo, check_model, info_from_metadata
from ..errors import ArtifactError, first_line
from ..fileio import sha256_file
from ..pixels import FLOAT_FORM
from .base import Backend

DEFAULT_THREADS = 1  # without --threads (the module's notes)
METADATA_FORMAT = "mnistkit-ncnn-metadata"  # the companion JSON's tag (formats/ncnn.py writes it)


def metadata_path(param) -> Path:
    """The metadata file beside a param file (model.ncnn.param -> model.ncnn.json)."""
    return Path(param).with_suffix(".json")


def read_metadata(path) -> dict | None:
    """mnistkit's metadata of an ncnn param file: the `model.ncnn.json` beside it, when it is mnistkit's and
    names these exact param and .bin files (by sha256); None when there is no such file or it is another
    program's JSON. Metadata that names other files is refused: it would describe other weights."""
    path = Path(path)
    side = metadata_path(path)
    if not side.is_file():
        return None
    if side.stat().st_size > MAX_METADATA_BYTES:
        raise ArtifactError(f"{side}: metadata over 1 MiB")
    try:
        record = json.loads(side.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{side}: unreadable metadata ({first_line(exc, 120)})") from None
    if not isinstance(record, dict) or record.get("format") != METADATA_FORMAT:
        return None
    weights = path.with_suffix(".bin")
    if (record.get("param_sha256") != sha256_file(path)
            or not weights.is_file() or record.get("bin_sha256") != sha256_file(weights)):
        raise ArtifactError(f"{side}: describes another {path.name} or {weights.name} (sha256 differs); "
                            "re-export, or remove the stale metadata file")
    meta = record.get("mnistkit")
    if not isinstance(meta, dict):
        raise ArtifactError(f"{side}: its mnistkit entry is not a JSON object")
    return meta


def import_ncnn():
    import ncnn

    return ncnn


def open_net(path, threads: int | None, defaults: bool = False):
    """An ncnn Net with mnistkit's fp32 options and `threads` (with `defaults`: ncnn's own options, fp16 storage
    and its thread count included), param and weights loaded (ArtifactError when not)."""
    ncnn = import_ncnn()

    net = ncnn.Net()
    if not defaults:
        opt = net.opt
        opt.num_threads = int(threads)
        opt.openmp_blocktime = 0
        opt.use_vulkan_compute = False
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_bf16_storage = False
    weights = Path(path).with_suffix(".bin")
    if net.load_param(str(path)) != 0:
        raise ArtifactError(f"{path}: ncnn cannot parse the param file")
    if not weights.is_file():
        raise ArtifactError(f"{path}: its weights {weights.name} are not beside it")
    if net.load_model(str(weights)) != 0:
        raise ArtifactError(f"{path}: ncnn cannot read the weights in {weights.name}")
    return net


class NcnnBackend(Backend):
    name = "ncnn"
    runtime = "ncnn"

    def _load(self) -> ModelInfo:
        check_model(self.path)
        self.threads = self.threads or DEFAULT_THREADS
        meta = read_metadata(self.path)
        self._net = net = open_net(self.path, self.threads)
        inputs, outputs = list(net.input_names()), list(net.output_names())
        if len(inputs) != 1 or not outputs:
            raise ArtifactError(f"{self.path}: has {len(inputs)} inputs and {len(outputs)} outputs; expected one "
                                "image input and a scores output")
        info = info_from_metadata(self.path, "ncnn", meta)
        info.input_form = FLOAT_FORM  # ncnn takes float Mats; the app formats are ONNX and LiteRT files
        info.input_name, info.output_name = inputs[0], outputs[0]
        self._in, self._out = inputs[0], outputs[0]
        self._classes = info.num_classes if info.described else None
        ncnn = import_ncnn()
        self._Mat = ncnn.Mat
        self.provider = f"ncnn {getattr(ncnn, '__version__', '?')} CPU fp32"
        return info

    def load(self):
        super().load()
        self.run = self.fast_run(None, self.run_failed, self._call_for)  # the checks in one step (Backend.fast_run)
        return self

    def _call_for(self, batch: np.ndarray):
        """The call for one batch shape, found once by fast_run: batch 1 in ncnn's fewest steps over bound names
        (one extractor, the input, the scores, checked against the shape they must have); others: `_infer`."""
        if len(batch) != 1:
            return self._infer
        Mat, extractor, name_in, name_out = self._Mat, self._net.create_extractor, self._in, self._out
        classes, array, f32, scores = self._classes, np.array, np.float32, self._scores

        def one(x):
            ex = extractor()
            ex.input(name_in, Mat(x[0]))
            rc, mat = ex.extract(name_out)
            out = array(mat, f32)  # a copy: ncnn's Mat is its own
            if rc != 0 or out.ndim != 1 or classes is not None and len(out) != classes:
                return scores(rc, out, 1)
            return out[None]

        return one

    def _scores(self, rc: int, out: np.ndarray, n: int) -> np.ndarray:
        """An extraction's scores as [n, C] after its checks: ncnn's return code, the count the metadata names."""
        if rc != 0:
            raise ArtifactError(f"{self.path}: ncnn failed extracting {self._out!r} (code {rc})")
        out = out.reshape(n, -1)
        if self._classes is not None and out.shape[1] != self._classes:
            raise ArtifactError(f"{self.path}: gives {out.shape[1]} scores per image; its metadata names "
                                f"{self._classes} labels")
        return out

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Image by image into one output array, in as few steps per image as the loop allows (batch 1 takes
        `_call_for`'s path from run)."""
        Mat, extractor, name_in, name_out, asarray = self._Mat, self._net.create_extractor, self._in, self._out, \
            np.asarray
        out = size = None
        for i in range(len(x)):
            ex = extractor()
            ex.input(name_in, Mat(x[i]))
            rc, mat = ex.extract(name_out)
            scores = asarray(mat)
            if rc != 0 or scores.ndim != 1 or scores.size != size:  # the first image, or one that is not like it
                scores = self._scores(rc, scores, 1)[0]
                if out is None:
                    out, size = np.empty((len(x), scores.size), np.float32), scores.size
                elif scores.size != size:
                    raise ArtifactError(f"{self.path}: image {i} gave {scores.size} scores, the first {size}")
            out[i] = scores
        return out

    def _close(self) -> None:
        self._net = None


class BareNcnn:
    """ncnn's own loop as an app writes it, with mnistkit's options: one extractor per image, `input`,
    `extract`, the scores copied out. What it leaves out is what the backend adds: the input checks and the
    output array and its shape checks."""

    def __init__(self, path, threads: int | None, defaults: bool = False):
        check_model(path)
        self.threads = None if defaults else threads or DEFAULT_THREADS
        self.net = open_net(path, self.threads, defaults)
        self.input, self.output = self.net.input_names()[0], self.net.output_names()[0]

    def call_for(self, x: np.ndarray) -> Callable:
        Mat, extractor, name_in, name_out = import_ncnn().Mat, self.net.create_extractor, self.input, self.output
        images = [np.ascontiguousarray(image) for image in x]

        def call():
            outs = []
            for image in images:
                ex = extractor()
                ex.input(name_in, Mat(image))
                outs.append(np.array(ex.extract(name_out)[1]))
            return outs

        return call


PROBE = Path(__file__).resolve().parent.parent / "assets" / "probe.ncnn.param"  # y = 2x + 1, float32 [4]


def self_check() -> str:
    """doctor's line: ncnn really runs a graph with mnistkit's options (assets/probe.ncnn.param + .bin, y = 2x + 1;
    scripts/make_probe_ncnn.py)."""
    net = open_net(PROBE, 1)
    ex = net.create_extractor()
    x = np.arange(4, dtype=np.float32)
    ex.input(net.input_names()[0], import_ncnn().Mat(x))
    out = np.array(ex.extract(net.output_names()[0])[1]).reshape(-1)
    if out.tolist() != [1.0, 3.0, 5.0, 7.0]:
        raise RuntimeError(f"y = 2x + 1 gave {out.tolist()}")
    return "runs a graph (fp32, one extractor per image)"
