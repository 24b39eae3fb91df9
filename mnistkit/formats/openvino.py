"""OpenVINO IR: `model.xml` (the graph) + `model.bin` (the weights), converted from the exported float ONNX
with `openvino.convert_model` and written with `openvino.save_model`; imported when the format is written.

The IR is what OpenVINO's own tools ship (benchmark_app, the model server, NPUs' compilers): reading it
skips the ONNX frontend (load ~2x faster, measured in the backend's notes). Weights stay fp32
(`compress_to_fp16=False`): the plugin's precision is pinned to f32 by the backend, and fp16-compressed
weights would move the logits by ~1e-3 on their own.

mnistkit's metadata rides in the IR's own rt_info, as one entry `mnistkit` holding the JSON (OpenVINO keeps
the ONNX file's metadata_props too, under rt_info/framework, with the ONNX format's name; the `mnistkit`
entry is the one read). The two files are one artifact: the manifest lists model.bin as the companion of
model.xml, with its own sha256, and both are checked before either is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ExportError, first_line
from .derived import base_file
from .spec import FormatSpec, WriteContext, common_meta, io_entries

METADATA_KEY = "mnistkit"  # the rt_info entry (backends/openvino.py reads it)


def write_openvino_ir(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """The float ONNX converted to IR (fp32 weights), mnistkit's metadata in rt_info."""
    from ..capture import captured_output

    meta = common_meta(src, fmt)
    onnx_path = base_file(src, fmt, ctx)
    with captured_output() as cap:
        try:
            from ..backends.openvino import import_openvino

            ov = import_openvino()
        except ImportError:
            raise ExportError(f"{fmt.name}: needs openvino, which is not installed; pip install 'mnistkit[openvino]'") \
                from None
        try:
            model = ov.convert_model(str(onnx_path))
            model.set_rt_info(json.dumps(meta), METADATA_KEY)
            ov.save_model(model, str(tmp), compress_to_fp16=False)
        except Exception as exc:
            said = cap.text.strip().splitlines()[-1:]
            raise ExportError(f"{fmt.name}: OpenVINO could not convert the ONNX model: {first_line(exc, 200)}"
                              + (f" [{said[0][:160]}]" if said else "")) from None
    if not tmp.with_suffix(".bin").is_file() or fmt.companions != (tmp.with_suffix(".bin").name,):
        raise ExportError(f"{fmt.name}: OpenVINO wrote no {tmp.with_suffix('.bin').name} beside {tmp.name}")
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "converter": f"openvino {ov.__version__.split('-')[0]}",
            "weights": "fp32"}
