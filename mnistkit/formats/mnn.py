"""MNN (Alibaba's mobile inference engine): `model.mnn`, converted from the exported float ONNX by MNN's own
converter; imported when the format is written.

The converter is called through its extension module (`_tools.mnnconvert`), never through `MNN.tools`: the
package's Python tool wrappers import `MNN.tools.utils.log`, which runs `pip install aliyun-log-python-sdk` when
that package is missing (into whatever `pip` is first on PATH) and then sends the machine id, the arguments and
the model's sizes to Alibaba's log service after each conversion (measured, MNN 3.6.1). The extension module
converts and sends nothing.

mnistkit's metadata rides in the model's own `bizCode` string (the converter's `--bizCode`), read back from the
flatbuffer by backends/mnn.py without loading the model. The ONNX file is converted without its metadata_props:
MNN copies them into the model's `extraInfo`, a nested buffer MNN parses without checks (the gate refuses one).
The batch axis stays dynamic (MNN resizes per call).
`mnn-int8` is the converter's weight quantization (`--weightQuantBits 8`: int8 weights, float compute), judged
by the accuracy gate like every int8 format; MNN's full-integer tool (mnnquant) wants a calibration folder
of image files and a JSON config, and is not used.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ExportError, first_line
from .derived import base_file
from .spec import FormatSpec, WriteContext, common_meta, io_entries


def write_mnn(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """The float ONNX converted by MNN's converter (fp32; int8 weights for a quantized row)."""
    from ..capture import captured_output

    import tempfile

    import onnx

    meta = common_meta(src, fmt)
    plain = onnx.load(str(base_file(src, fmt, ctx)))
    del plain.metadata_props[:]  # MNN copies them into extraInfo, a buffer it parses unchecked (gate/mnn.py)
    work = tempfile.TemporaryDirectory(prefix="mnistkit-mnn-")
    onnx_path = Path(work.name) / "model.onnx"
    onnx.save(plain, str(onnx_path))
    try:
        with captured_output():  # its start-up line about CPU features
            import _tools  # MNN's converter (the `MNN` wheel's extension module)
    except ImportError:
        raise ExportError(f"{fmt.name}: needs MNN, which is not installed; pip install 'mnistkit[mnn]'") from None
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(tmp),
            "--bizCode", json.dumps(meta)]
    if fmt.quantized:
        argv += ["--weightQuantBits", "8"]
    with captured_output() as cap, work:
        try:
            ok = _tools.mnnconvert(argv)
        except Exception as exc:
            raise ExportError(f"{fmt.name}: MNN's converter failed: {first_line(exc, 200)}") from None
    if not ok or not tmp.is_file() or tmp.stat().st_size == 0:
        said = " | ".join(cap.text.strip().splitlines()[-2:])
        raise ExportError(f"{fmt.name}: MNN's converter could not convert the ONNX model"
                          + (f": {said[:200]}" if said else ""))
    from ..environment import distribution_version

    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "converter": f"MNN {distribution_version('MNN') or '?'}",
            "weights": "int8 (weight quantization, float compute)" if fmt.quantized else "fp32"}
