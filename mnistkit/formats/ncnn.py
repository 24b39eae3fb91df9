"""ncnn (Tencent's mobile inference library): `model.ncnn.param` (the graph, text) + `model.ncnn.bin` (the
weights), converted from PyTorch by pnnx; imported when the format is written.

pnnx takes a TorchScript trace and writes several side files beside its input (its own .pnnx.param/.bin, a
.pnnx.py and .pnnx.onnx, an _ncnn.py): it runs here as its executable, in a private temporary folder, with every
output named there, and only the two ncnn files are kept. pnnx's Python `export()` is not used: it imports the
.pnnx.py it generates, which is running generated code for a conversion that needs none (and its code
generator wrote invalid Python for an nn.Sequential's numbered children, measured with pnnx 20261020).

Weights stay fp32 (`fp16=0`; pnnx's default stores fp16), and the backend turns ncnn's fp16/bf16 storage and
arithmetic off: the parity contract is fp32 (with them on, the MLP moved by 3e-4; off, 2.4e-7, measured).

What the toolchain cannot do, and how it is handled:
- No batch axis: an ncnn graph runs one image per extractor (the trace is taken at batch 1); the backend runs
  a batch image by image, so every batch size works and the batch check proves it.
- No metadata field: neither the param text nor the .bin holds anything but the graph. mnistkit's metadata is
  a third file, `model.ncnn.json`, listed beside the .bin as the artifact's companion (with its own sha256 in
  the manifest) and holding the sha256 of the two ncnn files, so that metadata never describes other weights.
- No int8 here: ncnn's int8 tools (ncnn2table, ncnn2int8) are not in the ncnn or pnnx wheels (checked,
  ncnn 1.0.20261020 and pnnx 20261020), so there is no ncnn-int8 row.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from ..backends.ncnn import METADATA_FORMAT, metadata_path
from ..errors import ExportError, first_line
from ..fileio import sha256_file
from .spec import FormatSpec, WriteContext, common_meta, io_entries, source_geometry

PNNX_TIMEOUT = 600  # seconds; resnet18 converts in ~3 s


def write_ncnn(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """The source traced at batch 1, converted by pnnx (fp32 weights); metadata in the companion JSON."""
    import torch

    from ..capture import captured_output

    try:
        import pnnx
    except ImportError:
        raise ExportError(f"{fmt.name}: needs pnnx, which is not installed; pip install 'mnistkit[edge]'") from None
    meta = common_meta(src, fmt)
    shape = [1, *source_geometry(src).float_tail]
    with tempfile.TemporaryDirectory(prefix="mnistkit-pnnx-") as work:
        work = Path(work)
        traced = work / "model.pt"
        with captured_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with torch.no_grad():
                    torch.jit.trace(src.module, torch.zeros(shape), check_trace=False).save(str(traced))
            except Exception as exc:
                raise ExportError(f"{fmt.name}: tracing for pnnx failed: {exc.__class__.__name__}: "
                                  f"{first_line(exc, 200)}") from None
        outputs = {"pnnxparam": "p.pnnx.param", "pnnxbin": "p.pnnx.bin", "pnnxpy": "p_pnnx.py",
                   "pnnxonnx": "p.pnnx.onnx", "ncnnparam": "m.ncnn.param", "ncnnbin": "m.ncnn.bin",
                   "ncnnpy": "m_ncnn.py"}
        command = [pnnx.EXEC_PATH, str(traced), f"inputshape=[{','.join(map(str, shape))}]f32", "device=cpu",
                   "fp16=0", *(f"{k}={work / v}" for k, v in outputs.items())]
        try:
            done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ExportError(f"{fmt.name}: pnnx did not finish in {PNNX_TIMEOUT} s") from None
        param, weights = work / outputs["ncnnparam"], work / outputs["ncnnbin"]
        if done.returncode != 0 or not param.is_file() or not weights.is_file():
            said = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            raise ExportError(f"{fmt.name}: pnnx could not convert the model (exit {done.returncode})"
                              + (f": {said[:200]}" if said else ""))
        blobs = _io_blobs(param)
        meta["input"] = {**meta["input"], "name": blobs[0]}
        shutil.copyfile(param, tmp)
        shutil.copyfile(weights, tmp.with_suffix(".bin"))
    record = {"format": METADATA_FORMAT, "param_sha256": sha256_file(tmp),
              "bin_sha256": sha256_file(tmp.with_suffix(".bin")), "mnistkit": meta}
    metadata_path(tmp).write_text(json.dumps(record))
    if fmt.companions != (tmp.with_suffix(".bin").name, metadata_path(tmp).name):
        raise ExportError(f"{fmt.name}: the format row's companions do not name {tmp.with_suffix('.bin').name} "
                          f"and {metadata_path(tmp).name}")
    inputs, outputs_ = io_entries(meta)
    outputs_[0]["name"] = blobs[1]  # ncnn names blobs in0/out0: what an app passes to input() and extract()
    return {"inputs": inputs, "outputs": outputs_, "converter": f"pnnx {_version('pnnx')}", "weights": "fp32",
            "batch": "one image per extractor (ncnn graphs have no batch axis); any batch size, image by image"}


def _io_blobs(param: Path) -> tuple[str, str]:
    """(input blob, output blob) of a pnnx-written param file: the Input layer's top and the last layer's top."""
    lines = [ln.split() for ln in param.read_text().splitlines()[2:] if ln.strip()]
    inputs = [ln[4 + int(ln[2])] for ln in lines if ln[0] == "Input"]
    last = lines[-1]
    return (inputs[0] if inputs else "in0"), last[4 + int(last[2]) + int(last[3]) - 1]


def _version(dist: str) -> str:
    from ..environment import distribution_version

    return distribution_version(dist) or "?"
